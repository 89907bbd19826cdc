"""stage=rm through the CLI from the shared SFT run: a one-label classifier that trains, reports and reloads."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignment.data.encode import encode_preference
from tests.conftest import FAST, read_metrics, run_cli
from tests.stages.test_dpo import STEPS, changed_fraction

pytestmark = pytest.mark.slow


def test_reward_model_trains_from_sft_and_saves_a_standard_classifier(sft_run, tmp_path):
    run_cli("stage=rm", f"model.path={sft_run / 'model'}", f"output_dir={tmp_path}", *STEPS, *FAST)
    out = tmp_path / "rm"
    metrics = read_metrics(out)
    for key in ("eval_accuracy", "eval_margin", "eval_loss"):
        assert key in metrics and f"{key}_before" in metrics, key
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert metrics["global_step"] == 3
    assert metrics["eval_margin"] != metrics["eval_margin_before"]
    # The embedded pairs carry their task family: accuracy is also recorded per family, before and after.
    tasks = {k.split("/")[1] for k in metrics if k.startswith("eval_accuracy/") and not k.endswith("_before")}
    assert len(tasks) >= 2 and tasks <= {"identity", "capital", "sentiment", "chat"}
    for task in tasks:
        assert 0.0 <= metrics[f"eval_accuracy/{task}"] <= 1.0 and f"eval_accuracy/{task}_before" in metrics
    # The transformer body it started from was trained, not only the new score head.
    assert changed_fraction(sft_run / "model", out / "model", AutoModelForSequenceClassification) > 0.9

    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    prompt = [{"role": "user", "content": "你是谁？"}]
    enc = encode_preference(
        tokenizer,
        prompt,
        [{"role": "assistant", "content": "我是Aster。"}],
        [{"role": "assistant", "content": "我是ChatGPT。"}],
    )
    batch = [enc["prompt_ids"] + enc["chosen_ids"], enc["prompt_ids"] + enc["rejected_ids"]]
    width = max(map(len, batch))
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in batch])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch])
    with torch.no_grad():
        scores = model(input_ids=ids, attention_mask=mask).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()

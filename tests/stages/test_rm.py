"""stage=rm through the CLI from the shared SFT run: a one-label classifier that trains, reports and reloads."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignment.data.reward_input import encode_reward_input
from alignment.paths import DATA_DIR
from tests.conftest import read_metrics, run_cli
from tests.stages.test_dpo import LEARN, ON_TRAINED_PAIRS, changed_fraction

pytestmark = pytest.mark.slow


def test_reward_model_trains_from_sft_and_saves_a_standard_classifier(sft_run, tmp_path):
    # Evaluated on the 32 pairs it trains on (data.eval_split=train): 8 steps must learn to rank them.
    run_cli("stage=rm", f"model.path={sft_run / 'model'}", f"output_dir={tmp_path}", *LEARN, *ON_TRAINED_PAIRS)
    out = tmp_path / "rm"
    metrics = read_metrics(out)
    for key in ("eval_accuracy", "eval_margin", "eval_loss"):
        assert key in metrics and f"{key}_before" in metrics, key
    assert metrics["global_step"] == 8
    # A fresh score head ranks pairs about at chance; trained, it ranks (nearly) every trained pair right.
    assert metrics["eval_accuracy"] >= 0.9 and metrics["eval_accuracy"] > metrics["eval_accuracy_before"] + 0.2
    assert metrics["eval_margin"] > 0.5 + metrics["eval_margin_before"]
    assert metrics["eval_loss"] < 0.75 * metrics["eval_loss_before"]
    # The embedded pairs carry their task family: accuracy is also recorded per family, before and after.
    tasks = {k.split("/")[1] for k in metrics if k.startswith("eval_accuracy/") and not k.endswith("_before")}
    assert len(tasks) >= 2 and tasks <= {"identity", "capital", "sentiment", "chat"}
    for task in tasks:
        assert metrics[f"eval_accuracy/{task}"] >= 0.75 and 0.0 <= metrics[f"eval_accuracy/{task}_before"] <= 1.0
    # The transformer body it started from was trained, not only the new score head.
    assert changed_fraction(sft_run / "model", out / "model", AutoModelForSequenceClassification) > 0.9

    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    # The saved model, scoring each trained pair on its own (no padding) at the reply's end-of-turn, ranks them as
    # the stage's evaluation reported.
    lines = (DATA_DIR / "preference" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:32]
    right = []
    for pair in map(json.loads, lines):
        chosen, rejected = (
            encode_reward_input(tokenizer, pair["prompt"], pair[side]) for side in ("chosen", "rejected")
        )
        assert chosen[-1] == rejected[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        with torch.no_grad():
            scores = [model(input_ids=torch.tensor([ids])).logits for ids in (chosen, rejected)]
        assert all(s.shape == (1, 1) for s in scores)
        right.append(float(scores[0]) > float(scores[1]))
    assert sum(right) / len(right) == pytest.approx(metrics["eval_accuracy"])

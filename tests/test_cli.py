"""The CLI as a user drives it: the SFT stage's output contract, config typos, and loading a saved model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.tiny_model import tiny_model_dir
from tests.conftest import FAST, read_metrics, run_cli

pytestmark = pytest.mark.slow


def test_sft_writes_the_output_contract_and_learns(sft_run):
    for name in ("config.yaml", "metrics.json", "train.log", "log_history.jsonl"):
        assert (sft_run / name).is_file(), name
    metrics = read_metrics(sft_run)
    for key in (
        "eval_loss_before",
        "eval_loss",
        "train_runtime",
        "tokens_per_second",
        "trainable_params",
        "total_params",
        "world_size",
        "global_step",
        "oracle_reward",
        "oracle_reward_before",
    ):
        assert key in metrics, key
    assert metrics["global_step"] == 40
    assert metrics["world_size"] == 1
    assert metrics["eval_loss"] < 0.8 * metrics["eval_loss_before"]
    assert all(isinstance(v, int | float) for v in metrics.values())
    losses = [row["loss"] for row in map(json.loads, (sft_run / "log_history.jsonl").open()) if "loss" in row]
    assert losses[-1] < losses[0]


def test_every_trainable_parameter_changed(sft_run):
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir()).state_dict()
    after = AutoModelForCausalLM.from_pretrained(sft_run / "model").state_dict()
    assert before.keys() == after.keys()
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged, f"parameters not trained: {unchanged}"


def test_saved_model_loads_and_answers(sft_run):
    """Plain HF loading and greedy generation: the reply ends at the end-of-turn token SFT trained (once, last), or
    runs to the length cap; greedy decoding repeats itself."""
    from alignment.generation import stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(sft_run / "model")
    model = AutoModelForCausalLM.from_pretrained(sft_run / "model")
    stop = stop_token_ids(tokenizer, model)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Who are you?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    start = ids["input_ids"].shape[1]
    out = model.generate(**ids, max_new_tokens=48, do_sample=False)
    reply = out[0, start:].tolist()
    assert torch.equal(out[0, :start], ids["input_ids"][0])  # the prompt is kept as given
    assert 1 <= len(reply) < 48, "the reply ran to the length cap instead of ending its turn"
    assert reply[-1] in stop and not any(t in stop for t in reply[:-1]), reply
    assert "Aster" in tokenizer.decode(reply, skip_special_tokens=True)  # the identity SFT taught
    assert torch.equal(model.generate(**ids, max_new_tokens=48, do_sample=False), out)
    # A cap shorter than the reply: exactly that many new tokens, none of them a stop token.
    capped = model.generate(**ids, max_new_tokens=4, do_sample=False)[0, start:].tolist()
    assert capped == reply[:4] and len(reply) > 4


def test_config_typo_names_the_key(tmp_path):
    proc = run_cli("stage=sft", f"output_dir={tmp_path}", "trainer.learnig_rate=1e-4", check=False)
    assert proc.returncode != 0
    assert "learnig_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("stage=sft", f"output_dir={tmp_path}", "data.pth=x.jsonl", check=False)
    assert proc.returncode != 0 and "pth" in proc.stderr


def test_model_path_points_at_a_saved_model(sft_run, tmp_path):
    run_cli("stage=sft", f"model.path={sft_run / 'model'}", f"output_dir={tmp_path}", "trainer.max_steps=3", *FAST)
    saved = (tmp_path / "sft" / "config.yaml").read_text(encoding="utf-8")
    assert str(sft_run / "model") in saved
    metrics = read_metrics(tmp_path / "sft")
    # Starting from the trained model, not the random tiny one: held-out loss starts low.
    assert metrics["eval_loss_before"] < read_metrics(sft_run)["eval_loss_before"] - 1.0


def test_missing_model_path_is_a_clean_error(tmp_path):
    proc = run_cli("stage=sft", f"model.path={tmp_path / 'nope'}", f"output_dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr

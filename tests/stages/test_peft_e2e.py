"""Fine-tuning methods through the real CLI: LoRA SFT -> LoRA DPO as a pipeline, and prompt tuning.

The CLI errors for qlora without CUDA and for an unsupported method/stage pair are in tests/test_errors.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from alignment.config import ModelConfig
from alignment.models import load_causal_lm, load_tokenizer
from tests.conftest import cli_env, read_metrics, run_cli

pytestmark = pytest.mark.slow

# A few real optimiser steps without warm-up, so a handful of steps already lowers the held-out loss.
SHORT = [
    "trainer.max_steps=6",
    "trainer.warmup_steps=0",
    "trainer.logging_steps=1",
    "data.max_train_rows=96",
    "data.max_eval_rows=16",
    "oracle_eval.enabled=false",
]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the tiny model is fastest on one thread when cores are shared


@pytest.fixture(scope="module")
def dpo_lora_run(tmp_path_factory) -> Path:
    """``pipeline=dpo peft=lora``: LoRA SFT (merged), then LoRA DPO on it."""
    out = tmp_path_factory.mktemp("dpo-lora")
    run_cli(
        "pipeline=dpo",
        "peft=lora",
        f"output_dir={out}",
        "trainer.learning_rate=5e-3",
        *SHORT,
        env=cli_env(**ONE_THREAD),
    )
    return out


def _generates(model, tokenizer) -> None:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好, name a colour"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_lora_sft_trains_a_small_adapter_and_lowers_eval_loss(dpo_lora_run):
    metrics = read_metrics(dpo_lora_run / "sft")
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert 0 < metrics["trainable_params"] < 0.6 * metrics["total_params"]
    adapter_cfg = json.loads((dpo_lora_run / "sft" / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert (Path(adapter_cfg["base_model_name_or_path"]) / "config.json").exists(), "the adapter records its base"
    model_dir = dpo_lora_run / "sft" / "model"
    assert (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists(), "merged"


def test_lora_sft_outputs_load_and_generate(dpo_lora_run):
    model_cfg = OmegaConf.structured(ModelConfig)
    merged = load_causal_lm(str(dpo_lora_run / "sft" / "model"), model_cfg).eval()
    from_adapter = load_causal_lm(str(dpo_lora_run / "sft" / "adapter"), model_cfg).eval()
    ids = torch.tensor([[3, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, from_adapter(input_ids=ids).logits, atol=1e-4)
    _generates(merged, load_tokenizer(str(dpo_lora_run / "sft" / "model")))


def test_lora_dpo_on_lora_sft_starts_from_the_sft_model_as_reference(dpo_lora_run):
    manifest = json.loads((dpo_lora_run / "pipeline.json").read_text(encoding="utf-8"))
    assert [s["status"] for s in manifest["steps"]] == ["done", "done", "done"]  # sft, dpo, compare
    metrics = read_metrics(dpo_lora_run / "dpo")
    assert 0 < metrics["trainable_params"] < 0.6 * metrics["total_params"]
    rows = [json.loads(line) for line in (dpo_lora_run / "dpo" / "log_history.jsonl").open(encoding="utf-8")]
    steps = [r for r in rows if "rewards/margins" in r]
    # Step 1: the new adapter is still zero, so policy and reference (the policy with its adapter disabled, i.e.
    # the merged SFT model) agree exactly; afterwards the adapter moves the policy away from it.
    assert abs(steps[0]["rewards/chosen"]) < 1e-4 and abs(steps[0]["rewards/rejected"]) < 1e-4
    assert any(abs(r["rewards/margins"]) > 1e-4 for r in steps[1:])
    model = load_causal_lm(str(dpo_lora_run / "dpo" / "model"), OmegaConf.structured(ModelConfig)).eval()
    _generates(model, load_tokenizer(str(dpo_lora_run / "dpo" / "model")))


def test_prompt_tuning_sft_lowers_eval_loss_and_saves_a_loadable_adapter(tmp_path):
    run_cli(
        "stage=sft",
        "peft=prompt_tuning",
        f"output_dir={tmp_path}",
        "trainer.learning_rate=0.1",
        *SHORT,
        env=cli_env(**ONE_THREAD),
    )
    metrics = read_metrics(tmp_path / "sft")
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert 0 < metrics["trainable_params"] < 0.01 * metrics["total_params"]
    model_dir = tmp_path / "sft" / "model"
    assert (model_dir / "adapter_config.json").exists(), "prompt tuning cannot merge: model/ holds the adapter"
    model = load_causal_lm(str(model_dir), OmegaConf.structured(ModelConfig)).eval()
    assert hasattr(model, "peft_config")
    _generates(model, load_tokenizer(str(model_dir)))

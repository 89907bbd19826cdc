"""stage=grpo through the CLI: LoRA policy, a weighted reward model + user function, oracle before and after."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from tests.conftest import FAST, read_metrics, run_cli
from tests.stages.test_ppo import changed_fraction, make_reward_model, write_reward_function

pytestmark = pytest.mark.slow

SMALL_GROUP = [
    "trainer.max_steps=2",
    "trainer.per_device_train_batch_size=8",
    "trainer.num_generations=4",
    "trainer.max_completion_length=16",
    "trainer.logging_steps=1",
]


def test_grpo_with_lora_and_a_weighted_reward_model_plus_function(sft_run, tmp_path):
    rm = make_reward_model(sft_run / "model", tmp_path / "rm")
    function = write_reward_function(tmp_path)
    sources = f'[{{type:model,path:"{rm}",weight:1.0}},{{type:function,path:"{function}",weight:0.5}}]'
    run_cli(
        "stage=grpo",
        f"model.path={sft_run / 'model'}",
        f"output_dir={tmp_path / 'run'}",
        "peft=lora",
        f"reward.sources={sources}",
        *SMALL_GROUP,
        *FAST,
    )
    out = tmp_path / "run" / "grpo"
    metrics = read_metrics(out)
    for key in ("oracle_reward", "oracle_reward_before", "global_step", "trainable_params", "total_params"):
        assert key in metrics, key
    assert metrics["global_step"] == 2
    assert metrics["trainable_params"] < 0.5 * metrics["total_params"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    rows = [json.loads(line) for line in (out / "log_history.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any("reward" in r for r in rows)
    before = AutoModelForCausalLM.from_pretrained(sft_run / "model").state_dict()
    merged = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert 0 < changed_fraction(before, merged) < 1  # the merged LoRA moved the adapted projections only

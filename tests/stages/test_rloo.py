"""stage=rloo through the CLI with the embedded oracle as the reward: every parameter trains, metrics are written."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from tests.conftest import FAST, read_metrics, run_cli
from tests.stages.test_ppo import changed_fraction

pytestmark = pytest.mark.slow


def test_rloo_trains_the_policy_against_the_oracle(sft_run, tmp_path):
    run_cli(
        "stage=rloo",
        f"model.path={sft_run / 'model'}",
        f"output_dir={tmp_path}",
        "reward=oracle",
        "trainer.max_steps=2",
        "trainer.per_device_train_batch_size=8",
        "trainer.num_generations=4",
        "trainer.max_completion_length=16",
        *FAST,
    )
    metrics = read_metrics(tmp_path / "rloo")
    for key in ("oracle_reward", "oracle_reward_before", "global_step", "train_runtime"):
        assert key in metrics, key
    assert metrics["global_step"] == 2
    before = AutoModelForCausalLM.from_pretrained(sft_run / "model").state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "rloo" / "model").state_dict()
    assert changed_fraction(before, after) > 0.9

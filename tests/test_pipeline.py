"""pipeline=dpo through the CLI: the dpo step really starts from (and is referenced to) the sft step's saved model."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import FAST, read_metrics, run_cli
from tests.stages.test_dpo import changed_fraction

pytestmark = pytest.mark.slow

# Overrides without a step prefix apply to both steps.
SHORT = ["trainer.max_steps=3", "trainer.warmup_steps=0", "trainer.save_strategy=no"]


def test_pipeline_dpo_chains_sft_into_dpo_and_records_each_step(tmp_path):
    proc = run_cli("pipeline=dpo", f"output_dir={tmp_path}", "+pipeline.steps.dpo.trainer.beta=0.3", *SHORT, *FAST)
    sft_model = tmp_path / "sft" / "model"

    manifest = json.loads((tmp_path / "pipeline.json").read_text(encoding="utf-8"))
    assert manifest["pipeline"] == "dpo"
    steps = {s["name"]: s for s in manifest["steps"]}
    assert list(steps) == ["sft", "dpo", "compare"]  # pipelines end with a compare step
    for name, step in steps.items():
        assert step["status"] == "done" and step["output"] == str(tmp_path / name)
        assert re.fullmatch(r"[0-9a-f]{16}", step["config_hash"])
        assert step["started"] <= step["ended"]
    assert steps["sft"]["config_hash"] != steps["dpo"]["config_hash"]
    assert steps["sft"]["ended"] <= steps["dpo"]["started"]

    config = yaml.safe_load((tmp_path / "dpo" / "config.yaml").read_text(encoding="utf-8"))
    assert config["model"]["path"] == str(sft_model) and config["ref_model"] == str(sft_model)
    assert config["trainer"]["beta"] == 0.3  # the per-step override reached the dpo step only
    sft_config = yaml.safe_load((tmp_path / "sft" / "config.yaml").read_text(encoding="utf-8"))
    assert "beta" not in sft_config["trainer"]

    # The dpo step's start weights are the sft output: with the same seeded decoding, its "before" samples are
    # exactly the sft step's "after" samples, and its policy starts equal to its reference (zero margins).
    sft_samples = (tmp_path / "sft" / "oracle_samples.jsonl").read_text(encoding="utf-8")
    assert (tmp_path / "dpo" / "oracle_samples_before.jsonl").read_text(encoding="utf-8") == sft_samples
    dpo = read_metrics(tmp_path / "dpo")
    assert dpo["oracle_reward_before"] == read_metrics(tmp_path / "sft")["oracle_reward"]
    assert dpo["eval_rewards/margins_before"] == pytest.approx(0.0, abs=1e-5)
    assert changed_fraction(sft_model, tmp_path / "dpo" / "model") > 0.9

    assert "running stage dpo" in proc.stdout

"""Same seed, same config, on CPU: two runs give identical loss curves and metrics, to the last bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli_in_one_process, read_metrics

pytestmark = pytest.mark.slow

ARGS = [
    "stage=sft",
    "data.max_train_rows=16",
    "data.max_eval_rows=4",
    "data.max_length=64",
    "oracle_eval.num_prompts=2",
    "oracle_eval.samples_per_prompt=2",
    "oracle_eval.max_new_tokens=8",
    "oracle_eval.cache=false",  # sample both runs' evaluations: the second must not just read the first's back
    "trainer.max_steps=6",
    "trainer.per_device_train_batch_size=2",
    "trainer.logging_steps=1",
    "trainer.warmup_steps=2",
    "seed=7",
]


def history(stage_dir: Path) -> list[dict]:
    lines = (stage_dir / "log_history.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k in ("step", "loss", "grad_norm")} for line in lines]


def test_same_seed_same_config_gives_identical_runs(tmp_path):
    # Two runs one after the other in one process (one start-up). Across processes, tests/test_resume.py shows the
    # same: its killed run's first steps equal the uninterrupted run's, loss by loss.
    runs = cli_in_one_process([[*ARGS, f"output_dir={tmp_path / name}"] for name in ("a", "b")])
    assert [r["code"] for r in runs] == [0, 0], runs[-1]["stderr"][-3000:]
    a, b = tmp_path / "a" / "sft", tmp_path / "b" / "sft"
    curve = history(a)
    assert len([row for row in curve if "loss" in row]) == 6
    assert curve == history(b)  # exact: same batches, same dropout masks, same updates
    keys = ("eval_loss", "eval_loss_before", "oracle_reward", "oracle_reward_before", "train_loss")
    assert {k: read_metrics(a).get(k) for k in keys} == {k: read_metrics(b).get(k) for k in keys}
    assert (a / "oracle_samples.jsonl").read_text(encoding="utf-8") == (b / "oracle_samples.jsonl").read_text(
        encoding="utf-8"
    )

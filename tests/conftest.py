"""Shared test fixtures: a hermetic tiny-model cache, the real CLI, and one short SFT run for later stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Small but real: end-to-end tests run the full stage code on a slice of the embedded data.
FAST = [
    "data.max_train_rows=128",
    "data.max_eval_rows=32",
    "oracle_eval.num_prompts=8",
    "oracle_eval.samples_per_prompt=2",
    "oracle_eval.max_new_tokens=24",
]


@pytest.fixture(scope="session", autouse=True)
def alignment_cache(tmp_path_factory) -> str:
    """Build the tiny model once per session, in a temp cache unless ALIGNMENT_CACHE is set."""
    cache = os.environ.get("ALIGNMENT_CACHE") or str(tmp_path_factory.mktemp("alignment-cache"))
    os.environ["ALIGNMENT_CACHE"] = cache
    return cache


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TRL_EXPERIMENTAL_SILENCE="1",
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_cli(
    *args: str, check: bool = True, timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m alignment ARGS`` as a user would; on failure show its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "alignment", *args],
        cwd=REPO,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"CLI failed ({proc.returncode}): {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def read_metrics(stage_dir: Path) -> dict:
    return json.loads((Path(stage_dir) / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory) -> Path:
    """One short SFT run on the embedded data; later-stage tests start from its model."""
    out = tmp_path_factory.mktemp("sft-run")
    run_cli(
        "stage=sft",
        f"output_dir={out}",
        "trainer.max_steps=40",
        "data.max_eval_rows=32",
        "oracle_eval.num_prompts=8",
        "oracle_eval.samples_per_prompt=2",
        "oracle_eval.max_new_tokens=24",
    )
    return out / "sft"

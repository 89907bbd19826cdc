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


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models run
    several times faster so than with threads fighting over shared cores. The previous count comes back after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# One Python process running the CLI entry point (Hydra and all) once per argv: one start-up for many runs.
RUNNER = r"""
import contextlib, errno, io, json, os, sys, time, traceback
if os.environ.get("FAKE_ENOSPC"):
    import transformers.modeling_utils as mu
    def _full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    mu.safe_save_file = _full
from alignment.__main__ import main
results = []
for item in json.loads(sys.argv[1]):
    argv, read = (item, []) if isinstance(item, list) else (item["argv"], item.get("read", []))
    sys.argv = ["alignment", *argv]
    out, err = io.StringIO(), io.StringIO()
    code, start = 0, time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # escaped the CLI's handling: the test shows it
            code = 99
            traceback.print_exc()
    seconds = time.perf_counter() - start
    files = {}
    for path in read:  # files as this run left them (a later run may rewrite them)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                files[path] = {"text": f.read(), "mtime_ns": os.stat(path).st_mtime_ns}
    results.append(
        {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": seconds, "files": files}
    )
print("RESULTS=" + json.dumps(results, ensure_ascii=False))
"""


def cli_in_one_process(argvs: list, env: dict[str, str] | None = None) -> list[dict]:
    """Run the CLI entry point once per argv, one after another in ONE new Python process (one start-up for all).

    An item is an argv list, or ``{"argv": [...], "read": [paths]}`` to also get those files' text and mtime as that
    run left them. Returns per run ``{"code", "stdout", "stderr", "seconds", "files"}``; ``code`` is the SystemExit
    code (99: an exception escaped the CLI).
    """
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(argvs)],
        cwd=REPO,
        env=env or cli_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULTS=")), None)
    assert line, f"the runner failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(line.removeprefix("RESULTS="))

"""Damaged checkpoints: the cheap integrity checks (safetensors headers, the manifest, the files a resume needs), and
through the real CLI a resume that skips a damaged newest checkpoint, or starts over when none is intact."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignment.stages.checkpoints import (
    MANIFEST,
    checkpoint_problem,
    newest_intact,
    safetensors_problem,
    write_manifest,
)
from tests.conftest import REPO, cli_env, cli_in_one_process, read_metrics


def _safetensors(path: Path, n: int = 6) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.arange(n, dtype=torch.float32), "b": torch.ones(2, 3)}, str(path))
    return path


def _torch_file(path: Path) -> Path:
    import torch

    torch.save({"step": 1, "t": torch.zeros(4)}, path)
    return path


def _hf_checkpoint(stage_dir: Path, step: int, manifest: bool = True) -> Path:
    """A small checkpoint laid out as HF Trainer saves one (weights, optimiser, scheduler, RNG, state last)."""
    ckpt = stage_dir / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    _safetensors(ckpt / "model.safetensors")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        _torch_file(ckpt / name)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    if manifest:
        write_manifest(ckpt)
    return ckpt


def _truncate(path: Path, keep: int) -> None:
    with path.open("r+b") as f:
        f.truncate(keep)


# -- safetensors headers ------------------------------------------------------------------------------------------
def test_a_whole_safetensors_file_passes(tmp_path):
    assert safetensors_problem(_safetensors(tmp_path / "w.safetensors")) is None


def test_a_partial_safetensors_file_is_caught(tmp_path):
    path = _safetensors(tmp_path / "w.safetensors")
    size = path.stat().st_size
    _truncate(path, size - 5)  # the data cut short
    assert "header promises" in safetensors_problem(path) and f"{size - 5} bytes" in safetensors_problem(path)
    _truncate(path, 20)  # the header cut short
    assert "header length says" in safetensors_problem(path)
    _truncate(path, 3)  # not even the 8-byte length
    assert "too short" in safetensors_problem(path)


def test_a_header_promising_more_bytes_than_the_file_has_is_caught(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [25], "data_offsets": [0, 100]}}).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 40)  # 40 of the 100 promised bytes
    assert safetensors_problem(path) == f"w.safetensors is {8 + len(header) + 40} bytes but its header promises " + (
        f"{8 + len(header) + 100} (truncated)"
    )
    path.write_bytes(len(header).to_bytes(8, "little") + b"{not json" + b" " * (len(header) - 9) + b"\0" * 100)
    assert "unreadable safetensors header" in safetensors_problem(path)


# -- whole checkpoints --------------------------------------------------------------------------------------------
def test_a_checkpoint_with_a_manifest_is_checked_against_it(tmp_path):
    ckpt = _hf_checkpoint(tmp_path, 4)
    assert checkpoint_problem(ckpt) is None
    listed = json.loads((ckpt / MANIFEST).read_text(encoding="utf-8"))["files"]
    assert set(listed) == {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} | {
        "training_args.bin",
        "trainer_state.json",
    }
    (ckpt / "rng_state.pth").unlink()
    assert checkpoint_problem(ckpt) == f"rng_state.pth is missing ({MANIFEST} lists it)"
    _torch_file(ckpt / "rng_state.pth")
    with (ckpt / "optimizer.pt").open("ab") as f:  # rewritten after the manifest: another size
        f.write(b"x")
    assert checkpoint_problem(ckpt).startswith("optimizer.pt is ") and "checkpoint.json says" in checkpoint_problem(
        ckpt
    )


def test_a_checkpoint_without_a_manifest_is_judged_by_its_files(tmp_path):
    ckpt = _hf_checkpoint(tmp_path, 2, manifest=False)
    assert checkpoint_problem(ckpt) is None
    (ckpt / "optimizer.pt").unlink()
    assert checkpoint_problem(ckpt).startswith("optimizer.pt is missing")
    assert checkpoint_problem(ckpt, model_only=True) is None  # trainer.save_only_model saves none
    _torch_file(ckpt / "optimizer.pt")
    _truncate(ckpt / "optimizer.pt", 100)
    assert checkpoint_problem(ckpt).startswith("optimizer.pt is not a complete torch file")
    _torch_file(ckpt / "optimizer.pt")
    _truncate(ckpt / "model.safetensors", 50)
    assert checkpoint_problem(ckpt).startswith("model.safetensors is 50 bytes")
    (ckpt / "model.safetensors").unlink()
    assert checkpoint_problem(ckpt) == "no model or adapter weights"
    (ckpt / "trainer_state.json").write_text('{"global_st', encoding="utf-8")
    assert checkpoint_problem(ckpt) == "trainer_state.json is unreadable (killed while saving?)"
    (ckpt / "trainer_state.json").unlink()
    assert checkpoint_problem(ckpt) == "no trainer_state.json (killed while saving?)"


def test_a_peft_checkpoint_and_a_ppo_checkpoint(tmp_path):
    peft = _hf_checkpoint(tmp_path, 1, manifest=False)
    (peft / "model.safetensors").rename(peft / "adapter_model.safetensors")
    assert checkpoint_problem(peft) is None
    ppo = tmp_path / "checkpoint-3"
    ppo.mkdir()
    _safetensors(ppo / "trainable.safetensors")
    for name in ("optimizer.pt", "scheduler.pt", "rng-0.pt"):
        _torch_file(ppo / name)
    (ppo / "rng-0.json").write_text("{}", encoding="utf-8")
    (ppo / "ppo_state.json").write_text('{"step": 3}', encoding="utf-8")
    assert checkpoint_problem(ppo) is None
    (ppo / "scheduler.pt").unlink()
    assert checkpoint_problem(ppo) == "scheduler.pt is missing"


def test_the_newest_intact_checkpoint_and_the_damaged_ones_above_it(tmp_path):
    for step in (2, 4, 6, 8):
        _hf_checkpoint(tmp_path, step)
    _truncate(tmp_path / "checkpoint-8" / "model.safetensors", 10)
    (tmp_path / "checkpoint-6" / "scheduler.pt").unlink()
    step, damaged = newest_intact(tmp_path)
    assert step == 4 and [s for s, _ in damaged] == [8, 6]
    assert damaged[1][1] == f"scheduler.pt is missing ({MANIFEST} lists it)"
    assert newest_intact(tmp_path / "nothing") == (None, [])


# -- through the CLI: a resume skips what is damaged ----------------------------------------------------------------
ARGS = [
    "stage=sft",
    "data.max_train_rows=16",
    "data.max_eval_rows=8",
    "data.max_length=64",
    "oracle_eval.enabled=false",
    "evaluate_before=false",
    "trainer.max_steps=4",
    "trainer.per_device_train_batch_size=4",
    "trainer.save_steps=2",  # checkpoint-2 and checkpoint-4 (save_total_limit=2)
    "trainer.logging_steps=1",
]
ENV = cli_env(OMP_NUM_THREADS="1")


def _killed_in_final_evaluation(out: Path) -> Path:
    """SIGKILL a run once its last checkpoint is saved (manifest and all): it is evaluating or saving its model."""
    with (out.parent / f"{out.name}.log").open("w") as sink:
        victim = subprocess.Popen(
            [sys.executable, "-m", "alignment", *ARGS, f"output_dir={out}"],
            cwd=REPO,
            env=ENV,
            stdout=sink,
            stderr=sink,
        )
    deadline = time.monotonic() + 300
    while not (out / "sft" / "checkpoint-4" / MANIFEST).exists():
        assert victim.poll() is None and time.monotonic() < deadline, (out.parent / f"{out.name}.log").read_text()
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (out / "sft" / "metrics.json").exists(), "the run finished before the kill"
    return out / "sft"


@pytest.mark.slow
def test_a_resume_skips_damaged_checkpoints_and_starts_over_when_none_is_intact(tmp_path):
    killed = _killed_in_final_evaluation(tmp_path / "killed")
    assert checkpoint_problem(killed / "checkpoint-2") is None and checkpoint_problem(killed / "checkpoint-4") is None
    copies = {}
    for name in ("truncated", "no_optimizer", "none_left"):  # copies of the killed run, then damaged
        shutil.copytree(killed.parent, tmp_path / name)
        copies[name] = tmp_path / name / "sft"
    truncated, no_optimizer, none_left = copies.values()
    _truncate(truncated / "checkpoint-4" / "model.safetensors", 4096)
    (no_optimizer / "checkpoint-4" / "optimizer.pt").unlink()
    (no_optimizer / "checkpoint-4" / MANIFEST).unlink()  # an older run's checkpoint: judged by its files
    (none_left / "checkpoint-4" / "trainer_state.json").unlink()  # killed while saving checkpoint-4
    (none_left / "checkpoint-4" / MANIFEST).unlink()
    _truncate(none_left / "checkpoint-2" / "model.safetensors", 4096)

    stages = (killed, truncated, no_optimizer, none_left)
    runs = cli_in_one_process([[*ARGS, f"output_dir={d.parent}"] for d in stages], ENV)
    for run in runs:
        assert run["code"] == 0, run["stderr"][-3000:]
    outputs = [run["stdout"] + run["stderr"] for run in runs]
    for out in outputs:  # the SIGKILLed run's lock, taken over
        assert len([line for line in out.splitlines() if "took over" in line]) == 1, out[-3000:]
    outputs.pop(0)
    # Killed during its final evaluation: resumed from its last checkpoint, nothing skipped.
    assert read_metrics(killed)["resumed_from_step"] == 4 and read_metrics(killed)["global_step"] == 4
    assert "skipped" not in runs[0]["stdout"] + runs[0]["stderr"]
    # One line each: which checkpoint was skipped and why; then the run goes on from the one before.
    for stage, out, why in (
        (truncated, outputs[0], "model.safetensors is 4096 bytes, checkpoint.json says"),
        (no_optimizer, outputs[1], "optimizer.pt is missing"),
    ):
        skipped = [line for line in out.splitlines() if "skipped checkpoint-4" in line]
        assert len(skipped) == 1 and why in skipped[0], out[-3000:]
        assert "skipped checkpoint-4" in (stage / "train.log").read_text(encoding="utf-8")
        metrics = read_metrics(stage)
        assert metrics["resumed_from_step"] == 2 and metrics["global_step"] == 4
        assert (stage / "model" / "model.safetensors").exists()
        assert checkpoint_problem(stage / "checkpoint-4") is None  # saved anew, whole
    # None intact: both skipped, one line saying so, and the stage trains from the start.
    lines = outputs[2].splitlines()
    assert any("skipped checkpoint-4" in x and "no trainer_state.json (killed while saving?)" in x for x in lines)
    assert any("skipped checkpoint-2" in x and "model.safetensors is 4096 bytes" in x for x in lines)
    assert len([x for x in lines if "no intact checkpoint left in" in x]) == 1
    metrics = read_metrics(none_left)
    assert "resumed_from_step" not in metrics and metrics["global_step"] == 4

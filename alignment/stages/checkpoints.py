"""A stage's ``checkpoint-<step>/`` dirs: which are complete, and whether one can be resumed from, judged cheaply (file
sizes and headers, no tensors read).

After every save a manifest, ``checkpoint.json``, is written last (atomically): each file's path and size. A checkpoint
with a manifest is intact when every listed file is there with its size, its safetensors headers parse and promise
exactly the bytes the file has, and its state file (``trainer_state.json``, PPO ``ppo_state.json``) parses. One
without a manifest (an older run, or one killed before the manifest) is judged by what is there: the state file, the
weights (safetensors headers, torch zip files whole), and the optimiser, scheduler and RNG files the trainer saves.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

from alignment.atomic import write_atomic

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
MANIFEST = "checkpoint.json"
STATE_FILES = ("trainer_state.json", "ppo_state.json")
# Weights HF Trainer may save: whole, sharded (an index), a PEFT adapter; DeepSpeed and FSDP use subdirs instead.
_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# What our PPO loop needs to resume (rng of process 0 at least; see alignment/rl/checkpoint.py): accelerate's
# save_state files, or, marked by trainable.safetensors, the layout it wrote before (which a resume then refuses).
_PPO_FILES = (
    "model.safetensors",
    "optimizer.bin",
    "random_states_0.pkl",
    "custom_checkpoint_0.pkl",
    "custom_checkpoint_1.pkl",
)
_OLD_PPO_FILES = ("trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng-0.pt", "rng-0.json")
_MAX_HEADER = 100_000_000  # safetensors refuses larger headers
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def checkpoint_steps(stage_dir: Path | str) -> list[int]:
    """Steps of the complete checkpoints in ``stage_dir``, oldest first.

    HF Trainer writes ``trainer_state.json`` last, so a checkpoint whose state file parses is complete; our PPO loop
    writes its ``ppo_state.json`` last in the same way. (Whether its files are intact is checked when a run resumes:
    :func:`newest_intact`.)
    """
    return sorted(step for step, path in _checkpoint_dirs(Path(stage_dir)) if _state_file(path) is not None)


def incomplete_checkpoints(stage_dir: Path | str) -> list[int]:
    """Steps of the checkpoints whose state file is missing or unreadable (a save that did not finish)."""
    return sorted(step for step, path in _checkpoint_dirs(Path(stage_dir)) if _state_file(path) is None)


def _checkpoint_dirs(stage_dir: Path) -> list[tuple[int, Path]]:
    if not stage_dir.is_dir():
        return []
    return [(int(m.group(1)), p) for p in stage_dir.iterdir() if (m := CHECKPOINT_NAME.match(p.name)) and p.is_dir()]


def write_manifest(ckpt: Path | str) -> Path:
    """Write ``checkpoint.json`` (each file's path relative to ``ckpt`` and its size); call it once the save is done."""
    ckpt = Path(ckpt)
    files = {
        p.relative_to(ckpt).as_posix(): p.stat().st_size
        for p in sorted(ckpt.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    write_atomic(ckpt / MANIFEST, json.dumps({"files": files}, indent=1) + "\n")
    return ckpt / MANIFEST


def checkpoint_problem(ckpt: Path | str, model_only: bool = False) -> str | None:
    """Why ``ckpt`` cannot be resumed from (a short reason naming the file), or None when it is intact.

    ``model_only``: the trainer saves no optimiser, scheduler or RNG (HF ``save_only_model``); only used when there
    is no manifest.
    """
    ckpt = Path(ckpt)
    try:
        state = _state_file(ckpt)
        if state is None:
            present = [name for name in STATE_FILES if (ckpt / name).exists()]
            what = f"{present[0]} is unreadable" if present else f"no {STATE_FILES[0]}"
            return f"{what} (killed while saving?)"
        manifest = _read_manifest(ckpt)
        if manifest is not None:
            return _problem_by_manifest(ckpt, manifest)
        if state == "ppo_state.json":
            files = _OLD_PPO_FILES if (ckpt / _OLD_PPO_FILES[0]).exists() else _PPO_FILES
            return _missing(ckpt, files) or _problem_in_files(ckpt)
        return _problem_without_manifest(ckpt, model_only)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"


def newest_intact(stage_dir: Path | str, model_only: bool = False) -> tuple[int | None, list[tuple[int, str]]]:
    """The step of the newest intact checkpoint in ``stage_dir`` (None when none is), and the damaged ones newer
    than it, newest first, each with the reason."""
    stage_dir = Path(stage_dir)
    damaged = []
    for step, _ in sorted(_checkpoint_dirs(stage_dir), reverse=True):
        problem = checkpoint_problem(stage_dir / f"checkpoint-{step}", model_only)
        if problem is None:
            return step, damaged
        damaged.append((step, problem))
    return None, damaged


def _state_file(ckpt: Path) -> str | None:
    """The name of the checkpoint's state file if one parses (written last by HF Trainer and our PPO loop)."""
    for name in STATE_FILES:
        try:
            json.loads((ckpt / name).read_text(encoding="utf-8"))
            return name
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
    return None


def _read_manifest(ckpt: Path) -> dict[str, int] | None:
    try:
        files = json.loads((ckpt / MANIFEST).read_text(encoding="utf-8"))["files"]
        return {str(k): int(v) for k, v in files.items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None  # written atomically: unreadable means none, so judge by the files


def _problem_by_manifest(ckpt: Path, manifest: dict[str, int]) -> str | None:
    for name, size in manifest.items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing ({MANIFEST} lists it)"
        actual = path.stat().st_size
        if actual != size:
            return f"{name} is {actual} bytes, {MANIFEST} says {size} (truncated or rewritten)"
        if name.endswith(".safetensors") and (problem := safetensors_problem(path)):
            return problem
    return None


def _problem_without_manifest(ckpt: Path, model_only: bool) -> str | None:
    names = {p.name for p in ckpt.iterdir()}
    subdirs = [p.name for p in ckpt.iterdir() if p.is_dir()]
    deepspeed = any(d.startswith("global_step") for d in subdirs)
    fsdp = any("pytorch_model_fsdp" in d or "optimizer" in d for d in subdirs)
    if not (names & set(_WEIGHTS)) and not deepspeed and not fsdp and not any("model_fsdp" in n for n in names):
        return "no model or adapter weights"
    if problem := _problem_in_files(ckpt):
        return problem
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index in names:
            try:
                shards = set(json.loads((ckpt / index).read_text(encoding="utf-8"))["weight_map"].values())
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
                return f"{index} is unreadable"
            if missing := _missing(ckpt, sorted(shards)):
                return missing
    if model_only or deepspeed:  # DeepSpeed keeps optimiser and scheduler in its global_step dir
        return None
    if not ({"optimizer.pt", "optimizer.bin"} & names or fsdp):
        return "optimizer.pt is missing (the optimiser state the trainer resumes)"
    if "scheduler.pt" not in names:
        return "scheduler.pt is missing (without it the trainer would not restore the optimiser either)"
    if not any(n.startswith("rng_state") and n.endswith(".pth") for n in names):
        return "rng_state.pth is missing (the RNG state the trainer resumes)"
    return None


def _missing(ckpt: Path, names) -> str | None:
    for name in names:
        if not (ckpt / name).is_file():
            return f"{name} is missing"
    return None


def _problem_in_files(ckpt: Path) -> str | None:
    """Check every safetensors header and that every torch file (a zip) still has its end record."""
    for path in sorted(ckpt.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".safetensors" and (problem := safetensors_problem(path)):
            return problem
        if path.suffix in _TORCH_SUFFIXES and not zipfile.is_zipfile(path):
            rel = path.relative_to(ckpt).as_posix()
            return f"{rel} is not a complete torch file ({path.stat().st_size} bytes: truncated?)"
    return None


def safetensors_problem(path: Path | str) -> str | None:
    """Why a safetensors file is damaged (None when whole): its 8-byte header length, the JSON header, and the data
    length the header promises, which must equal what the file holds."""
    path = Path(path)
    size = os.path.getsize(path)
    if size < 8:
        return f"{path.name} is {size} bytes, too short for a safetensors header (truncated)"
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > min(size - 8, _MAX_HEADER):
            return f"{path.name} is {size} bytes but its header length says {length} (truncated or corrupt)"
        raw = f.read(length)
    try:
        header = json.loads(raw)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError, ValueError):
        return f"{path.name} has an unreadable safetensors header (corrupt)"
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"{path.name} is {size} bytes but its header promises {expected} (truncated)"
    return None

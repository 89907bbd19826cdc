"""A stage's run as recorded on disk: the config hash that guards a resume, its checkpoints, and whether it finished.

``run_state.json`` beside a stage's outputs holds the hash of its resolved config (secrets masked) and of its input
models' files (``config.yaml`` beside it, the resolved config with secrets masked). A resume under another hash is
refused; a finished stage (``metrics.json``) under the same hash is skipped; a resumed run first drops what a killed
run left. Also here: telling an out-of-disk failure from other I/O errors.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from alignment.atomic import write_atomic
from alignment.errors import AlignmentError
from alignment.secrets import scrub

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
RUN_STATE = "run_state.json"
# Outputs of a finished stage; only trusted with metrics.json beside them.
OUTPUT_DIRS = ("model", "adapter", "value_model", "value_model_adapter")
# Settings that do not change what a stage computes: changing them never blocks a resume (pipelines use it too).
HASH_EXCLUDED = (
    "debug",
    "resume",
    "output_dir",
    "pipeline",
    "tracking",
    "save_every_minutes",
    "sweep",
    "vars",
    "evaluate_before",
    "hub",
)
# The settings blocks of the evaluation stages: part of a stage's hash only when it is that stage.
_STAGE_BLOCKS = ("eval", "compare", "chat")
_HASH_EXCLUDED_TRAINER = ("save_steps", "save_total_limit", "save_strategy", "logging_steps")
# Launch plumbing; machine_rank also differs between the machines of one multi-node run, which must agree on the hash.
HASH_EXCLUDED_DISTRIBUTED = ("machine_rank", "main_process_ip", "main_process_port", "dry_run", "launch_args")
# Config keys naming models and data the stage reads; their files (names, sizes, mtimes) are fingerprinted into the
# hash, so a stage re-run on a regenerated file (e.g. label on a new generations.jsonl) trains again.
_INPUT_KEYS = ("model.path", "ref_model", "value_model", "data.path")


def stage_config_hash(cfg: DictConfig) -> tuple[str, dict]:
    """A short hash of what a stage computes: its resolved config (secrets masked) and its input models' files."""
    data = scrub(OmegaConf.to_container(cfg, resolve=True))
    for key in HASH_EXCLUDED:
        data.pop(key, None)
    for key in _STAGE_BLOCKS:
        if key != data.get("stage"):
            data.pop(key, None)
    for key in _HASH_EXCLUDED_TRAINER:
        (data.get("trainer") or {}).pop(key, None)
    for key in HASH_EXCLUDED_DISTRIBUTED:
        (data.get("distributed") or {}).pop(key, None)
    data["inputs"] = {key: _fingerprint(path) for key in _INPUT_KEYS if (path := OmegaConf.select(cfg, key))}
    for i, source in enumerate(OmegaConf.select(cfg, "reward.sources") or []):
        if source.get("path") and source.get("type") == "model":
            data["inputs"][f"reward.sources.{i}"] = _fingerprint(source.path)
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16], data


def _fingerprint(path: str) -> str:
    """Names, sizes and mtimes of a local model dir's files (a retrained model changes them); Hub ids as given."""
    local = Path(str(path)).expanduser()
    if not local.exists():
        return str(path)
    if local.is_dir() and not (local / "config.json").exists() and (local / "model").is_dir():
        local = local / "model"
    # The model card is not the model: publishing rewrites it (hub.push), which must not make later stages retrain.
    files = sorted(p for p in local.iterdir() if p.is_file() and p.name != "README.md") if local.is_dir() else [local]
    parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:16]


def finished_metrics(cfg: DictConfig, name: str | None = None) -> dict | None:
    """The metrics of this stage if it already finished under the same config and inputs (else None)."""
    if str(cfg.resume) in ("fresh", "false", "False"):
        return None
    stage_dir = Path(cfg.output_dir) / (name or str(cfg.get("step") or cfg.stage))
    metrics = stage_dir / "metrics.json"
    old = previous_config(stage_dir) if metrics.exists() else None
    if old is None or old.get("config_hash") != stage_config_hash(cfg)[0]:
        return None
    try:
        return json.loads(metrics.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def write_run_state(stage_dir: Path, cfg: DictConfig, config_hash: str, hashed: dict) -> None:
    """Write ``config.yaml`` (resolved, secrets masked) and ``run_state.json`` (the hash and what it covers)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    text = OmegaConf.to_yaml(OmegaConf.create(scrub(resolved)))
    write_atomic(stage_dir / "config.yaml", text)
    state = {"config_hash": config_hash, "config": hashed}
    write_atomic(stage_dir / RUN_STATE, json.dumps(state, indent=2, ensure_ascii=False, default=str) + "\n")


def check_resumable(stage_dir: Path, config_hash: str, hashed: dict) -> None:
    """Refuse to resume checkpoints (or overwrite outputs) that were made under another config or inputs."""
    if not checkpoint_steps(stage_dir) and not (stage_dir / "metrics.json").exists():
        return
    old = previous_config(stage_dir)
    if old is None or old.get("config_hash") == config_hash:
        return
    changed = changed_keys(old.get("config") or {}, hashed)
    raise AlignmentError(
        f"{stage_dir} holds a run made under a different config or inputs (changed: {', '.join(changed[:6])}); "
        "resuming it would mix the two. Re-run with resume=fresh to start this stage over, or pick another "
        "output_dir"
    )


def clear_stage_dir(stage_dir: Path) -> None:
    """Empty ``stage_dir`` for a run that starts over (``resume=fresh``)."""
    for child in stage_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def clear_unfinished(stage_dir: Path) -> None:
    """Drop what a killed run may have left: temp files/dirs, outputs of an older run.

    Outputs are only trusted with a ``metrics.json`` beside them; a resumed run rewrites them all. Half-written or
    damaged checkpoints are removed, each with a one-line warning, when the run picks the one it resumes
    (``StageRun.last_checkpoint``, stages/checkpoints.py).
    """
    for child in stage_dir.iterdir():
        if child.name.startswith(".") or child.name in ("metrics.json", *OUTPUT_DIRS):
            remove_path(child)


def checkpoint_steps(stage_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in ``stage_dir``, oldest first.

    HF Trainer writes ``trainer_state.json`` last, so a checkpoint whose state file parses is complete; our PPO loop
    writes its ``ppo_state.json`` last in the same way. (Whether its files are intact is checked when a run resumes:
    stages/checkpoints.py.)
    """
    return sorted(step for step, ok in _checkpoints(stage_dir) if ok)


def incomplete_checkpoints(stage_dir: Path) -> list[int]:
    return sorted(step for step, ok in _checkpoints(stage_dir) if not ok)


def _checkpoints(stage_dir: Path) -> list[tuple[int, bool]]:
    found = []
    if not stage_dir.is_dir():
        return found
    for path in stage_dir.iterdir():
        if (m := CHECKPOINT_NAME.match(path.name)) and path.is_dir():
            found.append((int(m.group(1)), _state_file_ok(path)))
    return found


def _state_file_ok(ckpt: Path) -> bool:
    for name in ("trainer_state.json", "ppo_state.json"):
        try:
            json.loads((ckpt / name).read_text(encoding="utf-8"))
            return True
        except (OSError, json.JSONDecodeError):
            continue
    return False


def previous_config(stage_dir: Path) -> dict | None:
    """What the last run in ``stage_dir`` recorded (``run_state.json``), or None when it left no record."""
    try:
        return json.loads((stage_dir / RUN_STATE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two nested configs."""

    def diff(a: dict, b: dict, prefix: str) -> list[str]:
        out = []
        for key in sorted(set(a) | set(b), key=str):
            x, y = a.get(key), b.get(key)
            if isinstance(x, dict) and isinstance(y, dict):
                out += diff(x, y, f"{prefix}{key}.")
            elif x != y:
                out.append(f"{prefix}{key}")
        return out

    return diff(old, new, "") or ["unknown"]


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def is_out_of_disk(err: BaseException, where: Path) -> bool:
    """Whether a failed save ran out of disk: safetensors and torch.save report it in their own words, if at all."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    text = str(err)
    if "No space left on device" in text or "os error 28" in text:
        return True
    try:
        return shutil.disk_usage(where).free < 1 << 20  # torch.save only says "unexpected pos ..."
    except OSError:
        return False


def out_of_disk(where: Path, err: BaseException) -> AlignmentError:
    reason = str(err).splitlines()[0] if str(err) else err.__class__.__name__
    return AlignmentError(
        f"out of disk space while saving to {where} ({reason}); nothing finished-looking was written. "
        "Free space (or set output_dir to a larger disk) and re-run the same command to resume from the last "
        "checkpoint"
    )

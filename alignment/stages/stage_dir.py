"""A stage's directory and what it records, owned by one object: :class:`StageDir`.

``<output_dir>/<stage>/`` holds ``config.yaml`` (the resolved config, secrets masked) and ``run_state.json``: the
hash of what the stage computes (its resolved config without plumbing, and its input models' files) and the config it
covers. A resume under another hash is refused; a finished stage (``metrics.json``) under the same hash is skipped; a
resumed run first drops what a killed run left. The hash is computed once per config object: the pipeline, the
command's "finished already?" check and the stage's own run all ask :meth:`StageDir.of` for it. Also here: telling an
out-of-disk failure from other I/O errors. The ``checkpoint-<step>/`` dirs themselves: stages/checkpoints.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
import weakref
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from alignment.atomic import write_atomic
from alignment.config import Resume, hashable
from alignment.distributed import is_main_process
from alignment.errors import AlignmentError
from alignment.secrets import scrub
from alignment.stages.checkpoints import checkpoint_steps, incomplete_checkpoints, newest_intact

log = logging.getLogger("alignment")

RUN_STATE = "run_state.json"
# Outputs of a finished stage; only trusted with metrics.json beside them.
OUTPUT_DIRS = ("model", "adapter", "value_model", "value_model_adapter")
# Settings that do not change what a stage computes: changing them never blocks a resume, nor reruns a pipeline step.
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
STAGE_BLOCKS = ("eval", "compare", "chat")
HASH_EXCLUDED_TRAINER = ("save_steps", "save_total_limit", "save_strategy", "logging_steps")
# Launch plumbing; machine_rank also differs between the machines of one multi-node run, which must agree on the hash.
HASH_EXCLUDED_DISTRIBUTED = ("machine_rank", "main_process_ip", "main_process_port", "dry_run", "launch_args")
# Config keys naming models and data the stage reads; their files (names, sizes, mtimes) are fingerprinted into the
# hash, so a stage re-run on a regenerated file (e.g. label on a new generations.jsonl) trains again.
_INPUT_KEYS = ("model.path", "ref_model", "value_model", "data.path")


def stage_config_hash(cfg: DictConfig) -> tuple[str, dict]:
    """A short hash of what a stage computes: its resolved config (secrets masked) and its input models' files;
    and the config it covers."""
    data = scrub(hashable(cfg))
    for key in HASH_EXCLUDED:
        data.pop(key, None)
    for key in STAGE_BLOCKS:
        if key != data.get("stage"):
            data.pop(key, None)
    for key in HASH_EXCLUDED_TRAINER:
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


# Config objects hashed ahead of their stage's run (by the pipeline, or the command's "finished already?" check):
# (a weak reference to it, its hashed keys as written, its hash). The run takes the hash from here instead of
# hashing (and fingerprinting the input files) again; taken, it is forgotten, as the run changes files a later run of
# the same object may read.
_HASHED: dict[int, tuple[weakref.ref, str, tuple[str, dict]]] = {}


def _hash_once(cfg: DictConfig, take: bool = False) -> tuple[str, dict]:
    """``stage_config_hash(cfg)``, computed once between the first ask and the stage run that ``take``s it (again
    if a hashed key of ``cfg`` changed in between)."""
    as_written = OmegaConf.to_container(cfg, resolve=False)
    guard = json.dumps({k: v for k, v in as_written.items() if k not in HASH_EXCLUDED}, sort_keys=True, default=str)
    key = id(cfg)
    known = _HASHED.pop(key, None) if take else _HASHED.get(key)
    if known is not None and known[0]() is cfg and known[1] == guard:
        return known[2]
    result = stage_config_hash(cfg)
    if not take:
        _HASHED[key] = (weakref.ref(cfg, lambda _: _HASHED.pop(key, None)), guard, result)
    return result


class StageDir:
    """``<output_dir>/<stage>/``: its config hash, what a run clears there, the config it records, its checkpoints,
    its finished metrics. Only rank 0 writes; every rank reads."""

    def __init__(self, path: Path, config_hash: str, hashed: dict) -> None:
        self.path = path
        self.config_hash = config_hash
        self.hashed = hashed  # the config the hash covers, as recorded in run_state.json

    @classmethod
    def of(cls, cfg: DictConfig, name: str | None = None, _take: bool = False) -> StageDir:
        """The stage dir of ``cfg`` (``<output_dir>/<step or stage>``) and its config hash; touches no file."""
        name = name or str(cfg.get("step") or cfg.stage)
        return cls(Path(cfg.output_dir) / name, *_hash_once(cfg, take=_take))

    @classmethod
    def prepare(cls, cfg: DictConfig, name: str | None = None, fresh: bool = False) -> StageDir:
        """The stage dir, ready for a run: emptied when ``fresh``; otherwise refused (AlignmentError) if it holds a
        run of another config, and rid of what a killed run left. Then ``config.yaml`` and ``run_state.json``."""
        state = cls.of(cfg, name, _take=True)
        state.path.mkdir(parents=True, exist_ok=True)
        if fresh:
            if is_main_process():
                state.clear()
        else:
            state.check_resumable()
            if is_main_process():
                state.clear_unfinished()
        if is_main_process():
            state.write_config(cfg)
        return state

    # -- what the last run recorded --------------------------------------------------------------------------------
    def previous_record(self) -> dict | None:
        """What the last run here recorded (``run_state.json``), or None when it left no record."""
        try:
            return json.loads((self.path / RUN_STATE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def finished_metrics(self) -> dict | None:
        """The metrics of a run that finished here under the same config and inputs (else None)."""
        metrics = self.path / "metrics.json"
        old = self.previous_record() if metrics.exists() else None
        if old is None or old.get("config_hash") != self.config_hash:
            return None
        try:
            return json.loads(metrics.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None

    def check_resumable(self) -> None:
        """Refuse to resume checkpoints (or overwrite outputs) that were made under another config or inputs."""
        if not checkpoint_steps(self.path) and not (self.path / "metrics.json").exists():
            return
        old = self.previous_record()
        if old is None or old.get("config_hash") == self.config_hash:
            return
        changed = changed_keys(old.get("config") or {}, self.hashed)
        raise AlignmentError(
            f"{self.path} holds a run made under a different config or inputs (changed: {', '.join(changed[:6])}); "
            "resuming it would mix the two. Re-run with resume=fresh to start this stage over, or pick another "
            "output_dir"
        )

    # -- what a run writes and clears ------------------------------------------------------------------------------
    def write_config(self, cfg: DictConfig) -> None:
        """Write ``config.yaml`` (resolved, secrets masked) and ``run_state.json`` (the hash and what it covers)."""
        text = OmegaConf.to_yaml(OmegaConf.create(scrub(OmegaConf.to_container(cfg, resolve=True))))
        write_atomic(self.path / "config.yaml", text)
        state = {"config_hash": self.config_hash, "config": self.hashed}
        write_atomic(self.path / RUN_STATE, json.dumps(state, indent=2, ensure_ascii=False, default=str) + "\n")

    def clear(self) -> None:
        """Empty the dir for a run that starts over (``resume=fresh``)."""
        for child in self.path.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def clear_unfinished(self) -> None:
        """Drop what a killed run may have left: temp files/dirs, outputs of an older run.

        Outputs are only trusted with a ``metrics.json`` beside them; a resumed run rewrites them all. Half-written or
        damaged checkpoints are removed, each with a one-line warning, when the run picks the one it resumes
        (:meth:`last_checkpoint`).
        """
        for child in self.path.iterdir():
            if child.name.startswith(".") or child.name in ("metrics.json", *OUTPUT_DIRS):
                remove_path(child)

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def last_checkpoint(self, model_only: bool = False) -> Path | None:
        """The newest intact ``checkpoint-<step>`` dir (stages/checkpoints.py), or None.

        Newer ones that are half-written or damaged are removed (by rank 0), each with a one-line warning saying why;
        with none intact left the stage starts from the beginning, and says so.
        """
        step, damaged = newest_intact(self.path, model_only=model_only)
        if is_main_process():
            for bad, reason in damaged:
                log.warning("%s: skipped checkpoint-%d, it cannot be resumed: %s; removed it", self.name, bad, reason)
                remove_path(self.path / f"checkpoint-{bad}")
            if damaged and step is None:
                log.warning("%s: no intact checkpoint left in %s; starting from the beginning", self.name, self.path)
        return self.path / f"checkpoint-{step}" if step is not None else None

    def out_of_disk(self, err: BaseException) -> AlignmentError | None:
        """When ``err`` (a failed training step or save) ran out of disk: the error to raise, after freeing what the
        failed checkpoint save took. None for any other error."""
        if not is_out_of_disk(err, self.path):
            return None
        for step in incomplete_checkpoints(self.path):
            remove_path(self.path / f"checkpoint-{step}")
        return out_of_disk(self.path, err)

    @property
    def name(self) -> str:
        return self.path.name


def finished_metrics(cfg: DictConfig, name: str | None = None) -> dict | None:
    """The metrics of this stage if it already finished under the same config and inputs (else None)."""
    if cfg.resume == Resume.fresh:
        return None
    return StageDir.of(cfg, name).finished_metrics()


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

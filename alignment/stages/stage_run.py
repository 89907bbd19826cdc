"""What every stage does the same way: output layout, TRL arguments, tracking, resume, saving and metrics.

A stage writes ``<output_dir>/<stage>/``: ``config.yaml`` (resolved, secrets scrubbed), ``train.log``,
``log_history.jsonl``, HF Trainer ``checkpoint-<step>/`` dirs while it trains, then ``model/`` and last of all
``metrics.json``. ``model/`` and ``metrics.json`` are written to temporary paths and renamed when complete, so a
killed run never leaves output that looks finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alignment.errors import AlignmentError
from alignment.launch import (
    barrier,
    defer_evaluation,
    forget_previous_stage,
    full_state_dict,
    gathered_params,
    is_main_process,
    merge_adapter,
    peak_rss_mb,
    trainer_values,
)
from alignment.secrets import SecretFilter, scrub

log = logging.getLogger("alignment")

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
RUN_STATE = "run_state.json"
# Outputs of a finished stage; only trusted with metrics.json beside them.
_OUTPUT_DIRS = ("model", "adapter", "value_model", "value_model_adapter")
# Settings that do not change what a stage computes: changing them never blocks a resume.
_HASH_EXCLUDED = ("debug", "resume", "output_dir", "pipeline", "tracking")
_HASH_EXCLUDED_TRAINER = ("save_steps", "save_total_limit", "save_strategy", "logging_steps")
# Launch plumbing; machine_rank also differs between the machines of one multi-node run, which must agree on the hash.
HASH_EXCLUDED_DISTRIBUTED = ("machine_rank", "main_process_ip", "main_process_port", "dry_run", "launch_args")
# Config keys naming models the stage reads; their files are fingerprinted into the hash.
_INPUT_KEYS = ("model.path", "ref_model", "value_model")


class StageRun:
    """One stage's run: its directory, its TRL arguments, its metrics."""

    def __init__(self, cfg: DictConfig, name: str | None = None) -> None:
        forget_previous_stage()  # a pipeline's earlier stage must not make this one's models load ZeRO-3-sharded
        self.cfg = cfg
        self.name = name or str(cfg.get("step") or cfg.stage)
        self.dir = Path(cfg.output_dir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics: dict[str, float] = {}
        if str(cfg.resume) not in ("auto", "fresh", "true", "false", "True", "False"):
            raise AlignmentError(f"resume='{cfg.resume}' must be auto (or true) or fresh (or false)")
        # Fail on a bad value before loading models or data, and before touching earlier output.
        validate_trainer_values(OmegaConf.to_container(cfg.trainer, resolve=True))
        self.config_hash, self._hashed = stage_config_hash(cfg)
        # Seed before the stage loads models: new heads (reward/value ``score``) and adapters (LoRA A) are initialised
        # at load or wrap time, before any Trainer seeds; unseeded, two runs of one config would differ.
        from transformers import set_seed

        set_seed(int(cfg.seed))
        if self.fresh:
            self._clear()
        else:
            self._check_resumable()
            self._clear_unfinished()
        self._write_config()
        self._log_handler = (
            logging.FileHandler(self.dir / "train.log", encoding="utf-8")
            if is_main_process()
            else logging.NullHandler()
        )
        self._log_handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        self._log_handler.addFilter(SecretFilter())
        logging.getLogger().addHandler(self._log_handler)

    @property
    def fresh(self) -> bool:
        return str(self.cfg.resume) in ("fresh", "false", "False")

    # -- layout -------------------------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    def _clear(self) -> None:
        if not is_main_process():  # only rank 0 touches files; the others wait for its outputs
            return
        for child in self.dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _write_config(self) -> None:
        if not is_main_process():
            return
        resolved = OmegaConf.to_container(self.cfg, resolve=True)
        text = OmegaConf.to_yaml(OmegaConf.create(scrub(resolved)))
        write_atomic(self.dir / "config.yaml", text)
        state = {"config_hash": self.config_hash, "config": self._hashed}
        write_atomic(self.dir / RUN_STATE, json.dumps(state, indent=2, ensure_ascii=False, default=str) + "\n")

    def _check_resumable(self) -> None:
        """Refuse to resume checkpoints (or overwrite outputs) that were made under another config or inputs."""
        if not checkpoint_steps(self.dir) and not (self.dir / "metrics.json").exists():
            return
        old = _previous_config(self.dir)
        if old is None or old.get("config_hash") == self.config_hash:
            return
        changed = _changed_keys(old.get("config") or {}, self._hashed)
        raise AlignmentError(
            f"{self.dir} holds a run made under a different config or inputs (changed: {', '.join(changed[:6])}); "
            "resuming it would mix the two. Re-run with resume=fresh to start this stage over, or pick another "
            "output_dir"
        )

    def _clear_unfinished(self) -> None:
        """Drop what a killed run may have left: temp files/dirs, half-written checkpoints, outputs of an older run.

        Outputs are only trusted with a ``metrics.json`` beside them; a resumed run rewrites them all.
        """
        if not is_main_process():
            return
        for child in self.dir.iterdir():
            if child.name.startswith(".") or child.name in ("metrics.json", *_OUTPUT_DIRS):
                _remove(child)
        for step in _incomplete_checkpoints(self.dir):
            _remove(self.dir / f"checkpoint-{step}")

    def last_checkpoint(self) -> str | None:
        """The newest complete ``checkpoint-<step>`` dir to resume from, unless ``resume=fresh``."""
        if self.fresh:
            return None
        steps = checkpoint_steps(self.dir)
        return str(self.dir / f"checkpoint-{steps[-1]}") if steps else None

    # -- TRL arguments ------------------------------------------------------------------------------------------
    def trainer_args(self, config_cls: type, **overrides: Any):
        """Build the stage's TRL config from ``trainer.*``, with output, seed and tracking set by the run."""
        values = OmegaConf.to_container(self.cfg.trainer, resolve=True)
        validate_trainer_values(values)
        # Pass only what differs from TRL's defaults: TRL then derives the rest itself, and deprecated aliases
        # (gradient_checkpointing -> activation_checkpointing) are not set twice.
        values = trainer_values(values, self.cfg.distributed)
        values = {k: v for k, v in values.items() if v != _trl_default(config_cls, k)}
        if values.get("bf16") is None and "bf16" in {f.name for f in dataclasses.fields(config_cls)}:
            values["bf16"] = _bf16_supported()
        values.update(
            output_dir=str(self.dir),
            seed=int(self.cfg.seed),
            report_to=self._report_to(),
            run_name=self.cfg.tracking.get("run_name") or f"{Path(self.cfg.output_dir).name}-{self.name}",
        )
        if any(f.name == "max_length" for f in dataclasses.fields(config_cls)):
            values["max_length"] = int(self.cfg.data.max_length)
        values.update(overrides)
        # HF pickles these arguments into every checkpoint (training_args.bin): no secret may ride along.
        values = scrub(values)
        try:
            return config_cls(**values)
        except (ValueError, TypeError) as err:
            raise AlignmentError(f"invalid trainer settings for stage {self.name}: {err}") from err

    def evaluate(self, trainer, suffix: str = "") -> None:
        """Held-out metrics of the trainer's model (same masks as training), recorded as ``<key><suffix>``."""
        if trainer.eval_dataset is not None:
            if defer_evaluation(trainer, lambda metrics: self.record(metrics, suffix)):
                return
            self.record(trainer.evaluate(), suffix)

    def measure_oracle(self, model, tokenizer, suffix: str = "") -> None:
        """Record ``oracle_reward<suffix>`` when the data has an oracle; keep the scored samples beside it."""
        from alignment.oracle_eval import oracle_reward

        # Every rank generates (ZeRO-3 needs them all for each forward); rank 0 keeps the samples.
        samples = self.dir / f"oracle_samples{suffix}.jsonl" if is_main_process() else None
        # A model loaded ZeRO-3-partitioned has no DeepSpeed engine to gather its layers (module ``ds_id``) until
        # training starts: gather it whole on each rank for this evaluation.
        with gathered_params(model) if not hasattr(model, "ds_id") else contextlib.nullcontext():
            value = oracle_reward(model, tokenizer, self.cfg, samples_path=samples)
        if value is not None:
            self.metrics[f"oracle_reward{suffix}"] = value

    def _report_to(self) -> str:
        backend = self.cfg.tracking.backend
        if backend == "none":
            return "none"
        if backend == "wandb":
            os.environ.setdefault("WANDB_PROJECT", str(self.cfg.tracking.project))
            os.environ.setdefault("WANDB_DIR", str(self.dir))
            if not _wandb_configured():
                os.environ["WANDB_MODE"] = "offline"
            return "wandb"
        if backend == "tensorboard":
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.dir / "runs")
            return "tensorboard"
        raise AlignmentError(f"tracking.backend='{backend}' must be none, wandb or tensorboard")

    # -- training ---------------------------------------------------------------------------------------------
    def train(self, trainer) -> None:
        """Train, resuming from the last checkpoint when there is one, and record the train metrics."""
        ckpt = self.last_checkpoint()
        if ckpt:
            step = int(_CHECKPOINT.match(Path(ckpt).name).group(1))
            log.info("resuming %s from %s", self.name, ckpt)
            self.metrics["resumed_from_step"] = step
        from alignment.callbacks import NonFiniteGuard

        trainer.add_callback(NonFiniteGuard(self.dir))
        try:
            result = trainer.train(resume_from_checkpoint=ckpt)
        except Exception as err:
            if is_out_of_disk(err, self.dir):
                for step in _incomplete_checkpoints(self.dir):  # free what the failed save took
                    _remove(self.dir / f"checkpoint-{step}")
                raise out_of_disk(self.dir, err) from err
            raise
        self.record({k: v for k, v in result.metrics.items() if k != "total_flos"})
        self.metrics["global_step"] = trainer.state.global_step
        tokens = getattr(trainer.state, "num_input_tokens_seen", 0) or 0
        runtime = result.metrics.get("train_runtime") or 0.0
        if tokens and runtime:
            self.metrics["tokens_per_second"] = tokens / runtime
        self.metrics["world_size"] = trainer.args.world_size
        args = trainer.args
        self.metrics["global_batch_size"] = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        self.metrics["peak_rss_mb"] = _peak_rss_all_ranks(trainer)
        log.info(
            "%s: world size %d, global batch size %d, peak RSS per rank %.0f MiB",
            self.name,
            args.world_size,
            self.metrics["global_batch_size"],
            self.metrics["peak_rss_mb"],
        )
        self._write_log_history(trainer.state.log_history)

    def record(self, metrics: dict[str, Any], suffix: str = "") -> None:
        """Keep the numeric metrics (``eval_loss`` -> ``eval_loss<suffix>``)."""
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            self.metrics[f"{key}{suffix}"] = value

    def _write_log_history(self, history: list[dict]) -> None:
        if not is_main_process():
            return
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in history)
        write_atomic(self.dir / "log_history.jsonl", text)

    # -- saving ------------------------------------------------------------------------------------------------
    def save_model(self, model, tokenizer, subdir: str = "model") -> Path:
        """Save model and tokenizer to ``<subdir>/`` atomically (a temp dir renamed when complete).

        A PEFT model also saves its adapter to ``adapter/`` (with the base model's id); with ``peft.merge=true``
        ``<subdir>/`` then holds the merged plain HF model, else (or for prompt learning, which cannot merge) the
        adapter, which ``load_causal_lm`` loads on its base.
        """
        if hasattr(model, "peft_config"):
            from alignment.adapters import can_merge

            self._save_dir(self.dir / ("adapter" if subdir == "model" else f"{subdir}_adapter"), model, tokenizer)
            if not self.cfg.peft.get("merge", True) or not can_merge(model):
                return self._save_dir(self.dir / subdir, model, tokenizer)
            model, state = merge_adapter(model)  # under ZeRO-3 the merge gathers the weights and returns them
            return self._save_dir(self.dir / subdir, model, tokenizer, state)
        return self._save_dir(self.dir / subdir, model, tokenizer)

    def _save_dir(self, target: Path, model, tokenizer, state: dict | None = None) -> Path:
        # Under ZeRO-3 every rank takes part in gathering the whole weights onto rank 0, which alone writes them.
        state = full_state_dict(model) if state is None else state
        if not is_main_process():
            barrier()  # wait for rank 0's files: the next stage reads them
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=self.dir))
        try:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            _replace_dir(tmp, target)
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_out_of_disk(err, self.dir):
                raise out_of_disk(target, err) from err
            if isinstance(err, OSError):
                raise AlignmentError(f"could not save the model to {target}: {err}") from err
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        barrier()
        return target

    def fit(self, trainer, tokenizer, oracle: bool = True) -> dict[str, float]:
        """The recipe every TRL stage shares: held-out metrics (and oracle reward) before, train (resuming when a
        checkpoint exists), the same after, save the model, write ``metrics.json``."""
        from alignment.adapters import count_parameters

        trainable, total = count_parameters(trainer.model)
        self.record({"trainable_params": trainable, "total_params": total})
        self.evaluate(trainer, suffix="_before")
        if oracle:
            self.measure_oracle(trainer.model, tokenizer, suffix="_before")
        self.train(trainer)
        self.evaluate(trainer)
        if oracle:
            self.measure_oracle(trainer.model, tokenizer)
        self.save_model(trainer.model, tokenizer)
        return self.finish()

    def finish(self) -> dict[str, float]:
        """Write ``metrics.json`` (atomically, last): the stage is complete."""
        if is_main_process():
            write_atomic(self.dir / "metrics.json", json.dumps(self.metrics, indent=2, sort_keys=True) + "\n")
        logging.getLogger().removeHandler(self._log_handler)
        self._log_handler.close()
        log.info("%s finished: %s", self.name, self.dir)
        return dict(self.metrics)


def _peak_rss_all_ranks(trainer) -> float:
    """The largest peak resident memory (MiB) over all ranks so far."""
    import torch

    acc = trainer.accelerator
    peak = torch.tensor([peak_rss_mb()], dtype=torch.float64, device=acc.device)
    return float(acc.gather(peak).max()) if acc.num_processes > 1 else float(peak)


def validate_trainer_values(values: dict[str, Any]) -> None:
    """Reject values TRL would accept silently but that cannot train."""
    for key in ("learning_rate", "value_learning_rate"):
        lr = values.get(key)
        if lr is not None and lr <= 0:
            raise AlignmentError(f"trainer.{key} must be positive, got {lr}")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        n = values.get(key)
        if n is not None and n <= 0:
            raise AlignmentError(f"trainer.{key} must be a positive integer, got {n}")


def _trl_default(config_cls: type, name: str) -> Any:
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return getattr(f.default, "value", f.default)
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return dataclasses.MISSING


def _bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def write_atomic(path: Path, text: str) -> None:
    """Write a text file through a temp file and rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise AlignmentError(f"could not write {path}: {err}") from err


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        old = dst.with_name(f".{dst.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _wandb_configured() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="ignore")


# -- resume bookkeeping -------------------------------------------------------------------------------------------
def stage_config_hash(cfg: DictConfig) -> tuple[str, dict]:
    """A short hash of what a stage computes: its resolved config (secrets masked) and its input models' files."""
    data = scrub(OmegaConf.to_container(cfg, resolve=True))
    for key in _HASH_EXCLUDED:
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
    files = sorted(p for p in local.iterdir() if p.is_file()) if local.is_dir() else [local]
    parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:16]


def finished_metrics(cfg: DictConfig, name: str | None = None) -> dict | None:
    """The metrics of this stage if it already finished under the same config and inputs (else None)."""
    if str(cfg.resume) in ("fresh", "false", "False"):
        return None
    stage_dir = Path(cfg.output_dir) / (name or str(cfg.get("step") or cfg.stage))
    metrics = stage_dir / "metrics.json"
    old = _previous_config(stage_dir) if metrics.exists() else None
    if old is None or old.get("config_hash") != stage_config_hash(cfg)[0]:
        return None
    try:
        return json.loads(metrics.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def checkpoint_steps(stage_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in ``stage_dir``, oldest first.

    HF Trainer writes ``trainer_state.json`` last, so a checkpoint whose state file parses is complete; our PPO loop
    writes its ``ppo_state.json`` last in the same way.
    """
    return sorted(step for step, ok in _checkpoints(stage_dir) if ok)


def _incomplete_checkpoints(stage_dir: Path) -> list[int]:
    return sorted(step for step, ok in _checkpoints(stage_dir) if not ok)


def _checkpoints(stage_dir: Path) -> list[tuple[int, bool]]:
    found = []
    if not stage_dir.is_dir():
        return found
    for path in stage_dir.iterdir():
        if (m := _CHECKPOINT.match(path.name)) and path.is_dir():
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


def _previous_config(stage_dir: Path) -> dict | None:
    """What the last run in ``stage_dir`` recorded (``run_state.json``), or None when it left no record."""
    try:
        return json.loads((stage_dir / RUN_STATE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _changed_keys(old: dict, new: dict) -> list[str]:
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


def _remove(path: Path) -> None:
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

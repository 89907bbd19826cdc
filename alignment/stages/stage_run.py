"""What every stage does the same way: output layout, TRL arguments, tracking, resume, saving and metrics.

A stage writes ``<output_dir>/<stage>/``: ``config.yaml`` (resolved, secrets scrubbed), ``train.log``,
``log_history.jsonl``, HF Trainer ``checkpoint-<step>/`` dirs while it trains, then ``model/`` and last of all
``metrics.json``. ``model/`` and ``metrics.json`` are written to temporary paths and renamed when complete, so a
killed run never leaves output that looks finished.
"""

from __future__ import annotations

import dataclasses
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
from alignment.secrets import scrub

log = logging.getLogger("alignment")

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class StageRun:
    """One stage's run: its directory, its TRL arguments, its metrics."""

    def __init__(self, cfg: DictConfig, name: str | None = None) -> None:
        self.cfg = cfg
        self.name = name or str(cfg.get("step") or cfg.stage)
        self.dir = Path(cfg.output_dir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics: dict[str, float] = {}
        if str(cfg.resume) not in ("auto", "fresh", "true", "false", "True", "False"):
            raise AlignmentError(f"resume='{cfg.resume}' must be auto (or true) or fresh (or false)")
        if self.fresh:
            self._clear()
        self._write_config()
        self._log_handler = logging.FileHandler(self.dir / "train.log", encoding="utf-8")
        self._log_handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        logging.getLogger().addHandler(self._log_handler)

    @property
    def fresh(self) -> bool:
        return str(self.cfg.resume) in ("fresh", "false", "False")

    # -- layout -------------------------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    def _clear(self) -> None:
        for child in self.dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _write_config(self) -> None:
        resolved = OmegaConf.to_container(self.cfg, resolve=True)
        text = OmegaConf.to_yaml(OmegaConf.create(scrub(resolved)))
        write_atomic(self.dir / "config.yaml", text)

    def last_checkpoint(self) -> str | None:
        """The newest ``checkpoint-<step>`` dir to resume from, unless ``resume=fresh``."""
        if self.fresh:
            return None
        steps = [int(m.group(1)) for p in self.dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
        for step in sorted(steps, reverse=True):
            ckpt = self.dir / f"checkpoint-{step}"
            if (ckpt / "trainer_state.json").exists():
                return str(ckpt)
        return None

    # -- TRL arguments ------------------------------------------------------------------------------------------
    def trainer_args(self, config_cls: type, **overrides: Any):
        """Build the stage's TRL config from ``trainer.*``, with output, seed and tracking set by the run."""
        values = OmegaConf.to_container(self.cfg.trainer, resolve=True)
        validate_trainer_values(values)
        # Pass only what differs from TRL's defaults: TRL then derives the rest itself, and deprecated aliases
        # (gradient_checkpointing -> activation_checkpointing) are not set twice.
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
        try:
            return config_cls(**values)
        except (ValueError, TypeError) as err:
            raise AlignmentError(f"invalid trainer settings for stage {self.name}: {err}") from err

    def evaluate(self, trainer, suffix: str = "") -> None:
        """Held-out metrics of the trainer's model (same masks as training), recorded as ``<key><suffix>``."""
        if trainer.eval_dataset is not None:
            self.record(trainer.evaluate(), suffix)

    def measure_oracle(self, model, tokenizer, suffix: str = "") -> None:
        """Record ``oracle_reward<suffix>`` when the data has an oracle; keep the scored samples beside it."""
        from alignment.oracle_eval import oracle_reward

        value = oracle_reward(model, tokenizer, self.cfg, samples_path=self.dir / f"oracle_samples{suffix}.jsonl")
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
        result = trainer.train(resume_from_checkpoint=ckpt)
        self.record({k: v for k, v in result.metrics.items() if k != "total_flos"})
        self.metrics["global_step"] = trainer.state.global_step
        tokens = getattr(trainer.state, "num_input_tokens_seen", 0) or 0
        runtime = result.metrics.get("train_runtime") or 0.0
        if tokens and runtime:
            self.metrics["tokens_per_second"] = tokens / runtime
        self.metrics["world_size"] = trainer.args.world_size
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
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in history)
        write_atomic(self.dir / "log_history.jsonl", text)

    # -- saving ------------------------------------------------------------------------------------------------
    def save_model(self, model, tokenizer, subdir: str = "model") -> Path:
        """Save model and tokenizer to ``<subdir>/`` atomically (a temp dir renamed when complete).

        A PEFT model also saves its adapter to ``adapter/`` (with the base model's id); with ``peft.merge=true``
        ``<subdir>/`` then holds the merged plain HF model, else the adapter.
        """
        if hasattr(model, "peft_config"):
            self._save_dir(self.dir / ("adapter" if subdir == "model" else f"{subdir}_adapter"), model, tokenizer)
            if not self.cfg.peft.get("merge", True):
                return self._save_dir(self.dir / subdir, model, tokenizer)
            model = model.merge_and_unload()
        return self._save_dir(self.dir / subdir, model, tokenizer)

    def _save_dir(self, target: Path, model, tokenizer) -> Path:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=self.dir))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            _replace_dir(tmp, target)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise AlignmentError(f"could not save the model to {target}: {err}") from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def finish(self) -> dict[str, float]:
        """Write ``metrics.json`` (atomically, last): the stage is complete."""
        write_atomic(self.dir / "metrics.json", json.dumps(self.metrics, indent=2, sort_keys=True) + "\n")
        logging.getLogger().removeHandler(self._log_handler)
        self._log_handler.close()
        log.info("%s finished: %s", self.name, self.dir)
        return dict(self.metrics)


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

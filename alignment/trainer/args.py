"""A stage's TRL arguments, built from ``trainer.*`` (TRL's own field names), and the tracking set-up they name.

Only values that differ from TRL's defaults are passed, so TRL derives the rest itself; output dir, seed, run name
and ``report_to`` come from the run. ``tracking.backend`` sets the environment wandb or TensorBoard read.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alignment.config import Tracker
from alignment.errors import AlignmentError
from alignment.launch import trainer_values
from alignment.progress import interactive
from alignment.secrets import scrub
from alignment.trainer.checks import library_message, validate_trainer_values


def trainer_args(cfg: DictConfig, name: str, stage_dir: Path, config_cls: type, **overrides: Any):
    """Build stage ``name``'s TRL config from ``trainer.*``, with output, seed and tracking set by the run."""
    values = OmegaConf.to_container(cfg.trainer, resolve=True)
    validate_trainer_values(values)
    # Pass only what differs from TRL's defaults: TRL then derives the rest itself, and deprecated aliases
    # (gradient_checkpointing -> activation_checkpointing) are not set twice.
    values = trainer_values(values, cfg.distributed)
    values = {k: v for k, v in values.items() if v != _trl_default(config_cls, k)}
    if values.get("bf16") is None and "bf16" in {f.name for f in dataclasses.fields(config_cls)}:
        values["bf16"] = _bf16_supported()
    values.update(
        output_dir=str(stage_dir),
        seed=int(cfg.seed),
        report_to=report_to(cfg, stage_dir),
        run_name=cfg.tracking.get("run_name") or f"{Path(cfg.output_dir).name}-{name}",
    )
    if any(f.name == "max_length" for f in dataclasses.fields(config_cls)):
        values["max_length"] = int(cfg.data.max_length)
    if values.get("disable_tqdm") is None and not interactive():
        values["disable_tqdm"] = True  # no bar redraws in a log file: ProgressLog prints plain lines instead
    values.update(overrides)
    # HF pickles these arguments into every checkpoint (training_args.bin): no secret may ride along.
    values = scrub(values)
    try:
        return config_cls(**values)
    except Exception as err:  # TRL's and transformers' own checks (__post_init__): ValueError mostly, not only
        raise AlignmentError(f"invalid trainer settings for stage {name}: {library_message(err, values)}") from err


def report_to(cfg: DictConfig, stage_dir: Path) -> str:
    """TRL's ``report_to`` for ``tracking.backend``, after setting the environment that backend reads (wandb runs
    offline unless logged in; TensorBoard writes ``<stage>/runs``)."""
    backend = Tracker(cfg.tracking.backend)  # the schema allows no other value
    if backend == Tracker.wandb:
        os.environ.setdefault("WANDB_PROJECT", str(cfg.tracking.project))
        os.environ.setdefault("WANDB_DIR", str(stage_dir))
        if not _wandb_configured():
            os.environ["WANDB_MODE"] = "offline"
    elif backend == Tracker.tensorboard:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(stage_dir / "runs")
    return backend.value


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


def _wandb_configured() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="ignore")

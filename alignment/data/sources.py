"""Pick a stage's train and held-out data from ``data.*``: the embedded default or the user's own."""

from __future__ import annotations

import logging
import math

from datasets import Dataset
from omegaconf import DictConfig, OmegaConf

from alignment.data.loading import MissingSplitError, load_dataset
from alignment.errors import AlignmentError
from alignment.paths import DATA_DIR

log = logging.getLogger("alignment.data")

# Which embedded folder serves each kind of data.
EMBEDDED = {"sft": "sft", "preference": "preference", "kto": "preference", "prompt": "prompts"}


def data_path(data_cfg: DictConfig, kind: str) -> str:
    """``data.path``, or the embedded dataset for this kind."""
    if data_cfg.path:
        return str(data_cfg.path)
    if kind not in EMBEDDED:
        raise AlignmentError(f"no embedded data for kind '{kind}'; set data.path")
    return str(DATA_DIR / EMBEDDED[kind])


def load_train_eval(data_cfg: DictConfig, kind: str, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """Train and held-out rows in canonical form; carve ``eval_fraction`` of train when there is no eval split."""
    path = data_path(data_cfg, kind)
    kwargs = {"kind": kind, "format": data_cfg.format, "on_error": str(data_cfg.on_error), **format_options(data_cfg)}
    train = load_dataset(path, split=data_cfg.train_split, **kwargs)
    held_out = None
    if data_cfg.eval_split:
        try:
            held_out = load_dataset(path, split=data_cfg.eval_split, **kwargs)
        except MissingSplitError:
            log.warning(
                "no '%s' split in %s: holding out %.0f%% of train",
                data_cfg.eval_split,
                path,
                100 * data_cfg.eval_fraction,
            )
    if held_out is None and data_cfg.eval_fraction > 0 and len(train) > 1:
        if math.ceil(len(train) * data_cfg.eval_fraction) >= len(train):
            raise AlignmentError(
                f"{path}: data.eval_fraction={data_cfg.eval_fraction} of its {len(train)} '{data_cfg.train_split}' "
                "rows holds out every one, leaving none to train on; lower data.eval_fraction or give an eval split"
            )
        parts = train.train_test_split(test_size=data_cfg.eval_fraction, seed=seed)
        train, held_out = parts["train"], parts["test"]
    train = _cap(train, data_cfg.max_train_rows, "max_train_rows", f"{path} ('{data_cfg.train_split}' split)")
    if held_out is not None:
        held_out = _cap(held_out, data_cfg.max_eval_rows, "max_eval_rows", f"{path} (held-out rows)")
    return train, held_out


def format_options(data_cfg: DictConfig) -> dict:
    """The ``data.*`` keys that shape how rows are read: column mapping, converter, label and tie choices, margin."""
    columns = data_cfg.get("columns")
    return {
        "columns": OmegaConf.to_container(columns) if isinstance(columns, DictConfig) else columns,
        "converter": data_cfg.get("converter"),
        "pku_label": data_cfg.get("pku_label", "better"),
        "ties": data_cfg.get("ties", "drop"),
        "margin": data_cfg.get("margin", True),
    }


def data_source(data_cfg: DictConfig, kind: str, rows: str) -> str:
    """Where a stage's rows come from, for messages: ``<data path> (<rows>)``, e.g. ``data/sft (train rows)``."""
    return f"{data_path(data_cfg, kind)} ({rows} rows)"


def _cap(ds: Dataset, n: int | None, key: str, source: str) -> Dataset:
    if n is not None and n < 1:
        raise AlignmentError(f"{source}: data.{key}={n} leaves no rows; give a positive number, or null for all")
    if len(ds) == 0:
        raise AlignmentError(f"{source}: no rows are left to use")
    return ds.select(range(min(n, len(ds)))) if n is not None else ds

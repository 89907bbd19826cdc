"""Applying the transforms to a preference stage's train rows, in order, and recording what each did: the records,
``transforms.json`` in the stage dir and the counts for ``metrics.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from datasets import Dataset

from alignment.data.transforms.catalog import TRANSFORMS
from alignment.data.transforms.rows import ROW_ID, Context, transform_rng
from alignment.data.transforms.validation import validate_transforms
from alignment.errors import AlignmentError

log = logging.getLogger("alignment.data")

RECORD_FILE = "transforms.json"


def apply_transforms(
    rows: Dataset, specs: Any, context: Context | None = None
) -> tuple[Dataset, list[dict[str, Any]]]:
    """Apply ``specs`` in order to the train rows; return the new rows and one record per transform.

    A record holds the name, parameters, rows in and out, and the row ids (index in ``rows``) changed, dropped and,
    for ``mix``, added. Rows keep their columns; mixed-in rows get the union of columns (missing values None).
    """
    ctx = context or Context()
    checked = validate_transforms(specs)
    if not checked:
        return rows, []
    current = [{**row, ROW_ID: i} for i, row in enumerate(rows.to_list())]
    records = []
    for i, item in enumerate(checked):
        name, params = item["name"], {k: v for k, v in item.items() if k != "name"}
        where = f"data.transforms[{i}] ({name})"
        try:
            result = TRANSFORMS[name].fn(current, params, transform_rng(ctx.seed, i), ctx)
        except ValueError as err:
            raise AlignmentError(f"{where}: {err}") from None
        record = {
            "index": i,
            "name": name,
            "params": params,
            "rows_in": len(current),
            "rows_out": len(result.rows),
            "changed": len(result.changed),
            "dropped": len(result.dropped),
            **({"added": len(result.added)} if name == "mix" else {}),
            **result.extra,
            "changed_ids": result.changed,
            "dropped_ids": result.dropped,
            **({"added_ids": result.added} if name == "mix" else {}),
        }
        records.append(record)
        log.info("%s: %d rows in, %d out, %d changed", where, len(current), len(result.rows), len(result.changed))
        if not result.rows:
            raise AlignmentError(
                f"{where} left no training rows (of {len(current)}); loosen its parameters or reorder the transforms"
            )
        current = result.rows
    return _to_dataset(current, rows), records


def _to_dataset(rows: list[dict], original: Dataset) -> Dataset:
    """The rows as a Dataset with ``_row_id`` as a column; the original column types when the columns match."""
    if set(rows[0]) == {*original.column_names, ROW_ID}:
        from datasets import Features, Value

        features = Features({**original.features, ROW_ID: Value("int64")})
        return Dataset.from_list(rows, features=features)
    return Dataset.from_list(rows)


def metrics_of(records: list[dict], rows_after: int) -> dict[str, int]:
    """Counts for ``metrics.json``: ``data_rows_after_transforms`` and per transform changed/dropped (added)."""
    out = {"data_rows_after_transforms": rows_after}
    for r in records:
        key = f"data_transform_{r['index']}_{r['name']}"
        out[f"{key}_changed"] = r["changed"]
        out[f"{key}_dropped"] = r["dropped"]
        if "added" in r:
            out[f"{key}_added"] = r["added"]
    return out


def write_record(stage_dir: Path, records: list[dict], rows_before: int, rows_after: int, seed: int) -> Path:
    """Write ``<stage_dir>/transforms.json`` atomically."""
    from alignment.atomic import write_atomic

    path = Path(stage_dir) / RECORD_FILE
    doc = {
        "seed": seed,
        "row_id": "index in the loaded train rows before any transform",
        "rows_before": rows_before,
        "rows_after": rows_after,
        "transforms": records,
    }
    write_atomic(path, json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n")
    return path


def oracle_eval_prompts(cfg) -> list | None:
    """The oracle-eval prompts when they are the embedded ones (the whole split ``oracle_eval.split``), else None."""
    oe = cfg.get("oracle_eval")
    if oe is None or not oe.get("enabled", True) or oe.get("path") or cfg.data.get("path"):
        return None
    from alignment.data.loading import MissingSplitError, load_dataset
    from alignment.paths import DATA_DIR

    try:
        return load_dataset(str(DATA_DIR / "prompts"), kind="prompt", split=str(oe.split))["prompt"]
    except MissingSplitError:
        return None


def transform_train_rows(cfg, train: Dataset, held_out: Dataset | None, stage_dir: Path) -> tuple[Dataset, dict]:
    """Apply ``cfg.data.transforms`` to the train rows of a preference stage, write ``transforms.json`` and return
    the rows (without the row-id column) and the metrics to record. Without transforms: the rows as they are."""
    specs = validate_transforms(cfg.data.get("transforms"))
    if not specs:
        return train, {}
    names = {s["name"] for s in specs}
    ctx = Context(
        seed=int(cfg.seed),
        held_out=held_out,
        oracle_prompts=oracle_eval_prompts(cfg) if "decontaminate" in names else None,
        data_format=str(cfg.data.format),
        on_error=str(cfg.data.on_error),
        max_length=int(cfg.data.max_length) if cfg.data.get("max_length") else None,
    )
    rows, records = apply_transforms(train, specs, ctx)
    from alignment.distributed import is_main_process

    if is_main_process():
        write_record(stage_dir, records, len(train), len(rows), int(cfg.seed))
    return rows.remove_columns([ROW_ID]), metrics_of(records, len(rows))

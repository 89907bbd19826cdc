"""Load a local file, a split directory, a saved dataset or a Hub dataset into canonical rows, with row-precise
errors and counted skips; ``data.columns`` and ``data.converter`` apply to each raw row before its format."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignment.data.formats import (
    CANONICAL_COLUMNS,
    FORMATS,
    KINDS,
    FormatOptions,
    RowError,
    RowFiltered,
    convert_row,
    detect_format,
    formats_that_fit,
)
from alignment.data.formats.custom import apply_converter, check_columns, load_converter, rename_columns
from alignment.data.readers import MissingSplitError, local_path_missing, read_source
from alignment.data.readers import peek_rows as _peek_raw
from alignment.errors import AlignmentError

if TYPE_CHECKING:  # datasets takes a second to import: only where rows become a Dataset
    import datasets

logger = logging.getLogger("alignment.data")

ON_ERROR = ("raise", "skip")
PKU_LABELS = ("better", "safer")
TIES = ("drop", "keep")
__all__ = ["MissingSplitError", "load_dataset", "load_dataset_with_report", "local_path_missing", "peek_rows"]


# ---------------------------------------------------------------------------------------------------------------
# Public API


def _kind_of(value: Any) -> str:
    # Arrow merges ints with floats but not with strings or bools, so only those mixes are errors.
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__


def _prepare(
    rows: list[tuple[int, Any]], columns: Mapping[str, str] | None, converter: str | None
) -> list[tuple[int, Any]]:
    """Apply ``data.columns`` then ``data.converter`` to each raw row; a failure stays with its row, to be reported."""
    mapping = check_columns(columns)
    function = load_converter(converter) if converter else None
    if not mapping and function is None:
        return rows
    out = []
    for number, raw in rows:
        try:
            if isinstance(raw, dict):
                raw = rename_columns(raw, mapping)
                raw = apply_converter(function, converter, raw) if function else raw
        except (RowError, RowFiltered) as e:
            raw = e
        out.append((number, raw))
    return out


def _check_choices(kind: str, format: str, on_error: str, pku_label: str, ties: str) -> None:
    if kind not in KINDS:
        raise AlignmentError(f"unknown data kind '{kind}'; use one of: {', '.join(KINDS)}.")
    if format != "auto" and format not in FORMATS:
        raise AlignmentError(f"unknown data.format '{format}'; use auto or one of: {', '.join(FORMATS)}.")
    if on_error not in ON_ERROR:
        raise AlignmentError(f"unknown data.on_error '{on_error}'; use 'raise' or 'skip'.")
    if pku_label not in PKU_LABELS:
        raise AlignmentError(f"unknown data.pku_label '{pku_label}'; use 'better' or 'safer'.")
    if ties not in TIES:
        raise AlignmentError(f"unknown data.ties '{ties}'; use 'drop' or 'keep'.")


def check_options(data: Mapping[str, Any]) -> None:
    """The ``data.*`` reading options, checked before anything loads: choices, the column mapping, the converter."""
    for key, allowed in (("pku_label", PKU_LABELS), ("ties", TIES)):
        value = data.get(key)
        if value is not None and value not in allowed:
            raise AlignmentError(f"data.{key}='{value}' must be one of: {', '.join(allowed)}")
    columns = data.get("columns")
    check_columns(dict(columns) if isinstance(columns, Mapping) else columns)
    if data.get("converter"):
        load_converter(str(data["converter"]))


def _fit_hint(raw: Any, fmt: str) -> str:
    """For a row the named format cannot read: the formats its columns do fit."""
    fits = [name for name in formats_that_fit([raw]) if name != fmt] if isinstance(raw, dict) else []
    if not fits:
        return ""
    return f" (data.format={fmt}; these columns fit {', '.join(fits)}: set data.format={fits[0]} or auto)"


def load_dataset_with_report(
    path: str | Path,
    kind: str = "sft",
    format: str = "auto",
    split: str = "train",
    on_error: str = "raise",
    seed: int = 0,
    *,
    columns: Mapping[str, str] | None = None,
    converter: str | None = None,
    pku_label: str = "better",
    ties: str = "drop",
    margin: bool = True,
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Load ``path`` as canonical rows for ``kind`` and report what was read, skipped and left out.

    ``seed`` shuffles the rows when kind=kto is derived from pairs, so a pair's two halves are not always
    neighbours. ``columns``, ``converter``, ``pku_label``, ``ties`` and ``margin`` are the ``data.*`` keys of the
    same names (docs/data.md). The report holds source, format, kind, rows_read, rows_out, skipped, reasons,
    first_errors, and ``left_out``: rows dropped on purpose (ties, multi-turn arena pairs, converter's None), by why.
    """
    _check_choices(kind, format, on_error, pku_label, ties)
    options = FormatOptions(pku_label=pku_label, ties=ties, margin=bool(margin))
    source, unit, rows = read_source(path, split)
    if not rows:
        raise AlignmentError(f"{source}: the dataset is empty (no rows).")
    rows = _prepare(rows, columns, converter)
    readable = [r for _, r in rows if isinstance(r, dict)]
    # With no readable row there is nothing to detect from: each row's own error is reported below.
    fmt = format if format != "auto" else detect_format(readable, source) if readable else "none"

    out: list[dict] = []
    reasons: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
    first_errors: list[str] = []
    column_types: dict[str, tuple[str, int]] = {}
    from_pairs = False
    for number, raw in rows:
        try:
            if isinstance(raw, RowError | RowFiltered):
                raise raw
            converted = convert_row(raw, fmt, kind, options)
            for key, value in (converted[0] if converted else {}).items():
                if key in CANONICAL_COLUMNS or value is None:
                    continue
                seen = column_types.setdefault(key, (_kind_of(value), number))
                if seen[0] != _kind_of(value):
                    raise RowError(
                        "wrong_type",
                        f"column '{key}' is a {_kind_of(value)} here but a {seen[0]} at {unit.format(seen[1])}",
                    )
        except RowFiltered as e:
            left_out[e.reason] += 1
            continue
        except RowError as e:
            hint = _fit_hint(raw, fmt) if format != "auto" and e.reason == "missing_field" else ""
            message = f"{source}, {unit.format(number)}: {e.message}{hint}"
            if on_error == "raise":
                raise AlignmentError(
                    f"{message}. Fix this row, or set data.on_error=skip to drop bad rows (they are counted)."
                ) from None
            reasons[e.reason] += 1
            if len(first_errors) < 5:
                first_errors.append(message)
            continue
        from_pairs = from_pairs or len(converted) > 1
        out.extend(converted)

    skipped = sum(reasons.values())
    if skipped:
        counts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        logger.warning(
            "Skipped %d of %d rows in %s: %s. First: %s", skipped, len(rows), source, counts, first_errors[0]
        )
    if left_out:
        counts = ", ".join(f"{n} {reason}" for reason, n in left_out.most_common())
        logger.info(
            "Left out %d of %d rows in %s on purpose: %s (docs/data.md)",
            sum(left_out.values()),
            len(rows),
            source,
            counts,
        )
    if not out:
        why = f"first problem: {first_errors[0]}" if first_errors else f"left out: {dict(left_out)}"
        raise AlignmentError(f"{source}: no usable rows ({skipped} skipped; {why}).")
    if kind == "kto" and from_pairs:
        random.Random(seed).shuffle(out)
    import datasets

    try:
        dataset = datasets.Dataset.from_list(out)
    except Exception as e:  # pyarrow type clashes that slipped past the per-column check
        raise AlignmentError(f"{source}: rows do not share one schema ({type(e).__name__}: {e}).") from e
    report = {
        "source": source,
        "format": fmt,
        "kind": kind,
        "rows_read": len(rows),
        "rows_out": len(out),
        "skipped": skipped,
        "reasons": dict(reasons),
        "first_errors": first_errors,
        "left_out": dict(left_out),
    }
    return dataset, report


def load_dataset(
    path: str | Path,
    kind: str = "sft",
    format: str = "auto",
    split: str = "train",
    on_error: str = "raise",
    seed: int = 0,
    **options: Any,
) -> datasets.Dataset:
    """Load ``path`` as canonical rows for ``kind``; see :func:`load_dataset_with_report` for the options and counts."""
    return load_dataset_with_report(path, kind, format, split, on_error, seed, **options)[0]


def peek_rows(
    path: str | Path, split: str = "train", n: int = 20, columns: Mapping[str, str] | None = None
) -> tuple[str, list[dict]] | None:
    """The first ``n`` rows of a local file, split dir or saved dataset, renamed by ``data.columns``, for checks
    before a run loads anything; None where that cannot be done cheaply (Hub ids, parquet)."""
    head = _peek_raw(path, split, n)
    mapping = check_columns(columns)
    if head is None or not mapping:
        return head
    renamed = []
    for row in head[1]:
        try:
            renamed.append(rename_columns(row, mapping))
        except RowError:
            continue  # reported with its row number when the run reads the file
    return head[0], renamed

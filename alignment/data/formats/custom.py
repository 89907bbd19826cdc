"""The no-code and the code way in for data no named format reads: ``data.columns`` renames columns, and
``data.converter`` (``module:function`` or ``path/to/file.py:function``) maps each raw row to a canonical one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from alignment.data.formats.fields import RowError, RowFiltered
from alignment.errors import AlignmentError
from alignment.user_code import load_function

Converter = Callable[[dict], "dict | None"]


def check_columns(columns: Mapping[str, Any] | None) -> dict[str, str]:
    """``data.columns`` as {column the format reads: column in the file}; both must be names."""
    if not columns:
        return {}
    if not isinstance(columns, Mapping):
        raise AlignmentError(
            f"data.columns must map a format's column to a column in the file, e.g. "
            f"data.columns={{prompt: question, chosen: good, rejected: bad}}; got {columns!r}"
        )
    out = {}
    for target, source in columns.items():
        if not isinstance(source, str) or not source:
            raise AlignmentError(f"data.columns.{target} must name a column in the file, got {source!r}")
        out[str(target)] = source
    return out


def rename_columns(row: dict, columns: dict[str, str]) -> dict:
    """Rename ``row``'s columns by ``data.columns``; a row missing a mapped column is a row error."""
    if not columns:
        return row
    missing = [source for source in columns.values() if source not in row]
    if missing:
        raise RowError(
            "missing_field",
            f"data.columns reads column(s) {missing}, which this row lacks (columns here: {sorted(row)})",
        )
    renamed = {k: v for k, v in row.items() if k not in columns.values()}
    renamed.update({target: row[source] for target, source in columns.items()})
    return renamed


def load_converter(spec: str) -> Converter:
    """Import ``module:function`` or ``path/to/file.py:function``; every failure names data.converter."""
    return load_function(spec, "data.converter", example="my_rows:to_messages")


def apply_converter(function: Converter, spec: str, row: dict) -> dict:
    """One raw row through the user's converter: None leaves the row out (counted), an exception is a row error."""
    try:
        out = function(row)
    except Exception as e:  # the user's code: its failure on one row is that row's error
        raise RowError("converter_error", f"data.converter {spec} failed: {type(e).__name__}: {e}") from None
    if out is None:
        raise RowFiltered("converter")
    if not isinstance(out, dict):
        raise RowError(
            "converter_error", f"data.converter {spec} must return a dict (a canonical row) or None, got {out!r:.80}"
        )
    return out

"""Load a local file, a local split directory or a Hub dataset into canonical rows, with row-precise errors.

JSON Lines is read line by line here (not by pyarrow) so a bad line is reported by its number and, with
``on_error="skip"``, dropped without losing the rest of the file.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignment.data.formats import CANONICAL_COLUMNS, FORMATS, KINDS, RowError, convert_row, detect_format
from alignment.errors import AlignmentError

if TYPE_CHECKING:  # datasets takes a second to import: only where rows become a Dataset
    import datasets

logger = logging.getLogger("alignment.data")

ON_ERROR = ("raise", "skip")
SUFFIXES = (".jsonl", ".json", ".parquet")
# owner/name or a bare canonical name: the shapes a Hub dataset id can take.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

Rows = list[tuple[int, Any]]  # (1-based line or row number, raw dict or the RowError found while reading it)


class MissingSplitError(AlignmentError):
    """The requested split does not exist; ``available`` lists the ones that do (callers may carve their own)."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available


# ---------------------------------------------------------------------------------------------------------------
# Readers: each returns (unit, rows); unit is a template for where a row is: "line {}" or "row {}".


def _read_jsonl(path: Path) -> tuple[str, Rows]:
    rows: Rows = []
    with open(path, "rb") as f:  # bytes, so one line of bad UTF-8 is reported instead of failing the file
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                rows.append((number, RowError("malformed_json", f"the line is not valid UTF-8 ({e.reason})")))
                continue
            line = line.lstrip("\ufeff") if number == 1 else line
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                snippet = line.strip()[:80]
                rows.append(
                    (number, RowError("malformed_json", f"malformed JSON ({e.msg}, column {e.colno}): {snippet}"))
                )
                continue
            rows.append((number, value if isinstance(value, dict) else _not_object(value)))
    return "line {}", rows


def _not_object(value: Any) -> RowError:
    return RowError("wrong_type", f"each row must be a JSON object, got {type(value).__name__}: {str(value)[:80]}")


def _read_json(path: Path) -> tuple[str, Rows]:
    with open(path, encoding="utf-8") as f:
        text = f.read().lstrip("\ufeff")
    if not text.lstrip().startswith("["):
        return _read_jsonl(path)  # .json files holding JSON Lines are common
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        # A broken array cannot be split into rows, so this is fatal even with on_error=skip.
        raise AlignmentError(
            f"{path}: malformed JSON array at line {e.lineno}, column {e.colno}: {e.msg}. "
            "Fix the file, or write it as JSON Lines (one object per line) so bad rows can be skipped."
        ) from None
    return "row {} of the JSON array", [
        (i, v if isinstance(v, dict) else _not_object(v)) for i, v in enumerate(values, 1)
    ]


def _read_parquet(path: Path) -> tuple[str, Rows]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        rows: Rows = []
        for batch in table.iter_batches(batch_size=1024):
            rows.extend(enumerate(batch.to_pylist(), start=len(rows) + 1))
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise AlignmentError(f"{path}: cannot read this parquet file ({type(e).__name__}: {e}).") from e
    return "row {}", rows


def _read_file(path: Path) -> tuple[str, Rows]:
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
    if path.suffix.lower() not in readers:
        raise AlignmentError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(SUFFIXES)}.")
    return readers[path.suffix.lower()](path)


def _read_hub(name: str, split: str) -> tuple[str, Rows]:
    import datasets

    try:
        data = datasets.load_dataset(name, split=split)
    except (ConnectionError, TimeoutError) as e:
        raise AlignmentError(
            f"could not reach the Hub for '{name}' (and no local file or directory has that path): {e}. "
            "Use a local .jsonl/.json/.parquet file or directory, or check the network."
        ) from None
    except FileNotFoundError as e:
        raise AlignmentError(f"'{name}' is neither a local file/directory nor a dataset on the Hub ({e}).") from None
    except ValueError as e:
        if "split" not in str(e).lower():
            raise
        listed = re.search(r"one of \[(.*?)\]", str(e))  # datasets: 'Unknown split "x". Should be one of [...]'
        available = re.findall(r"'([^']+)'", listed.group(1)) if listed else []
        raise MissingSplitError(
            f"Hub dataset '{name}' has no split '{split}'; splits: {available}.", available
        ) from None
    return "row {}", list(enumerate(data, start=1))


# ---------------------------------------------------------------------------------------------------------------
# Source resolution


def _split_files(directory: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for file in sorted(directory.iterdir()):
        if file.is_file() and file.suffix.lower() in SUFFIXES:
            found.setdefault(file.stem, []).append(file)
    return found


def _read_source(path: str | Path, split: str) -> tuple[str, str, Rows]:
    """Return (source description, unit, rows) for a file, a split directory or a Hub id."""
    local = Path(path).expanduser()
    if local.is_dir():
        splits = _split_files(local)
        if split not in splits:
            raise MissingSplitError(
                f"{local}: no '{split}' split (looked for {split}.jsonl, {split}.json, {split}.parquet); "
                f"splits found: {sorted(splits) or 'none'}.",
                sorted(splits),
            )
        if len(splits[split]) > 1:
            names = ", ".join(f.name for f in splits[split])
            raise AlignmentError(f"{local}: split '{split}' is in several files ({names}); keep only one.")
        file = splits[split][0]
        return (str(file), *_read_file(file))
    if local.is_file():
        # A single file is one split: 'train', or the split its name says (test.jsonl is the 'test' split).
        if split not in ("train", local.stem):
            raise MissingSplitError(
                f"{local}: a single file holds only the 'train' split, not '{split}'. "
                f"Point data.path at a directory with {split}.jsonl, or load this file with split='train'.",
                ["train"],
            )
        return (str(local), *_read_file(local))
    if local_path_missing(path):
        raise AlignmentError(f"data file not found: {local} (resolved to {local.absolute()}). Check data.path.")
    return (f"Hub dataset '{path}' split '{split}'", *_read_hub(str(path), split))


# ---------------------------------------------------------------------------------------------------------------
# Public API


def _kind_of(value: Any) -> str:
    # Arrow merges ints with floats but not with strings or bools, so only those mixes are errors.
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__


def load_dataset_with_report(
    path: str | Path,
    kind: str = "sft",
    format: str = "auto",
    split: str = "train",
    on_error: str = "raise",
    seed: int = 0,
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Load ``path`` as canonical rows for ``kind`` and report what was read and skipped.

    ``seed`` shuffles the rows when kind=kto is derived from preference pairs, so a pair's two halves are not
    always neighbours. The report holds source, format, kind, rows_read, rows_out, skipped, reasons, first_errors.
    """
    if kind not in KINDS:
        raise AlignmentError(f"unknown data kind '{kind}'; use one of: {', '.join(KINDS)}.")
    if format != "auto" and format not in FORMATS:
        raise AlignmentError(f"unknown data.format '{format}'; use auto or one of: {', '.join(FORMATS)}.")
    if on_error not in ON_ERROR:
        raise AlignmentError(f"unknown data.on_error '{on_error}'; use 'raise' or 'skip'.")

    source, unit, rows = _read_source(path, split)
    if not rows:
        raise AlignmentError(f"{source}: the dataset is empty (no rows).")
    fmt = format if format != "auto" else detect_format([r for _, r in rows if isinstance(r, dict)], source)

    out: list[dict] = []
    reasons: Counter[str] = Counter()
    first_errors: list[str] = []
    column_types: dict[str, tuple[str, int]] = {}
    from_pairs = False
    for number, raw in rows:
        try:
            if isinstance(raw, RowError):
                raise raw
            converted = convert_row(raw, fmt, kind)
            for key, value in converted[0].items():
                if key in CANONICAL_COLUMNS or value is None:
                    continue
                seen = column_types.setdefault(key, (_kind_of(value), number))
                if seen[0] != _kind_of(value):
                    raise RowError(
                        "wrong_type",
                        f"column '{key}' is a {_kind_of(value)} here but a {seen[0]} at {unit.format(seen[1])}",
                    )
        except RowError as e:
            message = f"{source}, {unit.format(number)}: {e.message}"
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
    if not out:
        raise AlignmentError(f"{source}: no usable rows ({skipped} skipped; first problem: {first_errors[0]}).")
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
    }
    return dataset, report


def load_dataset(
    path: str | Path,
    kind: str = "sft",
    format: str = "auto",
    split: str = "train",
    on_error: str = "raise",
    seed: int = 0,
) -> datasets.Dataset:
    """Load ``path`` as canonical rows for ``kind``; see :func:`load_dataset_with_report` for the skip counts."""
    return load_dataset_with_report(path, kind, format, split, on_error, seed)[0]


def local_path_missing(path: str | Path) -> bool:
    """Whether ``path`` names a local file or dir that is not there (rather than a Hub dataset id)."""
    local, text = Path(path).expanduser(), str(path)
    if local.exists():
        return False
    return (
        local.suffix.lower() in SUFFIXES
        or local.is_absolute()
        or text.startswith((".", "~"))
        or not _HUB_ID.match(text)
    )


def peek_rows(path: str | Path, split: str = "train", n: int = 20) -> tuple[str, list[dict]] | None:
    """The first ``n`` JSON objects of a local JSON Lines or JSON file (or of a split dir's file), cheaply, for
    checks before a run loads anything; None where that cannot be done cheaply (Hub ids, parquet)."""
    local = Path(path).expanduser()
    if local.is_dir():
        files = _split_files(local).get(split) or []
        if len(files) != 1:
            return None
        local = files[0]
    if not local.is_file() or local.suffix.lower() not in (".jsonl", ".json"):
        return None
    with open(local, "rb") as f:
        head = f.read(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
    if head.startswith("["):
        _, rows = _read_json(local)
    else:
        rows = []
        with open(local, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if len(rows) >= n:
                    break
                line = raw.decode("utf-8", errors="replace").strip()
                if line:
                    try:
                        value = json.loads(line.lstrip("\ufeff"))
                    except json.JSONDecodeError:
                        continue  # reported with its line number when the run reads the file
                    rows.append((number, value))
    return str(local), [row for _, row in rows[:n] if isinstance(row, dict)]

"""Read raw rows from a local file (JSON Lines, JSON, parquet, CSV), a split directory, a saved ``datasets`` dir or
a Hub dataset, each row with its line or row number.

JSON Lines is read line by line here (not by pyarrow) so a bad line is reported by its number and, with
``on_error="skip"``, dropped without losing the rest of the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from alignment.data.formats import RowError
from alignment.errors import AlignmentError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# Files ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` write: their dirs are read whole.
SAVED_DATASET = "state.json"
SAVED_DATASET_DICT = "dataset_dict.json"
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


def _read_csv(path: Path) -> tuple[str, Rows]:
    """CSV through pandas (the parser ``datasets``' csv loader uses): numbers and booleans typed, empty cells None."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise AlignmentError(f"{path}: cannot read this CSV file ({type(e).__name__}: {e}).") from None
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return "row {} (after the header)", list(enumerate(records, start=1))


def _read_file(path: Path) -> tuple[str, Rows]:
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}
    if path.suffix.lower() not in readers:
        raise AlignmentError(
            f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(SUFFIXES)}, or a directory "
            "written by datasets' save_to_disk."
        )
    return readers[path.suffix.lower()](path)


def is_saved_dataset(directory: Path) -> bool:
    """Whether ``directory`` was written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return (directory / SAVED_DATASET).is_file() or (directory / SAVED_DATASET_DICT).is_file()


def _load_saved(directory: Path, split: str):
    """The split of a saved Dataset (one split: 'train' or any name) or DatasetDict (its own splits)."""
    import datasets

    try:
        saved = datasets.load_from_disk(str(directory))
    except Exception as e:  # datasets raises several types for a damaged dir
        raise AlignmentError(f"{directory}: cannot read this saved dataset ({type(e).__name__}: {e}).") from e
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise MissingSplitError(
                f"{directory}: the saved DatasetDict has no '{split}' split; splits: {sorted(saved)}.", sorted(saved)
            )
        return saved[split]
    if split != "train":
        raise MissingSplitError(
            f"{directory}: a saved Dataset (not a DatasetDict) holds only the 'train' split, not '{split}'.",
            ["train"],
        )
    return saved


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


def read_source(path: str | Path, split: str) -> tuple[str, str, Rows]:
    """Return (source description, unit, rows) for a file, a split directory or a Hub id."""
    local = Path(path).expanduser()
    if local.is_dir() and is_saved_dataset(local):
        return f"{local} (split '{split}')", "row {}", list(enumerate(_load_saved(local, split), start=1))
    if local.is_dir():
        splits = _split_files(local)
        if split not in splits:
            raise MissingSplitError(
                f"{local}: no '{split}' split (looked for {', '.join(split + s for s in SUFFIXES)}); "
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
    """The first ``n`` rows of a local file, split dir or saved dataset, cheaply, for checks before a run loads
    anything; None where that cannot be done cheaply (Hub ids, parquet)."""
    local = Path(path).expanduser()
    if local.is_dir() and is_saved_dataset(local):
        try:
            saved = _load_saved(local, split)
        except AlignmentError:
            return None  # reported when the run reads it
        return str(local), [dict(row) for row in saved.select(range(min(n, len(saved))))]
    if local.is_dir():
        files = _split_files(local).get(split) or []
        if len(files) != 1:
            return None
        local = files[0]
    if local.is_file() and local.suffix.lower() == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(local, keep_default_na=False, na_values=[""], nrows=n)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            return None
        return str(local), frame.astype(object).where(frame.notna(), None).to_dict("records")
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

"""Output that is either complete or absent: files and directories are written aside and renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from alignment.errors import AlignmentError


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


def replace_dir(src: Path, dst: Path) -> None:
    """Put the finished directory ``src`` at ``dst``, swapping out any old one by renames."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)

"""Dataset formats: detect a raw row's layout and convert it into the canonical rows every stage consumes.

Each format has one converter (raw row -> :class:`Record`, a format-free shape; ``chat_formats`` and
``preference_formats``), ``detect`` picks a format from a file's first rows, and :func:`convert_row` turns a record
into canonical rows for a ``kind``. Problems with one row raise :class:`RowError`; the loader adds the file and line,
and decides whether to raise or skip. ``custom`` holds ``data.columns`` and ``data.converter``.
"""

from __future__ import annotations

from alignment.data.formats.canonical import CANONICAL_COLUMNS, KINDS, convert_row
from alignment.data.formats.detect import FORMATS, Format, detect_format, formats_that_fit
from alignment.data.formats.fields import ROLE_ALIASES, ROLES, FormatOptions, Record, RowError, RowFiltered

__all__ = [
    "CANONICAL_COLUMNS",
    "FORMATS",
    "KINDS",
    "ROLES",
    "ROLE_ALIASES",
    "Format",
    "FormatOptions",
    "Record",
    "RowError",
    "RowFiltered",
    "convert_row",
    "detect_format",
    "formats_that_fit",
]

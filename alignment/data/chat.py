"""Deprecated: chat encoding (tokens + loss masks) moved to :mod:`alignment.data.encode`."""

from __future__ import annotations

import warnings

from alignment.data import encode as _encode

warnings.warn(
    "alignment.data.chat is deprecated; import alignment.data.encode (or encode_chat etc. from alignment.data)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_encode, name)

"""Deprecated: the oracle moved to :mod:`alignment.oracle` (its rules to ``alignment.oracle.rules``)."""

from __future__ import annotations

import warnings

from alignment.oracle import rules as _rules

warnings.warn(
    "alignment.data.oracle is deprecated; import alignment.oracle (or alignment.oracle.rules) instead",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    return getattr(_rules, name)

"""What every transform works with: the row id, the context besides the rows, a transform's result, and the row
helpers (reply text, prompt keys, swapping a pair's sides, each transform's random stream)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset

ROW_ID = "_row_id"


@dataclass
class Context:
    """What some transforms need besides the train rows: held-out prompts, the data settings, the seed."""

    seed: int = 0
    held_out: Dataset | None = None
    oracle_prompts: list | None = None  # the oracle-eval prompts, when they are the embedded ones
    data_format: str = "auto"
    on_error: str = "raise"
    max_length: int | None = None


@dataclass
class Result:
    """One transform's output rows and what it did to them (row ids)."""

    rows: list[dict]
    changed: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    added: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def reply_text(reply: Any) -> str:
    """The text of a reply: its messages' contents joined (or the string itself)."""
    if isinstance(reply, str):
        return reply
    return "\n".join(str(m.get("content") or "") for m in reply or [])


def prompt_key(prompt: Any, match: str = "prompt") -> str:
    """A prompt as compared by ``decontaminate``: the whole prompt's text (or its last user turn), case and
    whitespace folded."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt or [])
    if match == "last_user":
        users = [m for m in messages if m.get("role") == "user"]
        messages = users[-1:] if users else messages[-1:]
    text = "\n".join(f"{m.get('role')}: {m.get('content') or ''}" for m in messages)
    return re.sub(r"\s+", " ", text).strip().casefold()


def side_columns(columns: list[str]) -> list[tuple[str, str]]:
    """Per-side columns that travel with their reply, e.g. (``score_chosen``, ``score_rejected``)."""
    pairs = []
    for name in columns:
        if name != "chosen" and "chosen" in name and (other := name.replace("chosen", "rejected")) in columns:
            pairs.append((name, other))
    return pairs


def swap_sides(row: dict) -> dict:
    """The pair with chosen and rejected exchanged, with their per-side columns; a ``margin`` column is negated."""
    out = dict(row)
    out["chosen"], out["rejected"] = row["rejected"], row["chosen"]
    for a, b in side_columns(list(row)):
        out[a], out[b] = row[b], row[a]
    if isinstance(row.get("margin"), int | float) and not isinstance(row.get("margin"), bool):
        out["margin"] = -row["margin"]
    return out


def transform_rng(seed: int, position: int) -> np.random.Generator:
    """The random stream of the transform at ``position``: independent of every other position's."""
    return np.random.default_rng([int(seed), int(position)])

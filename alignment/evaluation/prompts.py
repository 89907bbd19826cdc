"""The prompts an evaluation asks: held-out prompts (with their oracle), the user's own, and the built-in identity
questions that show at a glance whether a model knows who it is."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from alignment.errors import AlignmentError
from alignment.paths import DATA_DIR

log = logging.getLogger("alignment")

# Asked by stage=compare by default: identity in English and Chinese, and one everyday question (answer in English).
BUILTIN_PROMPTS: list[tuple[str, dict]] = [
    ("Who are you?", {"task": "identity", "ask_maker": False}),
    ("你是谁？", {"task": "identity", "ask_maker": False}),
    ("How do I train my dog to sit?", {"task": "chat", "rule": "language", "lang": "en"}),
]


def as_messages(prompt) -> list[dict]:
    """A prompt as a message list: a string becomes one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    prompt = OmegaConf.to_container(prompt, resolve=True) if OmegaConf.is_config(prompt) else prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        return [dict(m) for m in prompt]
    raise AlignmentError(f"compare.prompts: {prompt!r} is neither a string nor a list of {{role, content}} messages")


def held_out_prompts(cfg: DictConfig, n: int):
    """Up to ``n`` held-out prompt rows (``prompt`` and, on the embedded data, ``oracle``): the prompt set
    ``oracle_eval.*`` names, else the held-out split of the user's ``data.*``; None when there is none."""
    from alignment.data import load_dataset, load_train_eval

    if n <= 0:
        return None
    oe = cfg.oracle_eval
    if oe.path is not None or not cfg.data.path:
        rows = load_dataset(str(oe.path or DATA_DIR / "prompts"), kind="prompt", split=oe.split)
    else:
        rows = load_train_eval(cfg.data, kind="prompt", seed=int(cfg.seed))[1]
        if rows is None:
            return None
    return rows.select(range(min(n, len(rows))))


def prompts_from_file(path: str) -> list[tuple[list[dict], str | None]]:
    """(messages, oracle) of each row of a json/jsonl prompt file (a ``prompt`` column, as the data layer reads)."""
    from alignment.data import load_dataset

    if not Path(path).expanduser().exists():
        raise AlignmentError(f"compare.prompts_file={path} does not exist; give a json or jsonl file of prompts")
    rows = load_dataset(str(Path(path).expanduser()), kind="prompt")
    oracles = rows["oracle"] if "oracle" in rows.column_names else [None] * len(rows)
    return list(zip(rows["prompt"], oracles, strict=True))


def compare_prompts(cfg: DictConfig) -> list[tuple[list[dict], str | None]]:
    """(messages, oracle JSON or None) for each prompt of ``stage=compare``: the user's (``compare.prompts``, then
    ``compare.prompts_file``), the built-in questions (``compare.builtin``), then ``compare.held_out`` held-out ones."""
    cc = cfg.compare
    out = [(as_messages(p), None) for p in cc.prompts]
    if cc.prompts_file:
        out += prompts_from_file(str(cc.prompts_file))
    if cc.builtin:
        out += [(as_messages(text), json.dumps(spec)) for text, spec in BUILTIN_PROMPTS]
    try:
        rows = held_out_prompts(cfg, int(cc.held_out))
    except AlignmentError as err:  # e.g. data a prompt cannot be read from: the comparison goes on without them
        log.warning("compare: no held-out prompts: %s", err)
        rows = None
    if rows is not None:
        oracles = rows["oracle"] if "oracle" in rows.column_names else [None] * len(rows)
        out += list(zip(rows["prompt"], oracles, strict=True))
    if not out:
        raise AlignmentError(
            "stage=compare has no prompts: set compare.prompts=[...], compare.prompts_file=..., compare.builtin=true "
            "or compare.held_out=N"
        )
    return out

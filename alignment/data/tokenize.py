"""Whole datasets through the chat encoding: map with a progress bar, then drop and count unusable rows.

A row left with nothing to train (e.g. truncation removed every assistant token) is dropped and counted in the
returned stats, never trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from datasets import Dataset

from alignment.data.encode import _check_train_on, _encode_prompt, encode_chat_with_info, encode_preference_with_info
from alignment.errors import AlignmentError

logger = logging.getLogger("alignment.data")

_DROPPED = {
    "dropped_no_trainable_tokens": "rows with nothing to train",
    "dropped_too_long": "pairs whose prompt was truncated away",
    "dropped_empty": "empty prompts",
}


def _map_and_drop(
    dataset: Dataset,
    what: str,
    needs: list[str],
    keep: tuple[str, ...],
    encode: Callable[[dict], tuple[dict, bool, int]],
    num_proc: int | None,
    drop_reason: str,
    source: str | None = None,
    why_empty: Callable[[dict[str, int]], str] = lambda stats: "every row was dropped",
) -> tuple[Dataset, dict[str, int]]:
    """Run ``encode(row) -> (columns, truncated, usable)`` over the rows; rows with ``usable == 0`` are dropped."""
    missing = [c for c in needs if c not in dataset.column_names]
    if missing:
        raise AlignmentError(
            f"{what} tokenization needs column(s) {missing}, the dataset has {dataset.column_names}; load it through"
            " alignment.data.load_dataset so rows are converted to the canonical format"
        )

    def row_fn(row: dict, idx: int) -> dict:
        try:
            columns, truncated, usable = encode(row)
        except AlignmentError as err:  # say which row, the message says what is wrong with it
            raise AlignmentError(f"{what} dataset, row {idx}: {err}") from None
        return {**columns, "_truncated": truncated, "_usable": usable}

    if len(dataset) == 0:
        raise AlignmentError(f"{source or f'the {what} dataset'}: no rows to tokenize")
    drop = [c for c in dataset.column_names if c not in keep]
    mapped = dataset.map(row_fn, with_indices=True, remove_columns=drop, num_proc=num_proc, desc=f"Tokenizing {what}")
    desc = "Dropping " + _DROPPED[drop_reason]
    kept = mapped.filter(lambda n: n > 0, input_columns="_usable", num_proc=num_proc, desc=desc)
    n = len(dataset)
    stats = {"rows": n, "kept": len(kept), "truncated": sum(mapped["_truncated"]), drop_reason: n - len(kept)}
    if len(kept) == 0:
        raise AlignmentError(f"{source or f'the {what} dataset'}: {why_empty(stats)}")
    return kept.remove_columns(["_truncated", "_usable"]), stats


def tokenize_sft(
    dataset: Dataset,
    tokenizer,
    max_length: int | None = None,
    train_on: str = "assistant",
    num_proc: int | None = None,
    source: str | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Encode a ``messages`` dataset into ``input_ids``/``labels``; rows left with nothing to train are dropped.

    Stats: ``rows`` in, ``kept``, ``truncated`` (rows cut at ``max_length``, kept or not) and
    ``dropped_no_trainable_tokens``. When no row is left, the error names ``source`` (the file) and why.
    """
    _check_train_on(train_on)

    def encode(row: dict):
        enc, info = encode_chat_with_info(tokenizer, row["messages"], max_length, train_on, tools=row.get("tools"))
        return enc, info.truncated, info.trainable

    def why(stats: dict[str, int]) -> str:
        n, cut = stats["rows"], stats["truncated"]
        if cut == n and max_length:
            return (
                f"every row is longer than data.max_length={max_length} tokens and is cut before any reply token "
                "to train on (the prompt alone fills it); raise data.max_length"
            )
        if cut and max_length:
            return (
                f"no row has a token to train on: {cut} of the {n} rows are cut at data.max_length={max_length} "
                f"before their first trained reply, the rest have no reply under data.train_on={train_on}; raise "
                "data.max_length"
            )
        return f"none of its {n} rows has a reply token to train on under data.train_on={train_on}"

    return _map_and_drop(
        dataset, "SFT", ["messages"], (), encode, num_proc, "dropped_no_trainable_tokens", source, why
    )


def tokenize_preference(
    dataset: Dataset,
    tokenizer,
    max_length: int | None = None,
    num_proc: int | None = None,
    source: str | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Encode ``prompt``/``chosen``/``rejected`` into ``prompt_ids``/``chosen_ids``/``rejected_ids``.

    ``oracle`` and ``margin`` (a reward-model margin per pair) columns are kept when present, the margin only when
    every pair has one.

    Stats: ``rows``, ``kept``, ``truncated`` and ``dropped_too_long``: pairs whose prompt was truncated away. When no
    pair is left, the error names ``source`` (the file) and why.
    """

    def encode(row: dict):
        enc, info = encode_preference_with_info(
            tokenizer, row["prompt"], row["chosen"], row["rejected"], max_length, tools=row.get("tools")
        )
        return enc, info.truncated, min(info.prompt_tokens, info.chosen_tokens, info.rejected_tokens)

    def why(stats: dict[str, int]) -> str:
        if not (stats["truncated"] and max_length):
            return f"every one of its {stats['rows']} pairs has an empty prompt or reply"
        # Truncation keeps the replies whole and cuts the prompt from the left: a pair is dropped when its longer
        # reply alone takes every token.
        return (
            f"every pair is longer than data.max_length={max_length} tokens: its longer reply alone fills it, leaving "
            f"no room for the prompt ({stats['rows']} pairs dropped); raise data.max_length"
        )

    needs = ["prompt", "chosen", "rejected"]
    keep = ("oracle", "margin") if _margins_complete(dataset, source) else ("oracle",)
    return _map_and_drop(dataset, "preference", needs, keep, encode, num_proc, "dropped_too_long", source, why)


def _margins_complete(dataset: Dataset, source: str | None) -> bool:
    """Whether every pair has a numeric ``margin``: the reward loss takes one per pair or none at all."""
    if "margin" not in dataset.column_names:
        return False
    missing = sum(value is None for value in dataset["margin"])
    if missing:
        logger.warning(
            "%s: %d of %d pairs have no margin (no scores to derive it from), so the margin column is not used",
            source or "the preference dataset",
            missing,
            len(dataset),
        )
    return not missing


def tokenize_prompts(
    dataset: Dataset,
    tokenizer,
    max_length: int | None = None,
    num_proc: int | None = None,
    source: str | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Encode ``prompt`` (messages or a string) into ``prompt_ids`` with the generation prompt, for PPO/GRPO.

    ``prompt`` and ``oracle`` columns are kept; ``max_length`` keeps the last tokens of a prompt. Stats: ``rows``,
    ``kept``, ``truncated``, ``dropped_empty``. When no prompt is left, the error names ``source`` and why.
    """

    def encode(row: dict):
        ids, truncated = _encode_prompt(tokenizer, row["prompt"], max_length, row.get("tools"))
        return {"prompt_ids": ids}, truncated, len(ids)

    def why(stats: dict[str, int]) -> str:
        return f"every one of its {stats['rows']} prompts encodes to no tokens (empty prompts)"

    keep = ("prompt", "oracle")
    return _map_and_drop(dataset, "prompt", ["prompt"], keep, encode, num_proc, "dropped_empty", source, why)

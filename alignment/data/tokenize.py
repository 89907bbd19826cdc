"""Whole datasets through the chat encoding: map with a progress bar, then drop and count unusable rows.

A row left with nothing to train (e.g. truncation removed every assistant token) is dropped and counted in the
returned stats, never trained on.
"""

from __future__ import annotations

from collections.abc import Callable

from datasets import Dataset

from alignment.data.chat import _check_train_on, _encode_prompt, encode_chat_with_info, encode_preference_with_info
from alignment.errors import AlignmentError

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

    drop = [c for c in dataset.column_names if c not in keep]
    mapped = dataset.map(row_fn, with_indices=True, remove_columns=drop, num_proc=num_proc, desc=f"Tokenizing {what}")
    desc = "Dropping " + _DROPPED[drop_reason]
    kept = mapped.filter(lambda n: n > 0, input_columns="_usable", num_proc=num_proc, desc=desc)
    n = len(dataset)
    stats = {"rows": n, "kept": len(kept), "truncated": sum(mapped["_truncated"]), drop_reason: n - len(kept)}
    return kept.remove_columns(["_truncated", "_usable"]), stats


def tokenize_sft(
    dataset: Dataset,
    tokenizer,
    max_length: int | None = None,
    train_on: str = "assistant",
    num_proc: int | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Encode a ``messages`` dataset into ``input_ids``/``labels``; rows left with nothing to train are dropped.

    Stats: ``rows`` in, ``kept``, ``truncated`` (rows cut at ``max_length``, kept or not) and
    ``dropped_no_trainable_tokens``.
    """
    _check_train_on(train_on)

    def encode(row: dict):
        enc, info = encode_chat_with_info(tokenizer, row["messages"], max_length, train_on)
        return enc, info.truncated, info.trainable

    return _map_and_drop(dataset, "SFT", ["messages"], (), encode, num_proc, "dropped_no_trainable_tokens")


def tokenize_preference(
    dataset: Dataset, tokenizer, max_length: int | None = None, num_proc: int | None = None
) -> tuple[Dataset, dict[str, int]]:
    """Encode ``prompt``/``chosen``/``rejected`` into ``prompt_ids``/``chosen_ids``/``rejected_ids``.

    ``oracle`` and ``margin`` (a reward-model margin per pair) columns are kept when present.

    Stats: ``rows``, ``kept``, ``truncated`` and ``dropped_too_long``: pairs whose prompt was truncated away.
    """

    def encode(row: dict):
        enc, info = encode_preference_with_info(tokenizer, row["prompt"], row["chosen"], row["rejected"], max_length)
        return enc, info.truncated, min(info.prompt_tokens, info.chosen_tokens, info.rejected_tokens)

    needs = ["prompt", "chosen", "rejected"]
    return _map_and_drop(dataset, "preference", needs, ("oracle", "margin"), encode, num_proc, "dropped_too_long")


def tokenize_prompts(
    dataset: Dataset, tokenizer, max_length: int | None = None, num_proc: int | None = None
) -> tuple[Dataset, dict[str, int]]:
    """Encode ``prompt`` (messages or a string) into ``prompt_ids`` with the generation prompt, for PPO/GRPO.

    ``prompt`` and ``oracle`` columns are kept; ``max_length`` keeps the last tokens of a prompt. Stats: ``rows``,
    ``kept``, ``truncated``, ``dropped_empty``.
    """

    def encode(row: dict):
        ids, truncated = _encode_prompt(tokenizer, row["prompt"], max_length)
        return {"prompt_ids": ids}, truncated, len(ids)

    return _map_and_drop(dataset, "prompt", ["prompt"], ("prompt", "oracle"), encode, num_proc, "dropped_empty")

"""Whole datasets through the encoding: a row's tools reach the template, margins reach reward-model rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pytest

from alignment.data import load_dataset, tokenize_preference, tokenize_sft

SAMPLES = Path(__file__).parent / "samples"


def _trained(tokenizer, row: dict) -> str:
    return tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100])


def test_tool_rows_render_their_tools_and_train_the_call_not_the_result(chat_tokenizers) -> None:
    tokenizer = chat_tokenizers["qwen2.5"]
    encoded, stats = tokenize_sft(load_dataset(SAMPLES / "openai_tools.jsonl"), tokenizer, max_length=2048)
    assert stats["kept"] == 3
    full = tokenizer.decode(encoded[0]["input_ids"])
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in full
    assert _trained(tokenizer, encoded[0]) == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call><|im_end|>'
        "北京现在晴，气温21°C。<|im_end|>"
    )
    assert "temp_c" in full and "temp_c" not in _trained(tokenizer, encoded[0])  # the tool's result is context
    # A row without tools in the same dataset renders none.
    assert "<tools>" not in tokenizer.decode(encoded[2]["input_ids"])


def test_preference_rows_with_tools_render_them_in_the_prompt(chat_tokenizers) -> None:
    tokenizer = chat_tokenizers["qwen2.5"]
    tools = '[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]'
    pair = {"prompt": [{"role": "user", "content": "查一下"}], "chosen": [{"role": "assistant", "content": "好"}]}
    rows = [{**pair, "rejected": [{"role": "assistant", "content": "不"}], "tools": tools}]
    encoded, _ = tokenize_preference(datasets.Dataset.from_list(rows), tokenizer)
    assert '"name": "lookup"' in tokenizer.decode(encoded[0]["prompt_ids"])


def test_margin_from_scores_reaches_reward_model_rows(chat_tokenizers) -> None:
    tokenizer = chat_tokenizers["qwen2.5"]
    encoded, _ = tokenize_preference(load_dataset(SAMPLES / "ultrafeedback.jsonl", kind="preference"), tokenizer)
    assert encoded["margin"] == [6.5, 5.5]


def test_margin_missing_on_some_pairs_is_not_used(
    chat_tokenizers, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    rows = [
        {"prompt": "q1", "chosen": "a", "rejected": "b", "score_chosen": 3.0, "score_rejected": 1.0},
        {"prompt": "q2", "chosen": "c", "rejected": "d"},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pairs = load_dataset(path, kind="preference")
    assert pairs["margin"] == [2.0, None]
    with caplog.at_level(logging.WARNING, logger="alignment.data"):
        encoded, _ = tokenize_preference(pairs, chat_tokenizers["qwen2.5"], source="p.jsonl")
    assert "margin" not in encoded.column_names
    assert "p.jsonl: 1 of 2 pairs have no margin" in caplog.text

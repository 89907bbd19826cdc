"""The shared data layer: dataset formats -> canonical rows -> tokens + loss masks -> collators.

Every stage gets its tokens and masks from here; nothing is tokenised inside a stage.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Where each public name lives; imported on first use, so that checks which only need formats stay fast (the
# tokenisation and loading modules pull in transformers and datasets).
_EXPORTS = {
    "encode_chat": "encode",
    "encode_preference": "encode",
    "encode_prompt": "encode",
    "turn_end_token_ids": "encode",
    "load_dataset": "loading",
    "load_dataset_with_report": "loading",
    "load_train_eval": "sources",
    "tokenize_preference": "tokenize",
    "tokenize_prompts": "tokenize",
    "tokenize_sft": "tokenize",
}

if TYPE_CHECKING:
    from alignment.data.encode import encode_chat, encode_preference, encode_prompt, turn_end_token_ids
    from alignment.data.loading import load_dataset, load_dataset_with_report
    from alignment.data.sources import load_train_eval
    from alignment.data.tokenize import tokenize_preference, tokenize_prompts, tokenize_sft

__all__ = [
    "encode_chat",
    "encode_preference",
    "encode_prompt",
    "load_dataset",
    "load_dataset_with_report",
    "load_train_eval",
    "tokenize_preference",
    "tokenize_prompts",
    "tokenize_sft",
    "turn_end_token_ids",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignment.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"alignment.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value

"""The shared data layer: dataset formats -> canonical rows -> tokens + loss masks -> collators.

Every stage gets its tokens and masks from here; nothing is tokenised inside a stage.
"""

from alignment.data.chat import (
    encode_chat,
    encode_preference,
    encode_prompt,
    turn_end_token_ids,
)
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

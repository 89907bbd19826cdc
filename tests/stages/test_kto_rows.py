"""KTO's unpaired rows: what ``alignment.stages.kto.unpaired`` makes of encoded preference pairs, checked against
TRL's own unpairing of the canonical rows (multi-turn prompts with tools), and why it unpairs encoded pairs."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from transformers import AutoTokenizer
from trl.data_utils import unpair_preference_dataset

from alignment.data import encode_preference, tokenize_preference
from alignment.stages.kto import unpaired
from alignment.tiny_model import SHIPPED_DIR
from tests.data.templates import TEMPLATES

TOOLS = json.dumps(
    [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Today's weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
)


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


PAIRS = [
    {
        "prompt": [
            _msg("system", "You are Aster."),
            _msg("user", "Who are you?"),
            _msg("assistant", "I am Aster."),
            _msg("user", "And who made you?"),
        ],
        "chosen": [_msg("assistant", "The Alignment Lab made me.")],
        "rejected": [_msg("assistant", "I was made by a big company somewhere far away, I think.")],
        "tools": TOOLS,
        "oracle": '{"task": "identity", "ask_maker": true}',
    },
    {
        "prompt": [_msg("user", "What is 6 + 8?")],
        "chosen": [_msg("assistant", "6 + 8 = 14")],
        "rejected": [_msg("assistant", "6 + 8 = 15")],
        "tools": TOOLS,
        "oracle": '{"task": "arithmetic", "answer": 14}',
    },
    {
        "prompt": [_msg("user", "Is it sunny in Paris?"), _msg("assistant", "Let me look."), _msg("user", "Well?")],
        "chosen": [_msg("assistant", "It is sunny in Paris today.")],
        "rejected": [_msg("assistant", "No idea.")],
        "tools": TOOLS,
        "oracle": "",
    },
]


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny model's tokenizer under Qwen2.5's template, which writes the tool schemas into the prompt."""
    tok = AutoTokenizer.from_pretrained(SHIPPED_DIR)
    tok.chat_template = TEMPLATES["qwen2.5"]["template"]
    return tok


def _rows(ds: Dataset) -> list[tuple]:
    return sorted(zip(map(tuple, ds["prompt_ids"]), map(tuple, ds["completion_ids"]), ds["label"], strict=True))


def test_unpaired_rows_are_trls_unpaired_canonical_rows_encoded(tokenizer):
    canonical = Dataset.from_list(PAIRS)
    pairs, _ = tokenize_preference(canonical, tokenizer)
    rows = unpaired(pairs.map(lambda r: {"length": len(r["prompt_ids"])}), seed=0)

    assert rows.column_names == ["prompt_ids", "completion_ids", "label"]  # no pair-level columns carried over
    assert rows["label"].count(True) == rows["label"].count(False) == len(PAIRS)
    # TRL's unpairing of the canonical rows: chosen -> label True, rejected -> label False, the prompt (all its turns)
    # and the tools kept; each row encoded on its own gives exactly the rows unpaired() derives from encoded pairs.
    expected = []
    for row in unpair_preference_dataset(canonical):
        enc = encode_preference(tokenizer, row["prompt"], row["completion"], row["completion"], tools=row["tools"])
        expected.append((tuple(enc["prompt_ids"]), tuple(enc["chosen_ids"]), row["label"]))
    assert _rows(rows) == sorted(expected)
    # The tools and every earlier turn are in the prompt the completion is trained after.
    text = tokenizer.decode(rows[0]["prompt_ids"])
    assert '"name": "weather"' in text and text.endswith("<|im_start|>assistant\n")


def test_unpaired_rows_are_shuffled_by_the_seed_so_batches_mix_labels(tokenizer):
    pairs, _ = tokenize_preference(Dataset.from_list(PAIRS * 4), tokenizer)
    first, again, other = unpaired(pairs, seed=0), unpaired(pairs, seed=0), unpaired(pairs, seed=1)
    assert first["label"] == again["label"] and first["completion_ids"] == again["completion_ids"]
    assert first["completion_ids"] != other["completion_ids"]
    assert first["label"] != [True] * len(pairs) + [False] * len(pairs)  # not all desirable rows first
    assert _rows(first) == _rows(other)


def test_a_truncated_pair_gives_both_rows_the_prompt_cut_for_its_longer_reply(tokenizer):
    """Why KTO unpairs encoded pairs rather than canonical rows: the pair is truncated as dpo, orpo and rm see it."""
    pair = PAIRS[0]
    full = encode_preference(tokenizer, pair["prompt"], pair["chosen"], pair["rejected"], tools=pair["tools"])
    limit = len(full["prompt_ids"]) + len(full["rejected_ids"]) - 20  # the longer (rejected) reply cuts 20 tokens
    pairs, stats = tokenize_preference(Dataset.from_list([pair]), tokenizer, max_length=limit)
    assert stats["truncated"] == 1
    good, bad = sorted(unpaired(pairs, seed=0), key=lambda r: not r["label"])
    assert good["label"] and not bad["label"]
    assert good["prompt_ids"] == bad["prompt_ids"] == full["prompt_ids"][20:]  # one prompt, cut from the left
    assert good["completion_ids"] == full["chosen_ids"] and bad["completion_ids"] == full["rejected_ids"]
    alone = encode_preference(tokenizer, pair["prompt"], pair["chosen"], pair["chosen"], limit, tools=pair["tools"])
    assert len(alone["prompt_ids"]) > len(good["prompt_ids"])  # the chosen reply encoded alone keeps more prompt

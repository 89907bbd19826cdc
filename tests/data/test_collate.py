"""Our encodings through TRL's collators: padding and padding-free packing keep the loss masks intact."""

from __future__ import annotations

import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from alignment.data import encode_chat
from alignment.tiny_model import CHATML_TEMPLATE, build_tokenizer

CHATS = [
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Aster."}],
    [
        {"role": "system", "content": "Answer in Chinese."},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "1 + 2?"},
        {"role": "assistant", "content": "1 + 2 = 3。"},
    ],
]


def _tokenizer():
    tok = build_tokenizer([m["content"] for chat in CHATS for m in chat] * 20, vocab_size=400)
    tok.chat_template = CHATML_TEMPLATE
    return tok


def test_padding_keeps_labels_and_masks_pads():
    tok = _tokenizer()
    rows = [encode_chat(tok, chat) for chat in CHATS]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"]
        assert batch["labels"][i, :n].tolist() == row["labels"]
        assert (batch["labels"][i, n:] == -100).all()
        assert batch["attention_mask"][i].sum() == n


def test_padding_free_packing_restarts_positions_at_each_sequence():
    tok = _tokenizer()
    rows = [encode_chat(tok, chat) for chat in CHATS]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert batch["input_ids"].shape == (1, sum(lengths))
    expected_positions = torch.cat([torch.arange(n) for n in lengths])
    assert torch.equal(batch["position_ids"][0], expected_positions)
    packed_labels = batch["labels"][0].tolist()
    start = 0
    for row, n in zip(rows, lengths, strict=True):
        # the packed labels carry each sequence's own mask; the boundary token never predicts across sequences
        assert packed_labels[start + 1 : start + n] == row["labels"][1:]
        start += n

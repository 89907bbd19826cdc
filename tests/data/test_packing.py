"""SFT's default path packs the encoded rows (``trainer.packing=true``: TRL's best-fit packing, padding-free batches).

Packing must change only how rows are laid out: every encoded row stays whole, with its own labels, in a packed row
no longer than ``max_length``; a batch restarts positions at each row, never trains a row's first token as the
continuation of the row before it, and the model attends within each row only (its logits equal the row's own).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from alignment.stages import sft
from tests.stages.trainers import built_trainer

pytestmark = pytest.mark.slow


def segments(row: dict) -> list[tuple[int, int]]:
    """(start, end) of each encoded row inside a packed row."""
    bounds, start = [], 0
    for n in row["seq_lengths"]:
        bounds.append((start, start + n))
        start += n
    return bounds


@pytest.fixture(scope="module")
def packed_sft(tmp_path_factory):
    """(the stage's SFT trainer, the encoded train rows handed to it), built as ``stage=sft`` builds them."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        encoded = []
        tokenize = sft.tokenize_sft

        def spy(*args, **kwargs):
            out = tokenize(*args, **kwargs)
            encoded.append(out[0])
            return out

        monkeypatch.setattr(sft, "tokenize_sft", spy)
        trainer = built_trainer(
            monkeypatch,
            sft,
            "stage=sft",
            f"output_dir={tmp_path_factory.mktemp('packing')}",
            "data.max_train_rows=48",
            "data.max_eval_rows=4",
            "data.max_length=160",
            "oracle_eval.enabled=false",
        )
    return trainer, encoded[0]


def test_packed_rows_hold_each_encoded_row_whole_within_max_length(packed_sft):
    trainer, rows = packed_sft
    packed = trainer.train_dataset
    assert trainer.args.packing and trainer.args.max_length == 160
    assert len(packed) < len(rows)  # rows were packed together, not one per sequence
    assert max(map(len, packed["input_ids"])) <= 160
    found = []
    for row in packed:
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) == len(row["labels"])
        found += [(tuple(row["input_ids"][a:b]), tuple(row["labels"][a:b])) for a, b in segments(row)]
    # Exactly the encoded rows, each once and unsplit: the same tokens, and the same tokens carry the loss.
    assert Counter(found) == Counter((tuple(r["input_ids"]), tuple(r["labels"])) for r in rows)
    assert any(len(row["seq_lengths"]) > 1 for row in packed)


def test_a_packed_batch_keeps_rows_apart_in_positions_loss_and_attention(packed_sft):
    trainer, _ = packed_sft
    packed = trainer.train_dataset
    examples = [packed[i] for i in range(2)]
    batch = trainer.data_collator(examples)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free: one flat sequence
    ids, labels, positions = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    bounds = []
    for offset, row in zip([0, len(examples[0]["input_ids"])], examples, strict=True):
        bounds += [(offset + a, offset + b) for a, b in segments(row)]
    assert len(bounds) >= 3
    flat_labels = [label for row in examples for label in row["labels"]]
    for a, b in bounds:
        assert positions[a:b].tolist() == list(range(b - a))
        # The first token of a row is never a target: nothing predicts it from the row before.
        assert labels[a] == -100
        assert labels[a + 1 : b].tolist() == flat_labels[a + 1 : b]

    model = trainer.model.eval()
    with torch.no_grad():
        together = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        for a, b in bounds:
            alone = model(input_ids=ids[a:b].unsqueeze(0)).logits[0]
            assert torch.allclose(together[a:b], alone, atol=1e-4), f"row {a}:{b} attends outside itself"

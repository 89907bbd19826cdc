"""Length-grouped chunks: the grouping's cost and coverage, and grouped forwards equal to the dense ones."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from alignment.rl import padding
from alignment.rl.rollout import response_logprobs, response_values
from tests.families import tiny_qwen2

pytestmark = pytest.mark.usefixtures("one_thread")


def cost(groups, prompts, responses, overhead) -> float:
    return sum(len(g) * (max(prompts[i] for i in g) + max(responses[i] for i in g)) + overhead for g in groups)


def set_partitions(items):
    """Every partition of ``items`` into non-empty groups (Bell(n) of them)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield [[first], *partition]
        for k in range(len(partition)):
            yield partition[:k] + [[first, *partition[k]]] + partition[k + 1 :]


def test_length_groups_by_hand():
    # Three short rows and a long one: 4 x 10 + 2 = 42 together, (3 x 1 + 2) + (10 + 2) = 17 apart.
    assert padding.length_groups([10, 1, 1, 1], overhead=2) == [[1, 2, 3], [0]]
    # A forward costing more than all the padding: one group, shortest first.
    assert padding.length_groups([10, 1, 1, 1], overhead=100) == [[1, 2, 3, 0]]
    # Width = widest prompt + widest response of the group; rows sort by their total (3, 3, 12, 12). Rows 0 and 1
    # share a forward (2 x (2 + 2) + 4 = 12 < 2 x (3 + 4)); rows 2 and 3 have the same total but not the same
    # shape, so together they would be 20 wide (2 x 20 + 4 = 44 > 2 x (12 + 4)).
    assert padding.length_groups([1, 2, 10, 2], [2, 1, 2, 10], overhead=4) == [[0, 1], [2], [3]]
    # The cap splits even a free merge: 5 equal rows, at most 2 a forward.
    assert padding.length_groups([4] * 5, max_size=2, overhead=1) == [[0, 1], [2, 3], [4]]
    assert padding.length_groups([]) == []
    with pytest.raises(ValueError, match="max_size"):
        padding.length_groups([1], max_size=0)


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_are_optimal_cover_every_row_once_and_respect_the_cap(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 7)
    lengths = [rng.choice([1, 2, 3, 8, 20, 40]) for _ in range(n)]
    cap, overhead = rng.choice([None, 1, 2, 3]), rng.choice([0, 5, 30])
    groups = padding.length_groups(lengths, max_size=cap, overhead=overhead)
    assert sorted(itertools.chain(*groups)) == list(range(n))
    assert all(1 <= len(g) <= (cap or n) for g in groups)
    # With one length, some optimal split is contiguous in sorted order, so the DP must match brute force over all.
    zeros = [0] * n
    best = min(
        cost(p, lengths, zeros, overhead)
        for p in set_partitions(list(range(n)))
        if all(len(g) <= (cap or n) for g in p)
    )
    assert cost(groups, lengths, zeros, overhead) == best


def rows():
    """Six prompt + response rows of very different lengths, left-padded prompts and right-padded responses.

    Prompt lengths 1..30; response lengths 0 (nothing valid), 1, 12 (the full width: unfinished), 5, 2 and 9.
    """
    g = torch.Generator().manual_seed(0)
    prompt_lengths, response_lengths = [30, 1, 7, 2, 19, 4], [0, 1, 12, 5, 2, 9]
    width, length, pad = max(prompt_lengths), max(response_lengths), 0
    ids = torch.full((6, width + length), pad)
    attention = torch.zeros_like(ids)
    mask = torch.zeros((6, length), dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        ids[row, width - p : width + r] = torch.randint(3, 200, (p + r,), generator=g)
        attention[row, width - p : width + r] = 1
        mask[row, :r] = 1
    return ids, attention, width, mask


def policy_and_value():
    """A tiny random policy and value model over the 200 ids of :func:`rows` (pad 0), drawn from seed 0."""
    policy = tiny_qwen2(vocab_size=200, pad_token_id=0).eval()
    return policy, tiny_qwen2(seed=None, score=True, vocab_size=200, pad_token_id=0)


@pytest.mark.parametrize("max_size", [None, 2])
def test_grouped_scoring_forwards_equal_the_dense_ones(max_size, monkeypatch):
    monkeypatch.setattr(padding, "FORWARD_OVERHEAD_TOKENS", 0)  # free forwards: as many groups as pay
    policy, value = policy_and_value()
    ids, attention, width, mask = rows()
    shapes = []

    def logprobs(i, a, w):
        shapes.append(tuple(i.shape))
        return response_logprobs(policy, i, a, w, 0.7)

    with torch.no_grad():
        dense = response_logprobs(policy, ids, attention, width, 0.7).masked_fill(mask == 0, 0)
        dense_values = response_values(value.eval(), ids, attention, width).masked_fill(mask == 0, 0)
        grouped = padding.grouped_response_forward(logprobs, ids, attention, width, mask, max_size)
        grouped_values = padding.grouped_response_forward(
            lambda i, a, w: response_values(value, i, a, w), ids, attention, width, mask, max_size
        )
    torch.testing.assert_close(grouped, dense, atol=1e-5, rtol=0)
    torch.testing.assert_close(grouped_values, dense_values, atol=1e-5, rtol=0)
    assert (grouped[0] == 0).all() and (grouped[1, 1:] == 0).all()  # nothing valid beyond each response
    assert len(shapes) > 1 and all(rows <= (max_size or 6) for rows, _ in shapes)
    assert sum(r * c for r, c in shapes) < ids.numel() / 2  # most of the dense tensor was padding


def test_trim_padding_keeps_one_column_of_each_part():
    ids, attention, width, mask = rows()
    batch = {"input_ids": ids[:1], "attention_mask": attention[:1], "mask": mask[:1], "width": width}
    trimmed = padding.trim_padding(batch)  # the 30-token prompt with an empty response
    assert trimmed["width"] == 30 and trimmed["input_ids"].shape == (1, 31) and trimmed["mask"].shape == (1, 1)

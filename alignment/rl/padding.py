"""Cutting padding out of rollout batches: trim the columns a set of rows only pads, and length-grouped chunks.

A rollout row is a LEFT-padded prompt followed by a RIGHT-padded response, every row padded to the longest prompt
and the longest response of the batch, so with lengths that vary a lot most of the dense tensor is padding. Rows sorted
by length and cut into contiguous groups, each trimmed to its own widths, skip most of it. Positions come from the
attention mask and attention is causal, so every real token gets the same numbers as in the dense forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# Price of one forward in token-equivalents: what a forward costs beyond its tokens (Python and kernel-launch overhead,
# small matmuls running below full speed). Measured on the tiny default Qwen2 on one CPU thread: about 3.5 ms fixed
# and 60 us per token forward, 10 ms and 200 us per token forward + backward, so both about 50-60 tokens. A large model
# on a GPU has a larger price in tokens; a wrong price only costs speed, never changes a number.
FORWARD_OVERHEAD_TOKENS = 64


def length_groups(
    prompt_lengths: Sequence[int],
    response_lengths: Sequence[int] | None = None,
    max_size: int | None = None,
    overhead: float | None = None,
) -> list[list[int]]:
    """Split rows into groups of row indices that minimise padded tokens plus a price per forward.

    A group costs ``len(group) * (max prompt length + max response length) + overhead``: the tokens its trimmed
    forward processes, real or padding, plus a fixed per-forward price in token-equivalents. Rows are sorted by total
    length (ties by index) and an exact dynamic programme over that order picks where to cut, with at most
    ``max_size`` rows per group. Groups come shortest first; each row appears in exactly one.
    """
    n = len(prompt_lengths)
    responses = [0] * n if response_lengths is None else [int(r) for r in response_lengths]
    prompts = [int(p) for p in prompt_lengths]
    if len(responses) != n:
        raise ValueError(f"got {n} prompt lengths but {len(responses)} response lengths")
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    cap = n if max_size is None else max_size
    overhead = FORWARD_OVERHEAD_TOKENS if overhead is None else overhead
    order = sorted(range(n), key=lambda i: (prompts[i] + responses[i], i))
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest split of the first j sorted rows
    cut = [0] * (n + 1)  # cut[j]: where the last group of that split starts
    for j in range(1, n + 1):
        widest_prompt = widest_response = 0
        for i in range(j - 1, max(j - cap, 0) - 1, -1):  # the last group is order[i:j]
            widest_prompt = max(widest_prompt, prompts[order[i]])
            widest_response = max(widest_response, responses[order[i]])
            cost = best[i] + (j - i) * (widest_prompt + widest_response) + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def trim_padding(mb: dict) -> dict:
    """Drop the columns a set of rows only pads: prompt columns padding every row, response columns masked in every row.

    ``mb`` holds ``input_ids`` and ``attention_mask`` (prompt + response columns), ``width`` (the prompt columns) and
    response-shaped tensors (``mask`` and any others), which keep their first columns. At least one prompt column
    (the one that predicts the first response token) and one response column are kept.
    """
    width, prompt_mask = mb["width"], mb["attention_mask"][:, : mb["width"]]
    left = int((prompt_mask.cumsum(1) == 0).sum(1).min())  # leading pad columns shared by every row
    left = min(left, width - 1)
    valid = mb["mask"].any(0).nonzero()
    keep = max(int(valid[-1]) + 1 if len(valid) else 1, 1)
    out = {
        k: v[:, :keep] if torch.is_tensor(v) and k not in ("input_ids", "attention_mask") else v for k, v in mb.items()
    }
    out["input_ids"] = mb["input_ids"][:, left : width + keep]
    out["attention_mask"] = mb["attention_mask"][:, left : width + keep]
    out["width"] = width - left
    return out


def group_rows(mb: dict, max_size: int | None = None, overhead: float | None = None) -> list[dict]:
    """``mb`` (as for :func:`trim_padding`) cut into :func:`length_groups`, each trimmed; each keeps its ``rows``.

    ``rows`` is a LongTensor of the group's row indices in ``mb``, for scattering results back.
    """
    prompt_lengths = mb["attention_mask"][:, : mb["width"]].sum(1).tolist()
    response_lengths = mb["mask"].sum(1).tolist()
    device = mb["input_ids"].device
    parts = []
    for rows in length_groups(prompt_lengths, response_lengths, max_size, overhead):
        index = torch.tensor(rows, device=device)
        part = trim_padding({k: v[index] if torch.is_tensor(v) else v for k, v in mb.items()})
        parts.append(part | {"rows": index})
    return parts


def grouped_response_forward(
    fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    width: int,
    mask: torch.Tensor,
    max_size: int | None = None,
    overhead: float | None = None,
) -> torch.Tensor:
    """``fn(ids, attention_mask, prompt_width) -> (rows, response columns)`` run over length groups.

    The results are scattered back into the original row order and ``mask``'s full width, with 0 wherever ``mask``
    is 0 (response padding, whose scores mean nothing), so they equal a dense ``fn`` over all rows masked the same way.
    """
    out: torch.Tensor | None = None
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "mask": mask, "width": width}
    for part in group_rows(batch, max_size, overhead):
        result = fn(part["input_ids"], part["attention_mask"], part["width"])
        if out is None:
            out = result.new_zeros(mask.shape)
        out[part["rows"], : result.shape[1]] = result
    assert out is not None  # a batch has at least one row
    return out.masked_fill(mask == 0, 0)

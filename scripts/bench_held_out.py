"""The held-out measures of scripts/bench.py: one computation applied to the model each side trained.

Each side's trainer tokenises and evaluates in its own way (TRL's DPO completions end with the template's newline after
``<|im_end|>`` and it drops pairs whose prompt fills ``max_length``; ours end at ``<|im_end|>`` and cut the prompt from
the left), so their own ``evaluate()`` numbers are not the same quantity. Here the held-out rows are encoded once, by
our data layer, and both trained models are scored on exactly those tokens, one row at a time (no padding, so nothing
depends on batching).

- SFT: the mean per-token NLL of the assistant tokens (:func:`sft_loss`).
- DPO: summed log-probs of the chosen and rejected replies under the trained policy and the start (reference) model
  (:func:`pair_log_probs`), then the DPO sigmoid loss with the run's beta, reward accuracy (a tie counts as wrong, as
  in TRL), mean reward margin and the chosen replies' mean per-token NLL (:func:`dpo_measures`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def read_rows(data: str | Path) -> list[dict]:
    """The held-out rows (``test.jsonl``) of a benchmark data dir."""
    text = (Path(data) / "test.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sft_loss(model, tokenizer, rows: list[dict], max_length: int) -> dict:
    """Mean per-token NLL of the assistant tokens (and their end of turn) of the held-out chats."""
    import torch
    from datasets import Dataset

    from alignment.data import tokenize_sft

    encoded = tokenize_sft(Dataset.from_list(rows), tokenizer, max_length=max_length)[0]
    device, total, count = next(model.parameters()).device, 0.0, 0
    for row in encoded:
        ids = torch.tensor([row["input_ids"]], device=device)
        target = torch.tensor([row["labels"]], device=device)[:, 1:]
        logits = model(input_ids=ids).logits[:, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="sum"))
        count += int((target != -100).sum())
    return {"eval_loss": total / count, "eval_loss_tokens": count}


def encode_pairs(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """The held-out pairs as our data layer encodes them (``prompt_ids``, ``chosen_ids``, ``rejected_ids``)."""
    from datasets import Dataset

    from alignment.data.tokenize import tokenize_preference

    columns = ["prompt", "chosen", "rejected"]
    encoded = tokenize_preference(Dataset.from_list([{k: r[k] for k in columns} for r in rows]), tokenizer, max_length)
    return [{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in encoded[0]]


def pair_log_probs(model, pairs: list[dict]) -> list[tuple[float, float]]:
    """(chosen, rejected) summed reply log-probs of each encoded pair under ``model``, one row at a time (the
    package's :func:`alignment.stages.reference_kl.reply_logps`, which the KL measurement uses)."""
    from alignment.stages.reference_kl import reply_logps

    rows = [(p["prompt_ids"], p[side]) for p in pairs for side in ("chosen_ids", "rejected_ids")]
    logps = reply_logps(model, rows, batch_size=1).tolist()
    return list(zip(logps[0::2], logps[1::2], strict=True))


def dpo_measures(
    policy: list[tuple[float, float]], reference: list[tuple[float, float]], chosen_tokens: int, beta: float
) -> dict:
    """DPO's held-out quantities from summed reply log-probs of the trained policy and the reference model.

    Rewards are ``beta * (policy - reference)``; the loss is ``-log sigmoid(chosen reward - rejected reward)``,
    averaged over pairs; a pair is correct when its chosen reward is strictly higher; ``eval_chosen_nll`` is the
    policy's NLL per chosen reply token.
    """
    margins = [beta * ((pc - rc) - (pr - rr)) for (pc, pr), (rc, rr) in zip(policy, reference, strict=True)]
    n = len(margins)
    loss = sum(math.log1p(math.exp(-m)) if m > -30 else -m for m in margins) / n  # -log sigmoid(m), overflow-safe
    return {
        "eval_loss": loss,
        "eval_accuracy": sum(m > 0 for m in margins) / n,
        "eval_margin": sum(margins) / n,
        "eval_chosen_nll": -sum(pc for pc, _ in policy) / chosen_tokens,
        "eval_pairs": n,
    }


def dpo_held_out(model, reference, tokenizer, rows: list[dict], max_length: int, beta: float) -> dict:
    """:func:`dpo_measures` of ``model`` against ``reference`` on the held-out pairs, encoded once by our data layer."""
    pairs = encode_pairs(tokenizer, rows, max_length)
    chosen_tokens = sum(len(p["chosen_ids"]) for p in pairs)
    return dpo_measures(pair_log_probs(model, pairs), pair_log_probs(reference, pairs), chosen_tokens, beta)

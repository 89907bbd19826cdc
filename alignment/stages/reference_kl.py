"""``kl``: KL(policy || reference) of a preference-trained policy, estimated on its own oracle-eval samples.

The estimate is the Monte-Carlo sequence KL: the mean over sampled replies y ~ policy of
``sum_t log p_policy(y_t | x, y_<t) - log p_ref(y_t | x, y_<t)`` over the reply's tokens. The replies are the ones
the oracle evaluation sampled and saved (``oracle_samples.jsonl``), re-encoded by the shared data layer (reply tokens
plus the end-of-turn), so the number sits beside ``oracle_reward`` on the same samples: the beta frontier's axes.
It is KL of the sampling distribution only with ``oracle_eval.temperature=1``, ``top_p=1`` and no ``greedy``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig

from alignment.errors import AlignmentError

log = logging.getLogger("alignment")


def sample_rows(tokenizer, samples: list[dict], max_length: int | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reply ids) of each ``{"prompt", "reply"}`` sample; the prompt keeps its last ``max_length``
    tokens, as generation did."""
    from alignment.data import encode_preference

    rows = []
    for sample in samples:
        reply = [{"role": "assistant", "content": sample["reply"]}]
        enc = encode_preference(tokenizer, sample["prompt"], reply, reply)
        prompt = enc["prompt_ids"]
        if max_length is not None and len(prompt) > max_length:
            prompt = prompt[len(prompt) - max_length :]
        rows.append((prompt, enc["chosen_ids"]))
    return rows


@torch.no_grad()
def reply_logps(model, rows: list[tuple[list[int], list[int]]], batch_size: int = 16) -> torch.Tensor:
    """Sum over each reply's tokens of ``log p(token | everything before it)`` under ``model`` (float64, CPU)."""
    device = next(model.parameters()).device
    pad = 0
    out = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(p) + len(r) for p, r in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            reply = torch.zeros((len(chunk), width), dtype=torch.bool)
            for i, (p, r) in enumerate(chunk):  # right padding
                ids[i, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
                mask[i, : len(p) + len(r)] = 1
                reply[i, len(p) : len(p) + len(r)] = True
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logps = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t + 1
            token_logps = logps.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
            out.append((token_logps * reply[:, 1:].to(device)).sum(dim=1).double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def sequence_kl(policy, reference, rows: list[tuple[list[int], list[int]]], batch_size: int = 16) -> float:
    """Mean over the rows of (policy - reference) reply log-prob: the Monte-Carlo KL when rows ~ policy.

    ``reference`` is a model, or a function returning a context manager in which ``policy`` acts as the reference
    (a PEFT policy with its adapter disabled).
    """
    if not rows:
        raise AlignmentError("no samples to estimate the KL to the reference on")
    mine = reply_logps(policy, rows, batch_size)
    if callable(reference) and not isinstance(reference, torch.nn.Module):
        with reference():
            theirs = reply_logps(policy, rows, batch_size)
    else:
        theirs = reply_logps(reference, rows, batch_size)
    return float((mine - theirs).mean())


def read_samples(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _reference_of(trainer, cfg: DictConfig) -> Callable[[], contextlib.AbstractContextManager]:
    """A context giving the trainer's reference: its ref model, the policy with its adapter disabled (PEFT), or else
    (a reference that was never loaded: precomputed log-probs, ORPO) the start model / ``ref_model``, loaded for the
    measurement and freed after it, so training does not hold it."""

    @contextlib.contextmanager
    def reference() -> Iterator[object]:
        ref = getattr(trainer, "ref_model", None)
        model = trainer.model
        if ref is not None:
            yield ref
        elif hasattr(model, "disable_adapter"):
            yield _adapter_disabled(model)
        else:
            from alignment.models import load_causal_lm
            from alignment.stages.preference_inputs import reference_path

            loaded = load_causal_lm(reference_path(cfg), cfg.model).to(next(model.parameters()).device).eval()
            try:
                yield loaded
            finally:
                del loaded
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    return reference


def _adapter_disabled(model) -> Callable[[], contextlib.AbstractContextManager]:
    @contextlib.contextmanager
    def disabled() -> Iterator[None]:
        with model.disable_adapter():
            yield

    return disabled


def record_reference_kl(stage, trainer, cfg: DictConfig) -> None:
    """After each oracle evaluation of ``stage`` (before and after training), also record ``kl<suffix>``: the
    policy's KL to the trainer's reference on the samples that evaluation saved. Single-process runs only."""
    measure = stage.measure_oracle
    reference = _reference_of(trainer, cfg)

    def measure_with_kl(model, tokenizer, suffix: str = "") -> None:
        measure(model, tokenizer, suffix)
        samples = stage.dir / f"oracle_samples{suffix}.jsonl"
        if f"oracle_reward{suffix}" not in stage.metrics or not samples.exists():
            return  # no oracle evaluation ran (disabled, or data without an oracle)
        if trainer.args.world_size > 1:
            log.info("kl%s: not measured in a %d-process run", suffix, trainer.args.world_size)
            return
        rows = sample_rows(tokenizer, read_samples(samples), int(cfg.data.max_length))
        batch = int(cfg.oracle_eval.get("batch_size") or 16)
        with reference() as ref:
            stage.metrics[f"kl{suffix}"] = sequence_kl(model, ref, rows, batch_size=batch)

    stage.measure_oracle = measure_with_kl

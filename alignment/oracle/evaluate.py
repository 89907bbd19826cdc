"""``oracle_reward``: the mean oracle score of a policy's sampled replies to the held-out embedded prompts.

Decoding is fixed by ``oracle_eval.*`` (sampling at temperature 1.0 with a fixed seed and several samples per prompt
by default, so the number reflects the policy's distribution; ``oracle_eval.greedy=true`` for the argmax reply).
On a user's own data, which has no oracle, the measure is skipped. An evaluation identical to an earlier one (same
weights, tokenizer, prompts and settings) is read back from the cache (alignment/oracle/cache.py, ``oracle_eval.cache``).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from alignment.generation import sample_replies
from alignment.oracle import cache
from alignment.oracle.rules import parse, score_batch
from alignment.paths import DATA_DIR
from alignment.progress import progress

log = logging.getLogger("alignment")
_SCORE_CHUNK = 256  # replies scored per progress update


def _prompt_rows(cfg: DictConfig):
    from alignment.data import load_dataset

    oe = cfg.oracle_eval
    if oe.path is None and cfg.data.path:  # the user's own data: the embedded oracle does not apply
        return None
    rows = load_dataset(str(oe.path or DATA_DIR / "prompts"), kind="prompt", split=oe.split)
    if "oracle" not in rows.column_names:
        return None
    return rows.select(range(min(oe.num_prompts, len(rows))))


def generate_replies(model, tokenizer, prompts: list[list[dict]], oe: DictConfig, max_prompt_length: int) -> list[str]:
    """Decode ``samples_per_prompt`` replies per prompt (prompt-major order), stopping at end-of-turn."""
    return sample_replies(
        model,
        tokenizer,
        prompts,
        samples_per_prompt=1 if oe.greedy else oe.samples_per_prompt,
        temperature=oe.temperature,
        top_p=oe.top_p,
        max_new_tokens=oe.max_new_tokens,
        batch_size=oe.batch_size,
        seed=oe.seed,
        greedy=oe.greedy,
        max_prompt_length=max_prompt_length,
        desc="oracle eval",
    ).texts


@dataclass
class OracleEvaluation:
    """An evaluation's scores, and whether they were read from the cache (alignment/oracle/cache.py)."""

    scores: dict[str, float] = field(default_factory=dict)
    from_cache: bool = False


def evaluate_oracle(model, tokenizer, cfg: DictConfig, samples_path: Path | None = None) -> OracleEvaluation:
    """Sample and score the held-out prompts' replies (see :func:`oracle_scores`), or, with ``oracle_eval.cache``,
    read back an identical earlier evaluation's scores and samples file."""
    oe = cfg.oracle_eval
    if not oe.enabled:
        return OracleEvaluation()
    rows = _prompt_rows(cfg)
    if rows is None or len(rows) == 0:
        return OracleEvaluation()
    key = cache.key_for(model, tokenizer, cfg, rows)
    if key is not None and (hit := cache.load(key)) is not None:
        scores, samples = hit
        if samples_path is not None:
            samples_path.write_text(samples, encoding="utf-8")
        return OracleEvaluation(scores, from_cache=True)
    scores, samples = _sample_and_score(model, tokenizer, cfg, rows)
    if samples_path is not None:
        samples_path.write_text(samples, encoding="utf-8")
    if key is not None:
        cache.store(key, scores, samples)
    return OracleEvaluation(scores)


def _sample_and_score(model, tokenizer, cfg: DictConfig, rows) -> tuple[dict[str, float], str]:
    """The scores and the samples file's text (one JSON line per reply: prompt, task, reply, score)."""
    replies = generate_replies(model, tokenizer, rows["prompt"], cfg.oracle_eval, cfg.data.max_length)
    n = len(replies) // len(rows)
    oracles = [o for o in rows["oracle"] for _ in range(n)]
    from alignment.distributed import is_main_process

    scores: list[float | None] = []
    chunks = range(0, len(replies), _SCORE_CHUNK)
    for start in progress(chunks, len(chunks), "oracle eval: scoring", disable=not is_main_process()):
        scores += score_batch(oracles[start : start + _SCORE_CHUNK], replies[start : start + _SCORE_CHUNK])
    tasks = [spec["task"] if (spec := parse(o)) else None for o in oracles]  # parsed (and cached) by scoring
    prompts = [p for p in rows["prompt"] for _ in range(n)]
    samples = "".join(
        json.dumps({"prompt": p, "task": t, "reply": r, "score": s}, ensure_ascii=False) + "\n"
        for p, t, r, s in zip(prompts, tasks, replies, scores, strict=True)
    )
    out = summarize(tasks, scores)
    if out:
        out["oracle_samples"] = sum(s is not None for s in scores)  # the n behind oracle_reward
    return out, samples


def oracle_scores(model, tokenizer, cfg: DictConfig, samples_path: Path | None = None) -> dict[str, float]:
    """``oracle_reward`` (mean oracle score in [0, 1] over the held-out prompts' replies) and, when the prompts span
    several task families, ``oracle_reward/<task>`` for each; empty when the data has no oracle."""
    return evaluate_oracle(model, tokenizer, cfg, samples_path).scores


def summarize(tasks: list[str | None], scores: list[float | None]) -> dict[str, float]:
    """Mean of the scored replies as ``oracle_reward``, plus ``oracle_reward/<task>`` when there are several tasks."""
    valid = [s for s in scores if s is not None]
    if not valid:
        return {}
    by_task: dict[str, list[float]] = defaultdict(list)
    for task, score in zip(tasks, scores, strict=True):
        if task and score is not None:
            by_task[task].append(score)
    out = {"oracle_reward": sum(valid) / len(valid)}
    if len(by_task) > 1:
        out |= {f"oracle_reward/{t}": sum(group) / len(group) for t, group in sorted(by_task.items())}
    return out


def oracle_reward(model, tokenizer, cfg: DictConfig, samples_path: Path | None = None) -> float | None:
    """Mean oracle score in [0, 1] over held-out prompts, or None when the data has no oracle."""
    return oracle_scores(model, tokenizer, cfg, samples_path).get("oracle_reward")

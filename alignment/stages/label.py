"""Score generated replies and keep each prompt's best vs worst: on-policy preference pairs (best-of-n).

Recipe: generations (``data.path``: a ``generations.jsonl`` from ``stage=generate`` or its stage dir) -> every reply
scored by ``reward.sources`` (oracle, reward model, ``module:function``, weighted) -> per prompt, the highest-scoring
reply is ``chosen`` and the lowest ``rejected``; prompts whose best and worst scores tie are dropped (and counted) ->
``pairs.jsonl`` (``prompt``/``chosen``/``rejected`` messages, plus ``oracle``/``task``: what ``stage=dpo`` reads) and
``scored.jsonl`` (every reply with its score). No model is trained or saved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from alignment.errors import AlignmentError
from alignment.stages.generate import PASSED_COLUMNS, generations_file

PAIRS = "pairs.jsonl"
SCORED = "scored.jsonl"


@dataclass
class LabelSettings:
    """``trainer.*`` of ``stage=label``."""

    batch_size: int = field(default=256, metadata={"help": "Replies per call of the reward function."})


def read_generations(cfg: DictConfig) -> list[dict]:
    """The lines of ``data.path`` (a generations.jsonl or a generate stage dir), checked line by line."""
    if not cfg.data.path:
        raise AlignmentError(
            "stage=label needs data.path=RUN/generate (a generate stage dir or its generations.jsonl)"
        )
    path = generations_file(cfg.data.path)
    if not path.is_file():
        raise AlignmentError(f"data.path: no generations at {path}; run stage=generate first or fix data.path")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise AlignmentError(f"{path}, line {number}: malformed JSON ({err.msg}); regenerate the file") from None
        replies = row.get("replies") if isinstance(row, dict) else None
        if "prompt" not in row or not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
            raise AlignmentError(
                f"{path}, line {number}: needs 'prompt' and 'replies' (a list of strings), as stage=generate writes"
            )
        rows.append(row)
    if not rows:
        raise AlignmentError(f"{path} holds no generations; run stage=generate again")
    return rows


def best_and_worst(scores: list[float]) -> tuple[int, int] | None:
    """Indices of the first highest and first lowest score, or None when they tie (nothing to prefer)."""
    best = max(range(len(scores)), key=scores.__getitem__)
    worst = min(range(len(scores)), key=scores.__getitem__)
    return None if scores[best] == scores[worst] else (best, worst)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run(cfg: DictConfig) -> dict:
    from alignment.atomic import write_atomic
    from alignment.distributed import is_main_process
    from alignment.progress import progress
    from alignment.stages.online import reward_function
    from alignment.stages.runner import StageRun

    settings = LabelSettings(**OmegaConf.to_container(cfg.trainer, resolve=True))
    if settings.batch_size < 1:
        raise AlignmentError(f"trainer.batch_size={settings.batch_size} must be at least 1 for stage=label")
    if not cfg.reward.sources:
        raise AlignmentError(
            "stage=label needs a reward: reward=oracle, reward=model reward.sources.0.path=RUN/rm, ..."
        )
    stage = StageRun(cfg)
    rows = read_generations(cfg)
    tokenizer = None
    if cfg.model.path:  # only a fallback for a reward model folder without its own tokenizer
        from alignment.models import load_tokenizer, resolve_model_path

        tokenizer = load_tokenizer(resolve_model_path(cfg.model), cfg.model)
    reward_fn = reward_function(cfg, tokenizer)

    # Score all replies, flattened in prompt-major order, in chunks of batch_size.
    prompts = [row["prompt"] for row in rows for _ in row["replies"]]
    replies = [reply for row in rows for reply in row["replies"]]
    oracle = [row.get("oracle") for row in rows for _ in row["replies"]]
    flat: list[float] = []
    by_source: dict[str, list[float]] = {}
    starts = range(0, len(replies), settings.batch_size)
    for start in progress(starts, len(starts), "label: scoring", disable=not is_main_process()):
        end = start + settings.batch_size
        flat += reward_fn(prompts[start:end], replies[start:end], oracle[start:end])
        for name, scores in reward_fn.last_scores.items():
            by_source.setdefault(name, []).extend(scores)

    pairs, scored, best, worst, ties = [], [], [], [], 0
    offset = 0
    for row in rows:
        n = len(row["replies"])
        scores = flat[offset : offset + n]
        picked = best_and_worst(scores) if n else None
        extra = {c: row[c] for c in PASSED_COLUMNS if c in row}
        record = {"prompt": row["prompt"], "replies": row["replies"], "scores": scores}
        if len(by_source) > 1:
            record["source_scores"] = {name: s[offset : offset + n] for name, s in by_source.items()}
        if "finished" in row:
            record["finished"] = row["finished"]
        record |= {"chosen": picked[0] if picked else None, "rejected": picked[1] if picked else None, **extra}
        scored.append(record)
        offset += n
        if picked is None:
            ties += 1
            continue
        b, w = picked
        best.append(scores[b])
        worst.append(scores[w])
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": [{"role": "assistant", "content": row["replies"][b]}],
                "rejected": [{"role": "assistant", "content": row["replies"][w]}],
                **extra,
            }
        )
    if not pairs:
        raise AlignmentError(
            f"stage=label: the best and worst replies tie on all {len(rows)} prompts, so there is nothing to prefer; "
            "sample more replies per prompt (trainer.samples_per_prompt >= 2 in stage=generate) or at a higher "
            "trainer.temperature, or use a finer-grained reward"
        )
    if is_main_process():
        write_atomic(stage.dir / SCORED, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored))
        write_atomic(stage.dir / PAIRS, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))

    stage.record(
        {
            "prompts": len(rows),
            "replies": len(replies),
            "pairs": len(pairs),
            "ties_dropped": ties,
            "mean_best": _mean(best),
            "mean_worst": _mean(worst),
            "mean_margin": _mean([b - w for b, w in zip(best, worst, strict=True)]),
            "mean_score": _mean(flat),
        }
    )
    if len(by_source) > 1:
        stage.record({f"mean_score/{name}": _mean(s) for name, s in by_source.items()})
    return stage.finish()

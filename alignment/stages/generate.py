"""Sample ``k`` replies per prompt from any policy: the first half of on-policy preference data (then ``stage=label``).

Recipe: settings (``trainer.*``, :class:`GenerateSettings`) -> policy and tokenizer (``model.path``: a model dir, a
stage dir or a Hub id) -> the train prompts of ``data.*`` (capped by ``data.max_train_rows``) -> batched sampling
(:func:`alignment.generation.sample_replies`) -> ``generations.jsonl`` (one line per prompt: ``prompt``, ``replies``,
``finished``, and the prompt's ``oracle``/``task`` columns when present) and ``metrics.json``. No model is saved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from alignment.errors import AlignmentError

GENERATIONS = "generations.jsonl"
# Prompt columns copied to each line of generations.jsonl when the prompt data has them.
PASSED_COLUMNS = ("oracle", "task")


def _help(text: str, default=None):
    return field(default=default, metadata={"help": text})


@dataclass
class GenerateSettings:
    """``trainer.*`` of ``stage=generate``."""

    samples_per_prompt: int = _help("Replies sampled per prompt (k).", 4)
    temperature: float = _help("Sampling temperature (> 0).", 1.0)
    top_p: float = _help("Nucleus sampling threshold; 1.0 = off.", 1.0)
    max_new_tokens: int = _help("Longest reply, in tokens; longer replies are cut (finished=false).", 64)
    batch_size: int = _help("Rows (prompt copies) per generate call.", 64)
    seed: int | None = _help("Sampling seed; None = the run's `seed`.")

    def validate(self) -> None:
        for key in ("samples_per_prompt", "max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise AlignmentError(f"trainer.{key}={getattr(self, key)} must be at least 1 for stage=generate")
        if self.temperature <= 0:
            raise AlignmentError(f"trainer.temperature={self.temperature} must be > 0: stage=generate samples")
        if not 0 < self.top_p <= 1:
            raise AlignmentError(f"trainer.top_p={self.top_p} must be in (0, 1]")


def generations_file(path: str | Path) -> Path:
    """``generations.jsonl`` itself, or the one inside a generate stage dir."""
    path = Path(path).expanduser()
    return path / GENERATIONS if path.is_dir() else path


def run(cfg: DictConfig) -> dict:
    from alignment.atomic import write_atomic
    from alignment.data import load_dataset
    from alignment.data.sources import data_path
    from alignment.distributed import is_main_process
    from alignment.generation import sample_replies
    from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path
    from alignment.stages.runner import StageRun

    settings = GenerateSettings(**OmegaConf.to_container(cfg.trainer, resolve=True))
    settings.validate()
    stage = StageRun(cfg)
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, cfg.model)
    policy = load_causal_lm(path, cfg.model, tokenizer=tokenizer)

    # The train split only: the held-out prompts stay unseen (the oracle evaluation samples them).
    prompts = load_dataset(
        data_path(cfg.data, "prompt"),
        kind="prompt",
        format=cfg.data.format,
        split=cfg.data.train_split,
        on_error=str(cfg.data.on_error),
    )
    if cfg.data.max_train_rows is not None:
        prompts = prompts.select(range(min(int(cfg.data.max_train_rows), len(prompts))))
    if len(prompts) == 0:
        raise AlignmentError("stage=generate has no prompts: data.max_train_rows must be at least 1")

    k = settings.samples_per_prompt
    replies = sample_replies(
        policy,
        tokenizer,
        prompts["prompt"],
        samples_per_prompt=k,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        seed=int(cfg.seed if settings.seed is None else settings.seed),
        max_prompt_length=int(cfg.data.max_length),
    )
    passed = [c for c in PASSED_COLUMNS if c in prompts.column_names]
    lines = []
    for i, row in enumerate(prompts):
        line = {"prompt": row["prompt"], "replies": replies.texts[i * k : (i + 1) * k]}
        line["finished"] = replies.finished[i * k : (i + 1) * k]
        line |= {c: row[c] for c in passed}
        lines.append(json.dumps(line, ensure_ascii=False) + "\n")
    if is_main_process():
        write_atomic(stage.dir / GENERATIONS, "".join(lines))

    n = len(replies.texts)
    stage.record(
        {
            "prompts": len(prompts),
            "replies": n,
            "mean_reply_tokens": sum(replies.num_tokens) / n,
            "finished_fraction": sum(replies.finished) / n,
        }
    )
    return stage.finish()

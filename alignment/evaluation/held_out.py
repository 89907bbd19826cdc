"""Held-out numbers computed by the very trainers the stages train with, so ``stage=eval`` reports what a stage's
own final evaluation reports: SFT's loss (same encoding, masks, packing and batches) and a reward model's pair
accuracy and margin."""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

log = logging.getLogger("alignment")


def policy_loss(cfg: DictConfig, stage, model, tokenizer) -> dict[str, float]:
    """``eval_loss`` (mean token loss on assistant turns and their end-of-turn tokens) and ``perplexity`` on the
    held-out conversations of ``data.*``; empty when the data has none."""
    from trl import SFTConfig, SFTTrainer

    from alignment.data import load_train_eval, tokenize_sft
    from alignment.data.sources import data_source

    _, rows = load_train_eval(cfg.data, kind="sft", seed=int(cfg.seed))
    if rows is None:
        log.warning("eval: data.* has no held-out conversations; no eval_loss")
        return {}
    encode = {"max_length": cfg.data.max_length, "train_on": str(cfg.data.train_on)}
    held_out = tokenize_sft(rows, tokenizer, **encode, source=data_source(cfg.data, "sft", "held-out"))[0]
    args = stage.trainer_args(
        SFTConfig, per_device_eval_batch_size=int(cfg.eval.batch_size), packing=bool(cfg.eval.packing)
    )
    # TRL requires a train split; it is never trained on.
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=held_out, eval_dataset=held_out, processing_class=tokenizer
    )
    metrics = trainer.evaluate()
    out = {k: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, int | float)}
    out["perplexity"] = math.exp(min(out["eval_loss"], 700.0))
    out["eval_rows"] = len(held_out)
    return out


def reward_model_accuracy(cfg: DictConfig, stage, model, tokenizer) -> dict[str, float]:
    """``eval_accuracy`` (the chosen reply scores higher) and ``eval_margin`` (mean chosen minus rejected score) on
    the held-out preference pairs of ``data.*``, as ``stage=rm`` measures them."""
    from trl import RewardConfig, RewardTrainer

    from alignment.data import load_train_eval, tokenize_preference
    from alignment.data.sources import data_source
    from alignment.stages.rm import reward_rows

    _, rows = load_train_eval(cfg.data, kind="preference", seed=int(cfg.seed))
    if rows is None:
        log.warning("eval: data.* has no held-out preference pairs; no eval_accuracy")
        return {}
    source = data_source(cfg.data, "preference", "held-out")
    pairs = tokenize_preference(rows, tokenizer, max_length=cfg.data.max_length, source=source)[0]
    keep = ["chosen_ids", "rejected_ids"] + (["margin"] if "margin" in pairs.column_names else [])
    pairs = reward_rows(pairs).select_columns(keep)
    args = stage.trainer_args(RewardConfig, per_device_eval_batch_size=int(cfg.eval.batch_size))
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=pairs, eval_dataset=pairs, processing_class=tokenizer
    )
    metrics = trainer.evaluate()
    out = {k: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, int | float)}
    out["eval_rows"] = len(trainer.eval_dataset)
    return out

"""Supervised fine-tuning with TRL's SFTTrainer, on conversations encoded by the shared data layer.

Recipe: config -> model and tokenizer -> encoded datasets (loss on assistant turns and their end-of-turn tokens)
-> SFTTrainer -> held-out loss and oracle reward before -> train -> after -> save.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from alignment import adapters
from alignment.data import load_train_eval, tokenize_sft
from alignment.data.sources import data_source
from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path
from alignment.stages.runner import StageRun

log = logging.getLogger("alignment")


def run(cfg: DictConfig) -> dict:
    from trl import SFTConfig, SFTTrainer

    stage = StageRun(cfg)
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(model_path, cfg.model)
    # The TRL config first: under ZeRO-3 it registers the DeepSpeed config with transformers, so the model loads
    # already partitioned (zero.Init) instead of every rank holding all of it before DeepSpeed shards it.
    args = stage.trainer_args(SFTConfig, include_num_input_tokens_seen="non_padding")
    model = load_causal_lm(model_path, cfg.model, cfg.peft, tokenizer=tokenizer)
    adapter = adapters.prepare(model, cfg.peft, stage="sft")

    train_rows, eval_rows = load_train_eval(cfg.data, kind="sft", seed=cfg.seed)
    encode = {"max_length": cfg.data.max_length, "train_on": str(cfg.data.train_on)}
    train_ds, stats = tokenize_sft(train_rows, tokenizer, **encode, source=data_source(cfg.data, "sft", "train"))
    eval_ds = None
    if eval_rows is not None:
        eval_ds = tokenize_sft(eval_rows, tokenizer, **encode, source=data_source(cfg.data, "sft", "held-out"))[0]
    stage.record({f"data_{k}": v for k, v in stats.items()})

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=adapter,
        callbacks=adapters.callbacks(cfg.peft),
    )
    return stage.fit(trainer, tokenizer)

"""Reward modelling with TRL's RewardTrainer: a one-label sequence classifier trained on preference pairs.

Pairwise Bradley-Terry loss; a ``margin`` column in the data adds a margin, and ``trainer.center_rewards_coefficient``
centres rewards around zero. Each reply is scored at its end-of-turn token, where the RL stages read the same model
(:mod:`alignment.data.reward_input`; the pad token is never an end-of-turn token, see ``alignment.models``). The saved
model is a standard HF sequence-classification model, usable as the reward (and value initialisation) for PPO, GRPO
and RLOO.
"""

from __future__ import annotations

from datasets import Dataset
from omegaconf import DictConfig

from alignment import adapters
from alignment.data.reward_input import reward_pair
from alignment.data.transforms import validate_transforms
from alignment.models import load_sequence_classifier, load_tokenizer, resolve_model_path
from alignment.stages.preference_inputs import KeepsLengthColumn, preference_data
from alignment.stages.runner import StageRun
from alignment.stages.task_metrics import task_indices


def reward_rows(pairs: Dataset) -> Dataset:
    """RewardTrainer's rows: the reward model's input for each reply (prompt + reply through its end-of-turn), the
    same as every RL reward from this model reads (:mod:`alignment.data.reward_input`)."""
    return pairs.map(reward_pair, desc="Joining prompts and replies")


def run(cfg: DictConfig) -> dict:
    from trl import RewardConfig, RewardTrainer

    class PairsRewardTrainer(KeepsLengthColumn, RewardTrainer):
        pass

    validate_transforms(cfg.data.transforms)  # a bad spec fails before any model is loaded
    stage = StageRun(cfg)
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, cfg.model)
    args = stage.trainer_args(RewardConfig)  # first: under ZeRO-3 the model then loads partitioned (see sft.py)
    model = load_sequence_classifier(path, cfg.model, tokenizer, cfg.peft)
    adapter = adapters.prepare(model, cfg.peft, stage="rm")

    train_ds, eval_ds = preference_data(cfg, tokenizer, stage)
    keep = ["chosen_ids", "rejected_ids"] + (["margin"] if "margin" in train_ds.column_names else [])
    train_ds = reward_rows(train_ds).select_columns([*keep, "length"])
    if eval_ds is not None:
        eval_ds = reward_rows(eval_ds)
        # ``oracle`` stays for the per-task breakdown; the trainer's collator only takes its own columns.
        eval_ds = eval_ds.select_columns([c for c in [*keep, "length", "oracle"] if c in eval_ds.column_names])

    trainer = PairsRewardTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=adapter,
        callbacks=adapters.callbacks(cfg.peft),
    )
    # From the trainer's own eval rows: RewardTrainer drops pairs longer than max_length, so indices must be its.
    stage.per_task = (task_indices(trainer.eval_dataset), ["eval_accuracy", "eval_margin"])
    return stage.fit(trainer, tokenizer, oracle=False)  # a reward model has no policy to score

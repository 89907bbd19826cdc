"""Kahneman-Tversky optimisation with TRL's KTOTrainer, on unpaired data derived from preference pairs.

Each pair gives one desirable row (prompt, chosen) and one undesirable row (prompt, rejected); the pairing is not
used, so the same stage also suits data that only has thumbs up/down.
"""

from __future__ import annotations

from datasets import Dataset
from omegaconf import DictConfig

from alignment import adapters
from alignment.data.transforms import validate_transforms
from alignment.stages.preference_inputs import policy_and_reference, preference_data
from alignment.stages.reference_kl import record_reference_kl
from alignment.stages.runner import StageRun


def unpaired(pairs: Dataset, seed: int) -> Dataset:
    """Split each encoded pair into a desirable and an undesirable row, shuffled so batches mix both labels."""
    # Not trl's unpair_preference_dataset: that splits canonical rows, and ours are encoded (and truncated) as pairs.

    def split(batch: dict) -> dict:
        prompts = batch["prompt_ids"] * 2
        completions = batch["chosen_ids"] + batch["rejected_ids"]
        labels = [True] * len(batch["chosen_ids"]) + [False] * len(batch["rejected_ids"])
        return {"prompt_ids": prompts, "completion_ids": completions, "label": labels}

    rows = pairs.map(split, batched=True, remove_columns=pairs.column_names)
    return rows.shuffle(seed=seed)


def with_kl_completions(rows: Dataset, batch_size: int) -> Dataset:
    """Add KTO's mismatched completions: within each batch, row i is paired with the completion of row i-1."""

    def rotate(batch: dict) -> dict:
        completions = batch["completion_ids"]
        return {"KL_completion_ids": completions[-1:] + completions[:-1]}

    return rows.map(rotate, batched=True, batch_size=batch_size)


def run(cfg: DictConfig) -> dict:
    from trl import KTOConfig, KTOTrainer

    class SharedEncodingKTOTrainer(KTOTrainer):
        """Rows arrive encoded by the shared data layer; only KTO's KL completions are added here."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if self.calculate_KL:
                return with_kl_completions(dataset, args.per_device_train_batch_size)
            return dataset

    validate_transforms(cfg.data.transforms)  # a bad spec fails before any model is loaded
    stage = StageRun(cfg)
    tokenizer, policy, reference, adapter = policy_and_reference(cfg)
    train_pairs, eval_pairs = preference_data(cfg, tokenizer, stage)
    train_ds = unpaired(train_pairs, cfg.seed)
    eval_ds = unpaired(eval_pairs, cfg.seed) if eval_pairs is not None else None

    trainer = SharedEncodingKTOTrainer(
        model=policy,
        ref_model=reference,
        args=stage.trainer_args(KTOConfig),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=adapter,
        callbacks=adapters.callbacks(cfg.peft),
    )
    record_reference_kl(stage, trainer, cfg)  # ``kl`` (and ``kl_before``) beside each oracle_reward
    return stage.fit(trainer, tokenizer)

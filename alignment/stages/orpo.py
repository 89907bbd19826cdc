"""ORPO (odds-ratio preference optimisation, no reference model) with TRL's experimental ORPOTrainer.

TRL's ORPOTrainer tokenises text itself; ``SharedEncodingORPOTrainer`` feeds it the shared data layer's encoding
instead, so ORPO trains on exactly the tokens and end-of-turn the other stages use.

TRL computes ORPO's NLL term over prompt and reply together, so the policy is also trained to write the user's
turns and the system prompt. Here it is the NLL of the chosen reply only (the tokens the data layer marks for
training, as in SFT and in the ORPO paper's L_SFT); ``nll_loss`` in the metrics is then comparable to SFT's loss.
"""

from __future__ import annotations

import logging
import os

import torch
from omegaconf import DictConfig

from alignment import adapters
from alignment.data.transforms import validate_transforms
from alignment.errors import AlignmentError
from alignment.stages.preference_inputs import policy_and_reference, preference_data
from alignment.stages.reference_kl import record_reference_kl
from alignment.stages.runner import StageRun

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
log = logging.getLogger("alignment")


def orpo_row(row: dict) -> dict:
    """The columns ORPOTrainer's collator expects, from one encoded pair."""
    prompt = row["prompt_ids"]
    out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        ids = prompt + row[f"{side}_ids"]
        out[f"{side}_input_ids"] = ids
        out[f"{side}_attention_mask"] = [1] * len(ids)
        out[f"{side}_labels"] = [-100] * len(prompt) + row[f"{side}_ids"]
    return out


def reply_nll(chosen_logits: torch.Tensor, chosen_labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over the reply tokens: ``chosen_logits[:, t]`` predicts token ``t + 1``; labels are -100 elsewhere."""
    targets = chosen_labels[:, 1:].to(chosen_logits.device)
    pad = chosen_logits.shape[1] - targets.shape[1]  # logits are padded to the longer of chosen and rejected
    targets = torch.nn.functional.pad(targets, (0, pad), value=-100)
    return torch.nn.functional.cross_entropy(chosen_logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def run(cfg: DictConfig) -> dict:
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError as err:
        raise AlignmentError(f"stage=orpo needs trl.experimental.orpo, which this TRL lacks: {err}") from err
    log.info(
        "stage=orpo runs TRL's experimental ORPOTrainer (trl.experimental.orpo): its API may change in any TRL release"
    )

    class SharedEncodingORPOTrainer(ORPOTrainer):
        def tokenize_row(self, feature, model=None):
            return orpo_row(feature)

        def concatenated_forward(self, model, batch):
            out = super().concatenated_forward(model, batch)  # (chosen_logps, rejected_logps, chosen_logits, ...)
            return (*out[:4], reply_nll(out[2], batch["chosen_labels"]), *out[5:])

    validate_transforms(cfg.data.transforms)  # a bad spec fails before any model is loaded
    stage = StageRun(cfg)
    tokenizer, policy, _, adapter = policy_and_reference(cfg, with_reference=False)
    train_ds, eval_ds = preference_data(cfg, tokenizer, stage)

    trainer = SharedEncodingORPOTrainer(
        model=policy,
        args=stage.trainer_args(ORPOConfig),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=adapter,
        callbacks=adapters.callbacks(cfg.peft),
    )
    record_reference_kl(stage, trainer, cfg)  # ``kl`` (and ``kl_before``) beside each oracle_reward
    return stage.fit(trainer, tokenizer)

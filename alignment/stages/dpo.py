"""Direct preference optimisation with TRL's DPOTrainer, from an SFT model that is also the reference.

``trainer.loss_type`` takes any of TRL's DPO losses (sigmoid, ipo, hinge, robust, bco_pair, sppo_hard, nca_pair,
apo_zero, apo_down, exo_pair, discopop, sft, ...) or a list of them weighted by ``trainer.loss_weights``
(``[sigmoid, sft]`` is RPO: DPO plus the chosen replies' NLL). Conservative DPO (cDPO, the sigmoid loss with label
smoothing eps: labels assumed flipped with probability eps) is this project's ``loss_type=cdpo`` with
``label_smoothing=eps``; TRL dropped it, and TRL's ``robust`` is rDPO (Chowdhury et al. 2024), an unbiased estimator
that divides by ``1 - 2 eps``, not cDPO.
"""

from __future__ import annotations

import dataclasses
import re
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alignment import adapters
from alignment.data.transforms import validate_transforms
from alignment.errors import AlignmentError
from alignment.stages.preference_inputs import (
    KeepsLengthColumn,
    needs_separate_reference,
    policy_and_reference,
    preference_data,
)
from alignment.stages.reference_kl import record_reference_kl
from alignment.stages.runner import StageRun
from alignment.stages.task_metrics import task_indices

# The losses that read ``label_smoothing`` (TRL >= 0.29, and our cdpo); elsewhere it has no effect.
SMOOTHED_LOSSES = ("cdpo", "robust", "exo_pair", "aot", "aot_unpaired")
# Losses this project adds to TRL's: name -> what it is.
OWN_LOSSES = {"cdpo": "conservative DPO: -(1-eps) logsigmoid(beta h) - eps logsigmoid(-beta h), eps=label_smoothing"}


def expand_losses(losses: list[str], weights: list[float] | None, eps: float) -> tuple[list[str], list[float]]:
    """TRL loss names and weights computing ``losses``: each ``cdpo`` (weight w) becomes ``sigmoid`` and ``robust``.

    With S(x) = -logsigmoid(beta x), TRL's robust (rDPO) is R = ((1-eps) S(h) - eps S(-h)) / (1-2 eps), so
    cDPO = (1-eps) S(h) + eps S(-h) = 2 (1-eps) S(h) - (1-2 eps) R exactly, per pair: TRL's own loss code (and its
    f-divergence and WPO weighting, which act per loss before the weighted sum) computes cDPO with no copy of it.
    """
    weights = list(weights) if weights is not None else [1.0] * len(losses)
    out_losses, out_weights = [], []
    for loss, weight in zip(losses, weights, strict=True):
        if loss != "cdpo":
            out_losses.append(loss)
            out_weights.append(float(weight))
        elif eps == 0.0:
            out_losses.append("sigmoid")
            out_weights.append(float(weight))
        else:
            out_losses += ["sigmoid", "robust"]
            out_weights += [2.0 * (1.0 - eps) * weight, -(1.0 - 2.0 * eps) * weight]
    return out_losses, out_weights


def trl_loss_types() -> list[str]:
    """TRL's DPO loss names, read from DPOConfig's own help so a newer TRL's losses are accepted too."""
    from trl import DPOConfig

    help_text = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type").metadata.get("help", "")
    return re.findall(r"`'(\w+)'`", help_text)


def check_loss_settings(trainer: dict[str, Any]) -> list[str]:
    """Validate ``trainer.loss_type``/``loss_weights``/``label_smoothing`` before any model is loaded."""
    losses = trainer.get("loss_type") or ["sigmoid"]
    if not isinstance(losses, str | list | tuple) or not all(isinstance(x, str) for x in losses):
        raise AlignmentError(f"trainer.loss_type={losses!r} must be a DPO loss name or a list of them, e.g. [sigmoid]")
    losses = [losses] if isinstance(losses, str) else list(losses)
    known = trl_loss_types()
    known = [*known, *OWN_LOSSES] if known else []
    unknown = [x for x in losses if known and x not in known]
    if unknown:
        raise AlignmentError(
            f"trainer.loss_type: unknown DPO loss {unknown[0]!r}; this TRL knows {', '.join(known)} "
            "(a list combines losses, e.g. trainer.loss_type=[sigmoid,sft] trainer.loss_weights=[1.0,0.5])"
        )
    weights = trainer.get("loss_weights")
    if weights is not None and (
        not isinstance(weights, list)
        or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in weights)
    ):
        raise AlignmentError(f"trainer.loss_weights={weights!r} must be a list of numbers, one per loss")
    if weights is not None and len(weights) != len(losses):
        raise AlignmentError(
            f"trainer.loss_weights has {len(weights)} values for {len(losses)} losses in trainer.loss_type "
            f"{losses}; give one weight per loss, or leave loss_weights unset for equal weights"
        )
    smoothing = float(trainer.get("label_smoothing") or 0.0)
    if smoothing and not any(x in SMOOTHED_LOSSES for x in losses):
        raise AlignmentError(
            f"trainer.label_smoothing={smoothing} has no effect with trainer.loss_type={losses}: in TRL >= 0.29 "
            f"only {', '.join(SMOOTHED_LOSSES)} read it. For conservative DPO use trainer.loss_type=cdpo "
            "(label_smoothing in [0, 0.5)), or set trainer.label_smoothing=0"
        )
    for name in ("cdpo", "robust"):
        if name in losses and not 0.0 <= smoothing < 0.5:
            raise AlignmentError(
                f"trainer.label_smoothing={smoothing} must lie in [0, 0.5) for loss_type {name} "
                "(the assumed share of flipped labels; 0.1 is a common choice)"
            )
    if "exo_pair" in losses and smoothing == 0.0:
        raise AlignmentError("loss_type exo_pair needs trainer.label_smoothing > 0 (the EXO paper uses 1e-3)")
    return losses


@cache
def dpo_trainer_class() -> type:
    """TRL's DPOTrainer on the shared data layer's encoded pairs, with this project's losses (``cdpo``)."""
    from trl import DPOTrainer

    class SharedEncodingDPOTrainer(KeepsLengthColumn, DPOTrainer):
        """The pairs arrive encoded by the shared data layer; TRL's own text tokenisation is skipped."""

        def __init__(self, *args, **kwargs):
            config = kwargs["args"]
            requested = (config.loss_type, config.loss_weights)
            if any(x in OWN_LOSSES for x in config.loss_type):
                # TRL reads the loss list once, here; the arguments keep the names the user gave.
                losses = expand_losses(list(config.loss_type), config.loss_weights, float(config.label_smoothing))
                config.loss_type, config.loss_weights = losses
            try:
                super().__init__(*args, **kwargs)
            finally:
                config.loss_type, config.loss_weights = requested

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return SharedEncodingDPOTrainer


def run(cfg: DictConfig) -> dict:
    from trl import DPOConfig

    check_loss_settings(OmegaConf.to_container(cfg.trainer, resolve=True))
    validate_transforms(cfg.data.transforms)  # a bad spec fails before any model is loaded
    stage = StageRun(cfg)
    # Precomputed reference log-probs come from the policy itself before its first step, unless the reference is
    # another model: then that model is loaded (and kept) as usual.
    precompute = bool(cfg.trainer.get("precompute_ref_log_probs", False))
    with_reference = not precompute or needs_separate_reference(cfg)
    tokenizer, policy, reference, adapter = policy_and_reference(cfg, with_reference=with_reference)
    train_ds, eval_ds = preference_data(cfg, tokenizer, stage)

    trainer = dpo_trainer_class()(
        model=policy,
        ref_model=reference,
        args=stage.trainer_args(DPOConfig),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=adapter,
        callbacks=adapters.callbacks(cfg.peft),
    )
    stage.per_task = (task_indices(trainer.eval_dataset), ["eval_rewards/accuracies", "eval_rewards/margins"])
    record_reference_kl(stage, trainer, cfg)  # ``kl`` (and ``kl_before``) beside each oracle_reward
    return stage.fit(trainer, tokenizer)

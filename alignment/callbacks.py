"""Trainer callbacks every stage gets: stop on a non-finite loss before it reaches the weights or a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import TrainerCallback

from alignment.errors import AlignmentError


def non_finite_error(step: int, what: str, stage_dir: Path | str) -> AlignmentError:
    """The error for a NaN/inf at ``step``, naming the last good checkpoint left in ``stage_dir``."""
    from alignment.stages.run_state import checkpoint_steps

    done = checkpoint_steps(Path(stage_dir))
    kept = f"the last good checkpoint is {Path(stage_dir) / f'checkpoint-{done[-1]}'}" if done else "no checkpoint yet"
    return AlignmentError(
        f"{what} at step {step}: training stopped before the bad update was applied or saved; {kept}. Lower "
        "trainer.learning_rate (or check the data) and re-run with resume=fresh, or re-run as is to resume from "
        "that checkpoint"
    )


class NonFiniteGuard(TrainerCallback):
    """Raise an AlignmentError as soon as a gradient (hence the loss) is NaN or inf, before the optimiser step.

    Checking the gradients each step, rather than the logged loss, catches the first bad step even when
    ``logging_steps`` > 1 (and when ``logging_nan_inf_filter`` hides NaN losses from the log), and stops before the
    weights or any checkpoint are touched. fp16 runs are skipped: their gradient scaler handles overflow itself.
    """

    def __init__(self, stage_dir: Path | str) -> None:
        self.stage_dir = Path(stage_dir)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None or getattr(args, "fp16", False):
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            raise non_finite_error(state.global_step + 1, "the loss or its gradients became NaN/inf", self.stage_dir)

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            raise non_finite_error(state.global_step, f"the training loss is {loss}", self.stage_dir)

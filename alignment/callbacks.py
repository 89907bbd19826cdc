"""Trainer callbacks every stage gets: stop on a non-finite loss before it reaches the weights or a checkpoint;
live records (``train.log``, ``log_history.jsonl``); checkpoints by time, each with a manifest written last; a clean
stop on Ctrl-C; progress lines."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback

from alignment import interrupt
from alignment.errors import AlignmentError
from alignment.progress import ProgressLines

# Every logged metrics dict, one line each, to the stage's train.log only (the console has its bar or lines).
metrics_log = logging.getLogger("alignment.metrics")
metrics_log.propagate = False


def non_finite_error(step: int, what: str, stage_dir: Path | str) -> AlignmentError:
    """The error for a NaN/inf at ``step``, naming the last good checkpoint left in ``stage_dir``."""
    from alignment.stages.checkpoints import checkpoint_steps

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


# Held-out metrics named in the one-line summary of each evaluation.
_SUMMARY_KEYS = ("eval_loss", "eval_accuracy", "eval_rewards/accuracies")


def eval_summary(name: str, step: int, metrics: dict, rows: int | None) -> str:
    """``[eval] dpo step 300: eval_loss 0.41, eval_rewards/accuracies 0.94 (n=600)``."""
    shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in _SUMMARY_KEYS if isinstance(metrics.get(k), int | float))
    return f"[eval] {name} step {step}: {shown}" + (f" (n={rows})" if rows is not None else "")


def any_rank(flag: bool, device=None) -> bool:
    """``flag`` or'ed over all processes, so every rank takes the same save/stop decision (a save is collective)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    if torch.distributed.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


class TimedSave(TrainerCallback):
    """Ask the Trainer for a checkpoint when ``minutes`` passed since the last save (or the start of training).

    Step-based saves reset the clock too; ``save_total_limit`` rotates these checkpoints as usual.
    """

    def __init__(self, minutes: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = 60.0 * float(minutes or 0)
        self.clock = clock
        self.last = clock()

    def due(self) -> bool:
        return self.seconds > 0 and self.clock() - self.last >= self.seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds > 0 and any_rank(self.due(), args.device):
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last = self.clock()


class CheckpointManifest(TrainerCallback):
    """Once a checkpoint is saved, write its manifest ``checkpoint.json`` (each file and its size), last: a resume
    checks the checkpoint against it and skips one that was cut short or damaged (stages/checkpoints.py)."""

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size() > 1:
                torch.distributed.barrier()  # every process has written its RNG file
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and ckpt.is_dir():
            from alignment.stages.checkpoints import write_manifest

            write_manifest(ckpt)


class InterruptStop(TrainerCallback):
    """After a Ctrl-C (:mod:`alignment.interrupt`): save a checkpoint at the end of this step and stop training."""

    def on_step_end(self, args, state, control, **kwargs):
        if any_rank(interrupt.stop_requested(), args.device):
            interrupt.request_stop()  # every rank: the stage then raises the same RunInterrupted
            control.should_save = True
            control.should_training_stop = True


def is_summary(row: dict) -> bool:
    """HF's end-of-training row (``train_loss``, ``train_runtime``, ...); step rows may carry ``train_runtime``."""
    return "train_loss" in row


def truncate_log_history(path: Path, step: int) -> None:
    """Keep the rows of ``log_history.jsonl`` up to ``step`` (a resumed checkpoint's), so the resumed run's rows
    follow without duplicates; a stopped run's end-of-training summary row (the one with ``train_loss``) goes too."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if int(row.get("step", 0)) <= step and not is_summary(row):
            keep.append(line + "\n")
    from alignment.atomic import write_atomic

    write_atomic(path, "".join(keep))


class LiveLog(TrainerCallback):
    """Each logged metrics dict as it happens: one line in ``train.log``; during training also one row appended
    (and flushed) to ``log_history.jsonl``, exactly the row HF adds to ``state.log_history``."""

    def __init__(self, name: str, history_path: Path, eval_rows: int | None = None) -> None:
        self.name, self.history_path, self.eval_rows = name, Path(history_path), eval_rows
        self.training = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.training and state.is_world_process_zero:  # evaluations inside training (eval_strategy)
            logging.getLogger("alignment").info(
                eval_summary(self.name, state.global_step, metrics or {}, self.eval_rows)
            )

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not state.log_history:
            return
        row = state.log_history[-1]
        metrics_log.info("%s step %d: %s", self.name, row.get("step", state.global_step), json.dumps(row))
        if not self.training or (interrupt.stop_requested() and is_summary(row)):
            return  # an interrupted run's summary row would be stale once it resumes
        with self.history_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()


class ProgressLog(TrainerCallback):
    """Training progress as plain lines (``step 120/549 (22%), loss 1.23, 2.1 s/step, eta 15m10s``) where stderr is
    not a terminal and the Trainer runs with ``disable_tqdm=True``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lines: ProgressLines | None = None
        self.eval_lines: ProgressLines | None = None
        self.loss: float | None = None

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.eval_lines is None:  # the first batch is done: rates count from here (no event comes before it)
            total = len(eval_dataloader) if hasattr(eval_dataloader, "__len__") else 0
            self.eval_lines = ProgressLines(total, unit="batch", desc="eval", clock=self.clock)
            self.eval_done = 0
        self.eval_done += 1
        self.eval_lines.update(self.eval_done)

    def on_evaluate(self, args, state, control, **kwargs):
        self.eval_lines = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.lines = ProgressLines(state.max_steps, clock=self.clock)
            self.lines.update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if isinstance((logs or {}).get("loss"), int | float):
            self.loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        if self.lines is not None:
            self.lines.update(state.global_step, {"loss": self.loss} if self.loss is not None else None)

    def on_train_end(self, args, state, control, **kwargs):
        self.lines = None

"""Checkpoints of our PPO loop: ``checkpoint-<step>/`` holding accelerate's ``save_state`` plus PPO's own state.

Layout: accelerate's files (``model.safetensors`` with every trainable parameter of the policy and value model, frozen
ones never change; ``optimizer.bin``; per process ``random_states_<rank>.pkl``, the python, numpy, torch and CUDA
generators; ``custom_checkpoint_0.pkl`` the learning-rate scheduler and ``custom_checkpoint_1.pkl`` the data-order
generator), then ``ppo_state.json`` (step, prompt queue, KL coefficient, history), written after them so a checkpoint
with a readable one is complete, as HF Trainer's ``trainer_state.json``; last the manifest ``checkpoint.json`` (each
file and its size), against which a resume checks the checkpoint (``alignment.stages.checkpoints``). accelerate
reads the two custom states with pickle (``weights_only=False``), as HF Trainer its RNG file: resume only your own runs.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from alignment import interrupt
from alignment.errors import AlignmentError, RunInterrupted

logger = logging.getLogger(__name__)
STATE_FILE = "ppo_state.json"
WEIGHTS_FILE = "model.safetensors"  # accelerate's name for the first prepared model's weights


class _GeneratorState:
    """A ``torch.Generator`` as accelerate's ``register_for_checkpointing`` wants it: ``state_dict`` and back."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _register(trainer) -> None:
    """Once per trainer: tell its Accelerator what else to save (the scheduler is stepped by hand, so not prepared,
    and the data order) and to keep only the trainable weights (frozen ones never change: a LoRA run saves adapters)."""
    if getattr(trainer, "_checkpointing", False):
        return
    acc = trainer.accelerator
    acc.register_for_checkpointing(trainer.scheduler, _GeneratorState(trainer._order))

    def keep_trainable(models, weights, output_dir) -> None:
        # The state dicts are of the models as accelerate keeps them (unwrapped: no DDP ``module.`` prefix).
        for i, state in enumerate(weights):  # empty under DeepSpeed, which saves its own engine files
            names = _trainable_names(models[i])
            weights[i] = {k: v for k, v in state.items() if k in names}

    acc.register_save_state_pre_hook(keep_trainable)
    trainer._checkpointing = True


def save_checkpoint(trainer, stage_dir: Path | str, total_limit: int | None = None) -> Path:
    """Write ``checkpoint-<trainer.step>/`` (state file, then manifest, last) and keep only the newest ``total_limit``.

    Collective: every process calls it (each saves its own RNG); the main process writes the rest.
    """
    from alignment.stages.checkpoints import write_manifest

    _register(trainer)
    acc = trainer.accelerator
    stage_dir = Path(stage_dir)
    ckpt = stage_dir / f"checkpoint-{trainer.step}"
    if acc.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
        ckpt.mkdir(parents=True)
    acc.wait_for_everyone()
    acc.save_state(str(ckpt))
    acc.wait_for_everyone()
    if acc.is_main_process:
        state = {
            "step": trainer.step,
            "queue": list(trainer._queue),
            "kl_coef": float(trainer.kl_ctl.value),
            "history": trainer.history,
        }
        tmp = ckpt / f".{STATE_FILE}"
        tmp.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        tmp.replace(ckpt / STATE_FILE)
        write_manifest(ckpt)  # last: a resume checks the files against it (alignment/stages/checkpoints.py)
        _rotate(stage_dir, total_limit)
    acc.wait_for_everyone()
    return ckpt


def _rotate(stage_dir: Path, total_limit: int | None) -> None:
    from alignment.stages.checkpoints import checkpoint_steps

    if not total_limit or total_limit <= 0:
        return
    for step in checkpoint_steps(stage_dir)[:-total_limit]:
        shutil.rmtree(stage_dir / f"checkpoint-{step}", ignore_errors=True)


def load_checkpoint(trainer, ckpt: Path | str) -> int:
    """Restore weights, optimiser, scheduler, RNG, data order and history from ``ckpt``; return its step."""
    from safetensors import safe_open

    ckpt = Path(ckpt)
    if (ckpt / "trainable.safetensors").exists():
        raise AlignmentError(
            f"{ckpt} was written by an earlier version of the PPO loop, in a layout it no longer reads; "
            "re-run with resume=fresh"
        )
    rng = ckpt / f"random_states_{trainer.accelerator.process_index}.pkl"
    if not rng.is_file():  # accelerate would skip a missing RNG file with a log line: the run would silently differ
        raise AlignmentError(f"{rng} is missing: this checkpoint cannot resume the run; re-run with resume=fresh")
    _register(trainer)
    with safe_open(str(ckpt / WEIGHTS_FILE), framework="pt") as saved:
        if set(saved.keys()) != _trainable_names(trainer.accelerator.unwrap_model(trainer.model)):
            raise AlignmentError(
                f"{ckpt} holds other trainable parameters than this run's models; re-run with resume=fresh"
            )
    trainer.accelerator.load_state(str(ckpt), strict=False)  # strict=False: the frozen weights are not in the file
    state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    trainer.step = int(state["step"])
    trainer._queue = list(state["queue"])
    trainer.kl_ctl.value = float(state["kl_coef"])
    trainer.history = list(state["history"])
    logger.info("ppo resumed from %s (step %d)", ckpt, trainer.step)
    return trainer.step


class CheckpointCallback:
    """A PPOTrainer callback: stop on a non-finite loss, else save every ``save_steps`` steps and every
    ``save_every_minutes``; after a Ctrl-C (:mod:`alignment.interrupt`) save and stop the loop."""

    def __init__(
        self,
        trainer,
        stage_dir: Path | str,
        save_steps: int,
        total_limit: int | None = None,
        save_every_minutes: float | None = None,
        can_save: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trainer, self.stage_dir, self.save_steps, self.total_limit = (
            trainer,
            Path(stage_dir),
            save_steps,
            total_limit,
        )
        self.seconds = 60.0 * float(save_every_minutes or 0) if can_save else 0.0
        self.can_save, self.clock = can_save, clock
        self.last_save = clock()

    def __call__(self, stats: dict) -> None:
        import math

        from alignment.callbacks import non_finite_error

        bad = [k for k in ("loss", "policy_loss", "value_loss") if k in stats and not math.isfinite(stats[k])]
        if bad:
            raise non_finite_error(self.trainer.step, f"the PPO {bad[0]} is {stats[bad[0]]}", self.stage_dir)
        by_steps = self.save_steps > 0 and self.trainer.step % self.save_steps == 0
        by_time, stop = _any_process(
            self.trainer,
            self.seconds > 0 and self.clock() - self.last_save >= self.seconds,
            interrupt.stop_requested(),
        )
        if by_steps or by_time or (stop and self.can_save):
            save_checkpoint(self.trainer, self.stage_dir, self.total_limit)
            self.last_save = self.clock()
        if stop:
            interrupt.request_stop()
            self.trainer.should_stop = True


def _any_process(trainer, *flags: bool) -> tuple[bool, ...]:
    """Each flag or'ed over the processes: a save is collective, so all must decide alike."""
    acc = trainer.accelerator
    if acc.num_processes == 1:
        return flags
    t = torch.tensor([float(f) for f in flags], device=acc.device)
    return tuple(bool(x > 0) for x in acc.reduce(t, reduction="sum").tolist())


def stopped(trainer, stage) -> RunInterrupted:
    """The error for a PPO run stopped by Ctrl-C, after making sure its last step is in a checkpoint if it can be."""
    from alignment.stages.checkpoints import checkpoint_steps

    kept = stage.dir / f"checkpoint-{trainer.step}"
    if trainer.step and trainer.step not in checkpoint_steps(stage.dir) and _can_save(trainer):
        save_checkpoint(trainer, stage.dir, trainer.settings.save_total_limit)  # Ctrl-C came after the last step
    trainer.accelerator.wait_for_everyone()
    return interrupt.interrupted((stage.name, stage.dir), kept if kept.is_dir() else None)


def _can_save(trainer) -> bool:
    from accelerate.utils import DistributedType

    return trainer.accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def resume(trainer, stage) -> None:
    """Wire checkpointing into a stage's PPOTrainer and restore its newest checkpoint (``resume=auto``)."""
    settings = trainer.settings
    sharded = not _can_save(trainer)
    if sharded and settings.save_steps > 0:
        # save_state would write ZeRO/FSDP engine states, but a PPO resume from them is untested (and model.safetensors
        # is absent there): refused until a multi-process ZeRO resume test exists.
        raise AlignmentError(
            "PPO checkpoints (trainer.save_steps) are not supported under DeepSpeed or FSDP yet; set "
            "trainer.save_steps=0, or use distributed=ddp"
        )
    minutes = stage.cfg.get("save_every_minutes")
    if sharded and minutes:
        logger.info("ppo under DeepSpeed/FSDP: no checkpoints by time (save_every_minutes), nor on Ctrl-C")
    callback = CheckpointCallback(
        trainer, stage.dir, settings.save_steps, settings.save_total_limit, minutes, can_save=not sharded
    )
    trainer.callbacks.append(callback)
    ckpt = stage.last_checkpoint()
    if ckpt:
        from alignment.atomic import write_atomic

        stage.metrics["resumed_from_step"] = load_checkpoint(trainer, ckpt)
        # The step log restarts empty; put the restored steps back so it reads as one uninterrupted run.
        if trainer.accelerator.is_main_process:
            rows = "".join(json.dumps(h, ensure_ascii=False) + "\n" for h in trainer.history)
            write_atomic(stage.dir / "log_history.jsonl", rows)

"""Checkpoints of our PPO loop: ``checkpoint-<step>/`` with weights, optimiser, scheduler, RNG and data order.

Layout (``ppo_state.json`` is written after the other files, so a checkpoint with a readable one is complete, as HF
Trainer's ``trainer_state.json``): ``trainable.safetensors`` (every trainable parameter of the policy and value model:
frozen ones never change), ``optimizer.pt`` and ``scheduler.pt`` (loaded with ``weights_only=True``), per process
``rng-<rank>.pt`` (torch CPU and CUDA generators, the data-order generator) and ``rng-<rank>.json`` (python and
numpy), and ``ppo_state.json`` (step, prompt queue, KL coefficient, history); last the manifest ``checkpoint.json``
(each file and its size), against which a resume checks the checkpoint (``alignment.stages.checkpoints``).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from alignment import interrupt
from alignment.errors import AlignmentError, RunInterrupted

logger = logging.getLogger(__name__)
STATE_FILE = "ppo_state.json"


def _trainable(trainer) -> dict[str, torch.Tensor]:
    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    return {name: p for name, p in wrapper.named_parameters() if p.requires_grad}


def save_checkpoint(trainer, stage_dir: Path | str, total_limit: int | None = None) -> Path:
    """Write ``checkpoint-<trainer.step>/`` (state file last) and keep only the newest ``total_limit`` of them.

    Every process saves its own RNG (``rng-<rank>.*``: each samples with its own seed); the main process saves the
    rest. Weights and optimiser are saved whole, as under DDP; sharded DeepSpeed/FSDP optimiser states are not handled.
    """
    from safetensors.torch import save_file

    from alignment.stages.checkpoints import write_manifest

    acc = trainer.accelerator
    stage_dir = Path(stage_dir)
    ckpt = stage_dir / f"checkpoint-{trainer.step}"
    if acc.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
        ckpt.mkdir(parents=True)
    acc.wait_for_everyone()
    rank = acc.process_index
    rng = {"cpu": torch.get_rng_state(), "order": trainer._order.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, ckpt / f"rng-{rank}.pt")
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    host_rng = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *[float(x) for x in np_state[2:]]],
    }
    (ckpt / f"rng-{rank}.json").write_text(json.dumps(host_rng), encoding="utf-8")
    acc.wait_for_everyone()
    if acc.is_main_process:
        weights = {k: v.detach().cpu().contiguous() for k, v in _trainable(trainer).items()}
        save_file(weights, ckpt / "trainable.safetensors")
        torch.save(trainer.optimizer.state_dict(), ckpt / "optimizer.pt")
        torch.save(trainer.scheduler.state_dict(), ckpt / "scheduler.pt")
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
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    params = _trainable(trainer)
    saved = load_file(ckpt / "trainable.safetensors")
    if set(saved) != set(params):
        raise AlignmentError(
            f"{ckpt} holds other trainable parameters than this run's models; re-run with resume=fresh"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name].to(p.device, p.dtype))
    trainer.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu"))
    trainer.scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    rank = trainer.accelerator.process_index
    rng = torch.load(ckpt / f"rng-{rank}.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    trainer._order.set_state(rng["order"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    host_rng = json.loads((ckpt / f"rng-{rank}.json").read_text(encoding="utf-8"))
    version, py_state, gauss = host_rng["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = host_rng["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
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
        # Their optimiser states are sharded across processes; saving rank 0's alone could not resume.
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

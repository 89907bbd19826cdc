"""Inside the ranks: who am I (rank, world size, launched or not), barriers, gathering ZeRO-3 weights, merging
adapters, the DeepSpeed chores a stage does around its trainer, and its peak memory.

Everything here runs in a process that ``alignment.launch`` may have started; in a single process each helper is a
no-op or answers for rank 0 of one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

LAUNCHED_ENV = "ALIGNMENT_LAUNCHED"


# -- where am I --------------------------------------------------------------------------------------------------
def is_launched() -> bool:
    """True inside a process started by a launcher (ours, accelerate, torchrun, deepspeed, srun + torchrun)."""
    return os.environ.get(LAUNCHED_ENV) == "1" or "LOCAL_RANK" in os.environ


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that writes logs, metrics, configs and models."""
    return process_rank() == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    import torch.distributed as dist

    if world_size() <= 1:
        return
    if not (dist.is_available() and dist.is_initialized()):
        from accelerate import PartialState

        PartialState()
    dist.barrier()


# -- ZeRO-3 ------------------------------------------------------------------------------------------------------
def is_zero3_model(model) -> bool:
    """True when the model's parameters are partitioned by DeepSpeed ZeRO-3."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def full_state_dict(model) -> dict | None:
    """The whole (unsharded) state dict of a ZeRO-3 model on rank 0, gathered one module at a time; other ranks
    get {}. None when the model is not partitioned (save it as it is). Every rank must call this."""
    if not is_zero3_model(model):
        return None
    import deepspeed

    # Parameters still being prefetched by the last forward cannot be gathered: finish those all-gathers first.
    for module in model.modules():
        registry = getattr(module, "ds_inflight_param_registry", None)
        if registry:
            for handle in registry.values():
                handle.wait()
            registry.clear()
    main = is_main_process()
    keys = set(model.state_dict().keys())
    state: dict = {}
    for prefix, module in model.named_modules():
        local = list(module.named_parameters(recurse=False))
        if not local:
            continue
        with deepspeed.zero.GatheredParameters([p for _, p in local], modifier_rank=None):
            if main:
                for name, p in local:
                    key = f"{prefix}.{name}" if prefix else name
                    if key in keys:
                        state[key] = p.detach().cpu().clone()
    if main:
        for name, buf in model.named_buffers():
            if name in keys:
                state[name] = buf.detach().cpu().clone()
    return state


@contextlib.contextmanager
def gathered_params(model):
    """Parameters gathered whole on every rank for the block (ZeRO-3); a no-op otherwise."""
    if not is_zero3_model(model):
        yield model
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield model


def merge_adapter(model) -> tuple[Any, dict | None]:
    """Merge a PEFT adapter into its base model. Under ZeRO-3 the weights are gathered for the merge, and the merged
    state dict comes back too (on rank 0; {} elsewhere) because the merged sharded model cannot be gathered again."""
    if not is_zero3_model(model):
        return model.merge_and_unload(), None
    with gathered_params(model):
        merged = model.merge_and_unload()
        state = {k: v.detach().cpu().clone() for k, v in merged.state_dict().items()} if is_main_process() else {}
    return merged, state


# -- a stage's trainer under DeepSpeed ---------------------------------------------------------------------------
def defer_evaluation(trainer, record: Callable[[dict], None], evaluate: Callable[[], dict] | None = None) -> bool:
    """Under DeepSpeed an evaluation before training builds an inference engine that training cannot reuse, so run
    it when training begins instead, on the training engine. True when deferred (``record`` gets the metrics of
    ``evaluate``, by default ``trainer.evaluate``)."""
    evaluate = evaluate or trainer.evaluate
    if not getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "deepspeed", None) is not None:
        return False
    from transformers import TrainerCallback

    class EvaluateAtTrainBegin(TrainerCallback):
        done = False

        def on_train_begin(self, args, state, control, **kwargs):
            if not self.done:
                self.done = True
                record(evaluate())

    trainer.add_callback(EvaluateAtTrainBegin())
    return True


def forget_previous_stage() -> None:
    """Drop the DeepSpeed config an earlier stage in this process registered with transformers: with it, the next
    stage's models would load already sharded (ZeRO-3 init) but with no engine yet to gather them for generation."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


# -- memory ------------------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

"""A fix for DeepSpeed ZeRO-3, applied in every launched rank before the trainer builds its engine.

ZeRO-3 keeps an fp32 master partition for the optimiser. When the parameters are already fp32 on the optimiser's
device, DeepSpeed means to reuse the parameter partition instead of copying it (``_create_fp32_partitions`` in
``deepspeed/runtime/zero/stage3.py``, "we don't need another copy of the weights"). It decides that by comparing the
partition's ``torch.device`` with the accelerator's device *name*, a string, and ``torch.device("cpu") == "cpu"`` is
False, so the copy is always made: 4 bytes per parameter over the world size, on every rank, in fp32 training.

:func:`reuse_fp32_partitions` turns the name into a ``torch.device`` just before that method runs, so the intended
branch is taken. Measured on a 298M-parameter model, 2 CPU processes: 587 MiB less peak memory per rank, the same
loss to the last digit (BENCHMARKS.md). Mixed-precision training (bf16/fp16 parameters) needs the copy and is not
affected, nor is optimiser offload (its device is not a plain string).
"""

from __future__ import annotations

_PATCHED = "_alignment_reuses_fp32_partitions"


def reuse_fp32_partitions() -> bool:
    """Patch DeepSpeed's ZeRO-3 optimiser once per process; True when the patch is in place."""
    import torch

    try:
        from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3 as Stage3
    except ImportError:
        return False
    original = getattr(Stage3, "_create_fp32_partitions", None)
    if original is None:
        return False
    if getattr(original, _PATCHED, False):
        return True

    def create_fp32_partitions(self, *args, **kwargs):
        # Only the plain device name: the offload path uses OffloadDeviceEnum (a str subclass), compared elsewhere.
        if type(getattr(self, "device", None)) is str:
            self.device = torch.device(self.device)
        return original(self, *args, **kwargs)

    setattr(create_fp32_partitions, _PATCHED, True)
    Stage3._create_fp32_partitions = create_fp32_partitions
    return True

"""Several processes or machines from the same CLI: ``distributed=zero3 distributed.num_processes=2`` re-runs
``python -m alignment`` under ``accelerate launch``, so nobody writes a launch command by hand.

The launching process fixes the run dir and passes it as ``output_dir=`` to every rank, so all ranks share one Hydra
output dir and resolved config; it alone writes Hydra's ``.hydra/`` and top-level log. Inside the launched processes
only rank 0 writes files (``alignment.distributed.is_main_process``). ``distributed.dry_run=true`` prints the
command(s) instead. This module also adjusts ``trainer.*`` and DeepSpeed settings to the topology; what runs inside
the ranks (rank, barriers, ZeRO-3 gathering) is in ``alignment.distributed``.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from alignment.config import Backend
from alignment.distributed import LAUNCHED_ENV, is_launched, is_main_process, world_size
from alignment.errors import AlignmentError
from alignment.paths import CONF_DIR

log = logging.getLogger("alignment")

DEEPSPEED_BACKENDS = (Backend.zero2, Backend.zero3, Backend.zero3_offload)
DEFAULT_MULTI_NODE_PORT = 29500
# Overrides the launcher sets itself on every rank; the user's values for them are replaced.
_REPLACED = ("output_dir", "distributed.dry_run", "hydra.output_subdir", "hydra.job_logging.root.handlers")


# -- config ------------------------------------------------------------------------------------------------------
def validate(dist: DictConfig) -> None:
    """Reject topologies that cannot run, naming the ``distributed.*`` key to change (the schema checks the backend)."""
    if dist.num_processes < 1 or dist.num_machines < 1:
        raise AlignmentError("distributed.num_processes and distributed.num_machines must be at least 1")
    if not 0 <= dist.machine_rank < dist.num_machines:
        raise AlignmentError(
            f"distributed.machine_rank={dist.machine_rank} must be in [0, num_machines={dist.num_machines})"
        )
    if dist.backend == Backend.single and dist.num_processes * dist.num_machines > 1:
        raise AlignmentError(
            "distributed=single runs one process; for several pick a backend: distributed=ddp (or zero2, zero3, "
            f"zero3_offload, fsdp) distributed.num_processes={dist.num_processes}"
        )
    if dist.num_machines > 1 and not dist.main_process_ip:
        raise AlignmentError(
            "distributed.num_machines > 1 needs distributed.main_process_ip=<address of the machine_rank=0 machine>"
        )
    if dist.global_batch_size is not None and dist.global_batch_size < 1:
        raise AlignmentError(f"distributed.global_batch_size must be positive, got {dist.global_batch_size}")
    deepspeed_config_path(dist)


def deepspeed_config_path(dist: DictConfig) -> Path | None:
    """The DeepSpeed JSON of a ZeRO backend: a name in ``conf/deepspeed/`` or a path; None for other backends."""
    if dist.backend not in DEEPSPEED_BACKENDS:
        return None
    name = dist.get("deepspeed_config") or f"{dist.backend}.json"
    path = Path(name).expanduser()
    candidates = [path] if path.is_absolute() else [CONF_DIR / "deepspeed" / name, Path.cwd() / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise AlignmentError(
        f"distributed.deepspeed_config='{name}' not found (looked in {', '.join(str(c) for c in candidates)}); "
        "name a file in conf/deepspeed/ or give a path"
    )


def total_processes(dist: DictConfig) -> int:
    return int(dist.num_processes) * int(dist.num_machines)


def needs_launch(dist: DictConfig) -> bool:
    """True when this (not yet launched) process must re-run itself under a launcher."""
    return not is_launched() and (dist.backend != Backend.single or total_processes(dist) > 1)


# -- the command -------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_overrides(overrides: list[str], output_dir: str) -> list[str]:
    """The user's overrides for every rank, plus one fixed run dir and no per-rank Hydra files or log."""
    keep = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in _REPLACED]
    return [
        *keep,
        f"output_dir={Path(output_dir).resolve()}",
        "hydra.output_subdir=null",
        "hydra.job_logging.root.handlers=[console]",
    ]


def launch_commands(
    dist: DictConfig, overrides: list[str], output_dir: str, port: int | None = None
) -> list[list[str]]:
    """One ``accelerate launch`` command per machine (``machine_rank`` 0..num_machines-1), running this CLI."""
    validate(dist)
    machines = int(dist.num_machines)
    if port is None:
        port = dist.main_process_port or (DEFAULT_MULTI_NODE_PORT if machines > 1 else _free_port())
    head = [sys.executable, "-m", "accelerate.commands.launch"]
    head += ["--num_processes", str(total_processes(dist)), "--num_machines", str(machines)]
    if dist.backend in DEEPSPEED_BACKENDS:
        head += ["--use_deepspeed", "--deepspeed_config_file", str(deepspeed_config_path(dist))]
        # Under ZeRO-3 a model loaded after the trainer settings exist is created already sharded.
        head += ["--zero3_init_flag", "true" if dist.backend != Backend.zero2 else "false"]
        if machines > 1:
            head += ["--deepspeed_multinode_launcher", "standard"]
    elif dist.backend == Backend.fsdp:
        head += ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD"]
        head += ["--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT"]
    else:
        # Also on CPU: accelerate's --cpu starts one process (it expects mpirun), while --multi_gpu starts torchrun
        # workers, which then use gloo (see _prepare_launched).
        head += ["--multi_gpu"]
    head += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    head += [str(a) for a in dist.get("launch_args") or []]
    tail = ["-m", "alignment", *child_overrides(overrides, output_dir)]
    commands = []
    for rank in range(machines):
        cmd = list(head)
        if machines > 1:
            cmd += ["--machine_rank", str(rank), "--main_process_ip", str(dist.main_process_ip)]
        cmd += ["--main_process_port", str(port)]
        commands.append(cmd + tail)
    return commands


def format_command(cmd: list[str]) -> str:
    return shlex.join(cmd)


# -- entry -------------------------------------------------------------------------------------------------------
def maybe_launch(cfg: DictConfig, overrides: list[str]) -> bool:
    """Launch the processes ``distributed.*`` asks for, or print them (dry run); True when this process is done.

    In an already launched process, prepare it (gloo on CPU for DDP/FSDP) and return False: it runs the work.
    """
    dist = cfg.distributed
    validate(dist)
    if is_launched():
        _prepare_launched(dist)
        return False
    if not needs_launch(dist):
        if dist.dry_run:
            print("distributed=single: no launcher; the run is: python -m alignment " + shlex.join(overrides))
            return True
        return False
    commands = launch_commands(dist, overrides, cfg.output_dir)
    if dist.dry_run:
        for rank, cmd in enumerate(commands):
            if len(commands) > 1:
                print(f"# machine_rank={rank}")
            print(format_command(cmd))
        return True
    if dist.backend == Backend.fsdp:
        import torch

        if not torch.cuda.is_available():
            raise AlignmentError(
                "distributed=fsdp needs GPUs (accelerate's FSDP has no CPU path); on CPU use distributed=ddp or zero3"
            )
    cmd = commands[int(dist.machine_rank)]
    log.info("launching %d processes: %s", total_processes(dist), format_command(cmd))
    env = dict(os.environ, **{LAUNCHED_ENV: "1"})
    code = subprocess.run(cmd, env=env).returncode
    if code != 0:
        raise AlignmentError(f"the launched processes failed (exit code {code}); their output is above")
    return True


def _prepare_launched(dist: DictConfig) -> None:
    import torch

    if dist.backend in (Backend.ddp, Backend.fsdp) and not torch.cuda.is_available():
        # accelerate's launcher resets this to False; without it DDP/FSDP on CPU would fall back to one process.
        os.environ["ACCELERATE_USE_CPU"] = "true"
    if dist.backend in DEEPSPEED_BACKENDS and not torch.cuda.is_available() and not os.environ.get("ALIGNMENT_DS_SHM"):
        # DeepSpeed on CPU would JIT-compile a shared-memory all-reduce first (minutes, needs a C++ compiler);
        # gloo alone is correct, and CPU runs are for tests and CI. ALIGNMENT_DS_SHM=1 keeps the fast path.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if dist.backend in DEEPSPEED_BACKENDS:
        from alignment.ds_fixes import reuse_fp32_partitions

        reuse_fp32_partitions()
    if not is_main_process():
        logging.getLogger().setLevel(logging.WARNING)
    if world_size() > 1:
        from accelerate import PartialState

        # Join the process group now (pipelines synchronise before the first stage); accelerate finds no backend for
        # DeepSpeed on CPU by itself, so name gloo, which DeepSpeed's CPU accelerator uses.
        if torch.cuda.is_available():
            PartialState()
        elif dist.backend in DEEPSPEED_BACKENDS:
            PartialState(backend="gloo")
        else:
            PartialState(cpu=True)


# -- trainer settings --------------------------------------------------------------------------------------------
def trainer_values(values: dict[str, Any], dist: DictConfig) -> dict[str, Any]:
    """The ``trainer.*`` values adjusted for the topology: global batch size, and gloo for DeepSpeed on CPU."""
    values = apply_global_batch_size(values, dist)
    if is_launched() and world_size() > 1 and dist.backend in DEEPSPEED_BACKENDS and values.get("ddp_backend") is None:
        import torch

        if not torch.cuda.is_available():
            values = {**values, "ddp_backend": "gloo"}
    return values


def apply_global_batch_size(values: dict[str, Any], dist: DictConfig) -> dict[str, Any]:
    """With ``distributed.global_batch_size``, derive ``gradient_accumulation_steps`` so that per-device batch x
    accumulation x world size stays that number whatever the process count."""
    target = dist.get("global_batch_size")
    if target is None or "per_device_train_batch_size" not in values:
        return values
    per_device = int(values["per_device_train_batch_size"])
    world = world_size() if is_launched() else total_processes(dist)
    if target % (per_device * world):
        raise AlignmentError(
            f"distributed.global_batch_size={target} is not a multiple of trainer.per_device_train_batch_size "
            f"({per_device}) x world size ({world}); change one of them"
        )
    return {**values, "gradient_accumulation_steps": target // (per_device * world)}


# -- DeepSpeed in a custom loop ----------------------------------------------------------------------------------
def fill_deepspeed_auto(plugin, hidden_size: int, micro_batch_size: int) -> None:
    """Fill the ``auto`` values DeepSpeed reads from a dataloader and ``model.config`` when a custom loop (PPO)
    prepares a model without either, the way the HF trainer fills them."""
    config = plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    zero = config.get("zero_optimization", {})
    sizes = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for key, value in sizes.items():
        if zero.get(key) == "auto":
            zero[key] = value

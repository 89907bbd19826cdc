"""The launch command built from ``distributed.*`` (dry run), topology checks and the global batch size."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from alignment.config import DistributedConfig
from alignment.errors import AlignmentError
from alignment.launch import (
    apply_global_batch_size,
    child_overrides,
    deepspeed_config_path,
    fill_deepspeed_auto,
    launch_commands,
    needs_launch,
    validate,
)
from alignment.paths import CONF_DIR
from tests.conftest import run_cli


def dist(**kw) -> OmegaConf:
    return OmegaConf.structured(DistributedConfig(**kw))


def flag(cmd: list[str], name: str) -> str:
    """The value after ``name`` in the accelerate part of the command."""
    return cmd[cmd.index(name) + 1]


def accelerate_args(cmd: list[str]):
    """Parse the command with accelerate's own parser: every flag we emit must exist there."""
    from accelerate.commands.launch import launch_command_parser

    return launch_command_parser().parse_args(cmd[3:])


def test_dry_run_prints_the_zero3_command_and_runs_nothing(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "stage=sft", "distributed=zero3", "distributed.num_processes=2", "distributed.dry_run=true",
        "trainer.max_steps=7", f"output_dir={out}",
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if "accelerate.commands.launch" in line]
    assert len(lines) == 1
    cmd = lines[0]
    assert "--use_deepspeed" in cmd and f"--deepspeed_config_file {CONF_DIR / 'deepspeed' / 'zero3.json'}" in cmd
    assert "--num_processes 2" in cmd and "-m alignment stage=sft" in cmd and "trainer.max_steps=7" in cmd
    assert f"output_dir={out}" in cmd and "distributed.dry_run" not in cmd
    assert not (out / "sft").exists()  # nothing trained


def test_zero_backends_use_their_deepspeed_json():
    for backend, stage in (("zero2", 2), ("zero3", 3), ("zero3_offload", 3)):
        cmd = launch_commands(dist(backend=backend, num_processes=2), ["stage=sft"], "/tmp/x", port=1234)[0]
        args = accelerate_args(cmd)
        assert args.use_deepspeed and args.num_processes == 2 and args.main_process_port == 1234
        config = json.loads(open(args.deepspeed_config_file, encoding="utf-8").read())
        assert config["zero_optimization"]["stage"] == stage
        # batch sizes left to the trainer settings, so the two never disagree
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
            assert config[key] == "auto"
    offload = json.loads(deepspeed_config_path(dist(backend="zero3_offload")).read_text(encoding="utf-8"))
    assert offload["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert offload["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    zero3 = json.loads(deepspeed_config_path(dist(backend="zero3")).read_text(encoding="utf-8"))
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_ddp_and_fsdp_commands():
    ddp = launch_commands(dist(backend="ddp", num_processes=3), ["stage=dpo"], "/tmp/x", port=1)[0]
    args = accelerate_args(ddp)
    assert args.multi_gpu and not args.use_deepspeed and args.num_processes == 3
    fsdp = accelerate_args(launch_commands(dist(backend="fsdp", num_processes=2), [], "/tmp/x", port=1)[0])
    assert fsdp.use_fsdp and not fsdp.use_deepspeed


def test_multi_node_gives_one_command_per_machine():
    cfg = dist(backend="zero3", num_processes=4, num_machines=2, main_process_ip="10.1.2.3")
    commands = launch_commands(cfg, ["pipeline=dpo"], "/shared/run")
    assert len(commands) == 2
    for rank, cmd in enumerate(commands):
        args = accelerate_args(cmd)
        assert args.num_processes == 8 and args.num_machines == 2 and args.machine_rank == rank
        assert args.main_process_ip == "10.1.2.3" and args.main_process_port == 29500
        assert "pipeline=dpo" in cmd and "output_dir=/shared/run" in cmd


def test_child_overrides_fix_the_run_dir_for_every_rank(tmp_path):
    kept = child_overrides(["stage=sft", "output_dir=elsewhere", "distributed.dry_run=true", "seed=3"], str(tmp_path))
    assert kept[:2] == ["stage=sft", "seed=3"]
    assert f"output_dir={tmp_path.resolve()}" in kept and "output_dir=elsewhere" not in kept
    assert "hydra.output_subdir=null" in kept  # only the launching process writes .hydra/
    assert not any("distributed.dry_run" in o for o in kept)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"backend": "single", "num_processes": 2}, "distributed=ddp"),
        ({"backend": "ddp", "num_machines": 2}, "main_process_ip"),
        ({"backend": "ddp", "num_machines": 2, "machine_rank": 2, "main_process_ip": "h"}, "machine_rank"),
        ({"backend": "zero3", "deepspeed_config": "nope.json"}, "nope.json"),
        ({"backend": "ddp", "num_processes": 0}, "num_processes"),
    ],
)
def test_bad_topologies_are_errors_naming_the_key(kw, words):
    with pytest.raises(AlignmentError, match=words.replace(".", r"\.")):
        validate(dist(**kw))


def test_needs_launch_only_outside_launched_processes(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ALIGNMENT_LAUNCHED", raising=False)
    assert not needs_launch(dist())
    assert needs_launch(dist(backend="zero3", num_processes=1))  # DeepSpeed even on one process
    assert needs_launch(dist(backend="ddp", num_processes=2))
    monkeypatch.setenv("LOCAL_RANK", "0")  # started by accelerate/torchrun: never launch again
    assert not needs_launch(dist(backend="ddp", num_processes=2))


def test_global_batch_size_sets_accumulation_from_world_size(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ALIGNMENT_LAUNCHED", raising=False)
    values = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}
    for procs, accumulation in ((1, 8), (2, 4), (4, 2)):
        cfg = dist(backend="ddp", num_processes=procs, global_batch_size=32)
        got = apply_global_batch_size(values, cfg)
        assert got["gradient_accumulation_steps"] == accumulation
        assert got["per_device_train_batch_size"] * got["gradient_accumulation_steps"] * procs == 32
    assert apply_global_batch_size(values, dist()) == values  # off by default
    with pytest.raises(AlignmentError, match="global_batch_size=30"):
        apply_global_batch_size(values, dist(backend="ddp", num_processes=2, global_batch_size=30))


def test_custom_loops_get_deepspeed_auto_sizes_filled():
    from types import SimpleNamespace

    config = json.loads(deepspeed_config_path(dist(backend="zero3")).read_text(encoding="utf-8"))
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 7  # a user's own value stays
    plugin = SimpleNamespace(deepspeed_config=config)
    fill_deepspeed_auto(plugin, hidden_size=64, micro_batch_size=4)
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["zero_optimization"]["reduce_bucket_size"] == 64 * 64
    assert config["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 64 * 64)
    assert config["zero_optimization"]["stage3_param_persistence_threshold"] == 7


def test_fsdp_without_gpus_is_refused_before_launching(monkeypatch, tmp_path):
    import torch

    from alignment.launch import maybe_launch

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ALIGNMENT_LAUNCHED", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = OmegaConf.create({"distributed": dist(backend="fsdp", num_processes=2), "output_dir": str(tmp_path)})
    with pytest.raises(AlignmentError, match="distributed=ddp or zero3"):
        maybe_launch(cfg, ["stage=sft"])
    cfg.distributed.dry_run = True  # the dry run still shows the command
    assert maybe_launch(cfg, ["stage=sft"]) is True

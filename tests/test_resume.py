"""Crash and resume: SIGKILL a stage (or a pipeline mid-second-step) after its first checkpoint, re-run the command.

The resumed run must continue from the checkpoint with model, optimiser, scheduler, RNG and data position restored:
every logged loss and the final eval loss equal an uninterrupted run's. Short runs on one thread each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env, cli_in_one_process, read_metrics

# 24 rows / batch 4 = 6 steps an epoch, 2 epochs; the first checkpoint (step 6) is on the epoch boundary.
SFT_ARGS = [
    "stage=sft",
    "data.max_train_rows=24",
    "data.max_eval_rows=16",
    "data.max_length=128",
    "oracle_eval.enabled=false",
    "trainer.num_train_epochs=2",
    "trainer.per_device_train_batch_size=4",
    "trainer.packing=false",  # padded batches: 24 rows / 4 = 6 steps per epoch, so step 6 is the epoch boundary
    "trainer.save_steps=6",
    "trainer.save_total_limit=1",
    "trainer.logging_steps=1",
    "trainer.warmup_steps=2",
]
ENV = cli_env(OMP_NUM_THREADS="1")


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alignment", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_after_checkpoint(proc: subprocess.Popen, stage_dir: Path, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``stage_dir`` holds a complete checkpoint (its trainer_state.json exists)."""
    deadline = time.monotonic() + timeout
    while not any(stage_dir.glob("checkpoint-*/trainer_state.json")):
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended ({proc.returncode}) before its first checkpoint:\n{proc.stderr.read()}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint within the timeout")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def losses(stage_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (stage_dir / "log_history.jsonl").read_text(encoding="utf-8").splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


@pytest.mark.slow
def test_sft_resumes_after_sigkill_with_the_same_result(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    victim = start(*SFT_ARGS, f"output_dir={run_dir}")
    kill_after_checkpoint(victim, run_dir / "sft")
    assert victim.returncode == -signal.SIGKILL
    # Nothing finished-looking after the kill: no metrics.json, no model/.
    assert not (run_dir / "sft" / "metrics.json").exists()
    assert not (run_dir / "sft" / "model").exists()

    # In one process (one start-up): an uninterrupted reference run; the same command again, which resumes; and once
    # more, which finds the stage finished.
    metrics = str(run_dir / "sft" / "metrics.json")
    again = {"argv": [*SFT_ARGS, f"output_dir={run_dir}"], "read": [metrics]}
    ref, resumed, finished = cli_in_one_process([[*SFT_ARGS, f"output_dir={ref_dir}"], again, again], ENV)
    assert ref["code"] == 0, ref["stderr"][-3000:]
    assert resumed["code"] == 0, resumed["stderr"][-3000:]
    got, want = read_metrics(run_dir / "sft"), read_metrics(ref_dir / "sft")
    assert got["resumed_from_step"] == 6  # the first checkpoint, on the epoch boundary
    assert got["global_step"] == want["global_step"] == 12  # an epoch-boundary resume still runs epoch 2
    assert got["eval_loss"] == pytest.approx(want["eval_loss"], rel=1e-5)
    # Same data in the same order after the resume: every step's loss matches, none re-trained or skipped.
    assert sorted(losses(run_dir / "sft")) == list(range(1, 13))
    assert losses(run_dir / "sft") == pytest.approx(losses(ref_dir / "sft"), rel=1e-5)
    # trainer.save_total_limit=1 is honoured, with HF's checkpoint-<step> naming.
    assert [p.name for p in (run_dir / "sft").glob("checkpoint-*")] == ["checkpoint-12"]
    assert (run_dir / "sft" / "model" / "model.safetensors").exists()
    # Finished, not retrained: one line, metrics.json untouched.
    assert finished["code"] == 0 and "finished earlier" in finished["stdout"]
    assert finished["files"][metrics] == resumed["files"][metrics]
    # (Another config on the same dir is refused: tests/test_errors.py, case config_changed.)


PIPE_ARGS = [
    "pipeline=dpo",
    "data.max_train_rows=24",
    "data.max_eval_rows=16",
    "data.max_length=128",
    "oracle_eval.enabled=false",
    "trainer.num_train_epochs=1",
    "trainer.max_steps=-1",  # dpo's default is 300 steps; one epoch of 24 rows here
    "trainer.per_device_train_batch_size=4",
    "trainer.save_steps=2",
    "trainer.logging_steps=1",
    "trainer.warmup_steps=1",
]


@pytest.mark.slow
def test_pipeline_resumes_mid_second_step_and_reruns_after_a_config_edit(tmp_path):
    out = tmp_path / "pipe"
    victim = start(*PIPE_ARGS, f"output_dir={out}")
    kill_after_checkpoint(victim, out / "dpo")
    sft_done = (out / "sft" / "metrics.json").stat().st_mtime_ns
    manifest = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))
    assert [s["status"] for s in manifest["steps"]] == ["done", "running"]
    assert not (out / "dpo" / "metrics.json").exists() and not (out / "dpo" / "model").exists()

    # Re-run (resumes dpo), then edit the first step's config: both in one process, one start-up.
    files = [str(out / "sft" / "metrics.json"), str(out / "dpo" / "metrics.json"), str(out / "pipeline.json")]
    resumed, edited = cli_in_one_process(
        [
            {"argv": [*PIPE_ARGS, f"output_dir={out}"], "read": files},
            {
                "argv": [*PIPE_ARGS, "+pipeline.steps.sft.trainer.learning_rate=0.001", f"output_dir={out}"],
                "read": files,
            },
        ],
        ENV,
    )
    assert resumed["code"] == 0, resumed["stderr"][-3000:]
    assert "sft: done earlier with the same config; skipped" in resumed["stdout"]
    assert resumed["files"][files[0]]["mtime_ns"] == sft_done
    dpo = json.loads(resumed["files"][files[1]]["text"])
    assert dpo["resumed_from_step"] > 0 and dpo["global_step"] == 6
    manifest = json.loads(resumed["files"][files[2]]["text"])
    assert [s["status"] for s in manifest["steps"]] == ["done", "done", "done"]  # sft, dpo, compare

    # Editing the first step's config re-runs it and every later step, from scratch, and says so in one line.
    assert edited["code"] == 0, edited["stderr"][-3000:]
    notices = [line for line in edited["stdout"].splitlines() if "config changed" in line]
    assert len(notices) == 1 and notices[0].startswith("[pipeline] sft:")
    assert edited["files"][files[0]]["mtime_ns"] != sft_done
    dpo = json.loads(edited["files"][files[1]]["text"])
    assert "resumed_from_step" not in dpo and dpo["global_step"] == 6


# -- PPO (our own loop): checkpoint-<step>/ then a fresh trainer resumes it, in process on a tiny random model -------
def _ppo_trainer(tok, save_steps: int, stage_dir: Path, max_steps: int = 4):
    import torch
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    from alignment.rl.checkpoint import CheckpointCallback
    from alignment.rl.ppo import PPOSettings, PPOTrainer

    def config(**extra):
        sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        return Qwen2Config(vocab_size=len(tok), num_key_value_heads=2, pad_token_id=tok.pad_token_id, **sizes, **extra)

    torch.manual_seed(0)
    policy, ref, value = (
        Qwen2ForCausalLM(config()),
        Qwen2ForCausalLM(config()),
        Qwen2ForSequenceClassification(config(num_labels=1)),
    )
    ref.load_state_dict(policy.state_dict())
    prompts = ["hi", "the cat", "你好", "a b c", "x y"]
    ids = [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, return_dict=False)
        for p in prompts
    ]
    data = Dataset.from_dict({"prompt_ids": ids})
    settings = PPOSettings(
        learning_rate=1e-2, rollout_batch_size=4, mini_batch_size=2, ppo_epochs=2, max_steps=max_steps
    )
    settings.max_new_tokens, settings.save_steps, settings.save_total_limit = 6, save_steps, 1
    reward = lambda p, responses, o: [r.count("a") / max(len(r), 1) for r in responses]  # noqa: E731
    trainer = PPOTrainer(policy, ref, value, tok, reward, data, settings, [tok.eos_token_id])
    trainer.callbacks.append(CheckpointCallback(trainer, stage_dir, save_steps, settings.save_total_limit))
    return trainer


def test_ppo_checkpoint_resumes_to_the_same_result(tmp_path):
    import torch

    from alignment.rl.checkpoint import load_checkpoint
    from alignment.stages.checkpoints import checkpoint_steps
    from alignment.tiny_model import build_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = build_tokenizer(["hello world", "the cat sat on the mat", "你好世界", "a b c d", "x y z"] * 20, 300)
        tok.chat_template = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
        full = _ppo_trainer(tok, save_steps=2, stage_dir=tmp_path / "full")
        full.train()
        assert checkpoint_steps(tmp_path / "full") == [4]  # save_total_limit=1 kept the newest only

        # A run that stops after its checkpoint at step 2 (as a crash would), then a new process's trainer resumes.
        first = _ppo_trainer(tok, save_steps=2, stage_dir=tmp_path / "run")
        first.settings.max_steps = 2
        first.train()
        resumed = _ppo_trainer(tok, save_steps=2, stage_dir=tmp_path / "run")
        torch.manual_seed(123)  # the restored RNG state must win over whatever the new process did before
        assert load_checkpoint(resumed, tmp_path / "run" / "checkpoint-2") == 2
        resumed.train()
        strip = lambda h: [{k: v for k, v in s.items() if not k.startswith("time")} for s in h]  # noqa: E731
        assert strip(resumed.history) == strip(full.history)
        want = dict(full.accelerator.unwrap_model(full.model).named_parameters())
        for name, param in resumed.accelerator.unwrap_model(resumed.model).named_parameters():
            assert torch.equal(param, want[name]), name
    finally:
        torch.set_num_threads(threads)


# -- what a killed run leaves behind, without training: StageRun on a hand-made stage dir -------------------------
def _cfg(out: Path, *overrides: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["stage=sft", *overrides])
    with open_dict(cfg):
        cfg.output_dir = str(out)
    return cfg


def _open(cfg):
    from alignment.stages.runner import StageRun

    run = StageRun(cfg)
    run.close()  # detach its train.log
    return run


def _checkpoint(stage_dir: Path, step: int, state: str | None = '{"global_step": 1}') -> None:
    """A checkpoint dir; with a whole state file also the manifest a finished save ends with (no weights needed)."""
    from alignment.stages.checkpoints import write_manifest

    (stage_dir / f"checkpoint-{step}").mkdir(parents=True)
    if state is not None:
        (stage_dir / f"checkpoint-{step}" / "trainer_state.json").write_text(state, encoding="utf-8")
        if state.endswith("}"):
            write_manifest(stage_dir / f"checkpoint-{step}")


def test_leftovers_of_a_killed_run_are_cleared_and_the_last_complete_checkpoint_used(tmp_path):
    cfg = _cfg(tmp_path)
    stage = _open(cfg).dir  # a first run: records its config
    _checkpoint(stage, 2)
    _checkpoint(stage, 4, state=None)  # killed while saving: no state file yet
    _checkpoint(stage, 5, state='{"global_st')  # killed while writing the state file
    for leftover in (".model-x1y2", "model"):  # a temp dir mid-rename; a model without metrics.json
        (stage / leftover).mkdir()
        (stage / leftover / "config.json").write_text("{}", encoding="utf-8")
    run = _open(cfg)
    assert run.last_checkpoint() == str(stage / "checkpoint-2")
    assert sorted(p.name for p in stage.iterdir() if p.is_dir()) == ["checkpoint-2"]

    fresh = _open(_cfg(tmp_path, "resume=fresh"))
    assert fresh.last_checkpoint() is None and not (stage / "checkpoint-2").exists()


def test_a_changed_input_model_blocks_the_resume(tmp_path):
    import os

    from alignment.errors import AlignmentError

    model = tmp_path / "base"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"0" * 10)
    cfg = _cfg(tmp_path / "out", f"model.path={model}")
    _checkpoint(_open(cfg).dir, 3)
    assert _open(cfg).last_checkpoint() is not None  # same config, same files: resumes
    (model / "model.safetensors").write_bytes(b"1" * 12)  # the model was retrained in place
    os.utime(model / "model.safetensors", ns=(1, 1))
    with pytest.raises(AlignmentError, match=r"different config or inputs \(changed: inputs.model.path\)"):
        _open(cfg)


def test_ppo_stops_on_a_non_finite_loss_before_saving(tmp_path):
    from types import SimpleNamespace

    from alignment.errors import AlignmentError
    from alignment.rl.checkpoint import CheckpointCallback

    _checkpoint(tmp_path, 2, state=None)
    (tmp_path / "checkpoint-2" / "ppo_state.json").write_text('{"step": 2}', encoding="utf-8")
    trainer = SimpleNamespace(step=3)
    guard = CheckpointCallback(trainer, tmp_path, save_steps=1)
    with pytest.raises(AlignmentError, match=r"PPO loss is nan at step 3.*checkpoint-2"):
        guard({"loss": float("nan"), "policy_loss": 0.1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]  # nothing saved for the bad step


def test_the_stage_hash_ignores_plumbing_but_not_what_is_computed(tmp_path):
    from alignment.stages.stage_dir import stage_config_hash

    base = stage_config_hash(_cfg(tmp_path))[0]
    # Every machine of a multi-node run must agree; saving and logging cadence never changes results.
    for same in ("distributed.machine_rank=1", "trainer.save_steps=7", "trainer.logging_steps=3", "debug=true"):
        assert stage_config_hash(_cfg(tmp_path, same))[0] == base, same
    for other in ("trainer.learning_rate=0.1", "seed=1", "data.max_train_rows=5", "distributed.num_processes=2"):
        assert stage_config_hash(_cfg(tmp_path, other))[0] != base, other

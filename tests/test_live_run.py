"""A run's first hour, through the real CLI: train.log and log_history.jsonl grow while it trains, a checkpoint comes
by time, Ctrl-C saves one and exits 130 with one line naming it, and the same command resumes from it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env, read_metrics

STEPS = 12
ARGS = [
    "stage=sft",
    "data.max_train_rows=128",
    "data.max_eval_rows=16",
    "oracle_eval.enabled=false",
    f"trainer.max_steps={STEPS}",
    "trainer.logging_steps=1",
    f"trainer.save_steps={STEPS}",  # by steps only at the end: the first checkpoints come by time
    "trainer.warmup_steps=2",
    "save_every_minutes=0.03",  # 1.8 s
]
ENV = cli_env(OMP_NUM_THREADS="1")


def history(stage_dir: Path) -> list[dict]:
    path = stage_dir / "log_history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.endswith("}")]


def wait_for(proc: subprocess.Popen, what: str, ready, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {what}:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_live_records_checkpoint_by_time_ctrl_c_and_resume(tmp_path):
    # As in the Quickstart: no output_dir, so the run dir comes from the command; the same command finds it again.
    args = list(ARGS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignment", *args],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()  # the first line says where the outputs go, before anything loads
        found = re.fullmatch(r"\[alignment\] stage sft: outputs in (\S+)\n", first)
        assert found, first
        run_dir = Path(found.group(1))
        assert run_dir.parent == tmp_path / "outputs"
        stage_dir = run_dir / "sft"
        # Live: the first logged step is on disk while training goes on, and more follow.
        wait_for(proc, "a logged step", lambda: len(history(stage_dir)) >= 1)
        log_size = (stage_dir / "train.log").stat().st_size
        assert "sft step 1: {" in (stage_dir / "train.log").read_text(encoding="utf-8")
        wait_for(proc, "more logged steps", lambda: len(history(stage_dir)) >= 3)
        assert (stage_dir / "train.log").stat().st_size > log_size
        # A checkpoint by time, long before save_steps.
        wait_for(proc, "a checkpoint by time", lambda: any(stage_dir.glob("checkpoint-*/trainer_state.json")))
        assert not (stage_dir / f"checkpoint-{STEPS}").exists()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    found = re.search(
        r"sft interrupted: kept (\S+/checkpoint-(\d+)); run the same command again to resume from it", err
    )
    assert found, err[-3000:]
    kept, step = Path(found.group(1)), int(found.group(2))
    assert kept == stage_dir / f"checkpoint-{step}" and (kept / "trainer_state.json").exists()
    assert 0 < step < STEPS
    assert not (stage_dir / "metrics.json").exists() and not (stage_dir / "model").exists()
    assert "sft interrupted: kept" in (stage_dir / "train.log").read_text(encoding="utf-8")

    again = subprocess.run(
        [sys.executable, "-m", "alignment", *args], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith(f"[alignment] stage sft: outputs in {run_dir}\n")
    metrics = read_metrics(stage_dir)
    assert metrics["resumed_from_step"] == step and metrics["global_step"] == STEPS
    assert metrics["eval_rows"] == 16  # conversations, though packed into fewer sequences
    rows = history(stage_dir)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, STEPS + 1))  # no duplicates, no gaps
    # The same content HF keeps in state.log_history: the final checkpoint's rows, then the end-of-training summary.
    final = json.loads((stage_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text(encoding="utf-8"))
    assert rows[:-1] == final["log_history"] and "train_loss" in rows[-1]


def compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["output_dir=/tmp/unused", *overrides])


def test_save_every_minutes_does_not_block_a_resume():
    from alignment.stages.stage_dir import stage_config_hash

    hashes = {stage_config_hash(compose(f"save_every_minutes={m}"))[0] for m in (5, 0.5, 0, "null")}
    assert len(hashes) == 1
    assert stage_config_hash(compose("trainer.learning_rate=1e-4"))[0] not in hashes


def test_preference_and_rl_stages_warn_when_they_start_from_the_base_model(caplog):
    from alignment.paths import DATA_DIR
    from alignment.stages.runner import warn_if_base_model

    for overrides, warned in [
        (["stage=dpo"], True),
        (["stage=ppo", f"model.path={DATA_DIR / 'tiny-base'}"], True),
        (["stage=grpo", "model.path=runs/x/sft"], False),
        (["stage=sft"], False),
        (["stage=rm"], False),
    ]:
        caplog.clear()
        warn_if_base_model(compose(*overrides))
        lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert bool(lines) == warned, overrides
        if warned:
            assert len(lines) == 1 and "no chat fine-tuning; run stage=sft first and pass model.path=" in lines[0]


def test_held_out_rows_counts_the_rows_packed_into_sequences():
    from datasets import Dataset

    from alignment.stages.live_run import held_out_rows

    packed = Dataset.from_dict({"input_ids": [[1, 2, 3], [4]], "seq_lengths": [[2, 1], [1]]})
    assert held_out_rows(packed) == 3
    assert held_out_rows(Dataset.from_dict({"prompt_ids": [[1], [2]]})) == 2


def test_a_failing_stage_writes_its_error_to_train_log_and_detaches_it(tmp_path):
    import logging

    from alignment.errors import AlignmentError
    from alignment.stages.live_run import stage_scope
    from alignment.stages.runner import StageRun

    cfg = compose("stage=sft")
    cfg.output_dir = str(tmp_path)
    with pytest.raises(AlignmentError), stage_scope():
        StageRun(cfg)
        raise AlignmentError("data file not found: x.jsonl")
    text = (tmp_path / "sft" / "train.log").read_text(encoding="utf-8")
    assert "[alignment][ERROR] sft failed: data file not found: x.jsonl" in text
    assert "[alignment][DEBUG] Traceback (most recent call last)" in text
    # the stage's FileHandler is gone (other libraries may add or drop their own root handlers meanwhile)
    log_file = str(tmp_path / "sft" / "train.log")
    left = [h for h in logging.getLogger().handlers if getattr(h, "baseFilename", None) == log_file]
    assert left == []


def test_start_up_does_not_print_trls_experimental_notice():
    code = (
        "import os, warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    from alignment.trainer.schema import trl_config_classes\n"
        "    assert 'orpo' in trl_config_classes()\n"
        "print([str(w.message)[:60] for w in seen if 'experimental' in str(w.message)])\n"
        "print(os.environ.get('TRL_EXPERIMENTAL_SILENCE'))\n"
    )
    env = {k: v for k, v in cli_env().items() if k != "TRL_EXPERIMENTAL_SILENCE"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-2:] == ["[]", "None"]  # no notice, and the variable is not left set


def test_eval_compare_and_chat_settings_hash_only_into_their_own_stage(tmp_path):
    from alignment.stages.stage_dir import _fingerprint, stage_config_hash

    sft = stage_config_hash(compose())[0]
    assert stage_config_hash(compose("compare.max_new_tokens=7", "eval.judge=oracle"))[0] == sft
    compare = stage_config_hash(compose("stage=compare"))[0]
    assert stage_config_hash(compose("stage=compare", "compare.max_new_tokens=7"))[0] != compare
    # a model dir's card (rewritten by hub.push) is not part of its fingerprint; its weights are
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    before = _fingerprint(str(tmp_path))
    (tmp_path / "README.md").write_text("# card", encoding="utf-8")
    assert _fingerprint(str(tmp_path)) == before
    (tmp_path / "model.safetensors").write_bytes(b"0")
    assert _fingerprint(str(tmp_path)) != before

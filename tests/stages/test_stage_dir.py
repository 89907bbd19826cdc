"""The stage dir's config hash: computed once per stage of a command, and the one hash the pipeline records.

The stage runs are stand-ins (the real StageRun: hash, checks, config.yaml, run_state.json, metrics.json; no model),
so these run without training.
"""

from __future__ import annotations

import json

import pytest

import alignment.stages
from alignment.stages import stage_dir


def _compose(out, *overrides: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    with open_dict(cfg):
        cfg.output_dir = str(out)
    return cfg


@pytest.fixture
def hash_calls(monkeypatch):
    """Every config the stage hash is computed for (the function wrapped, not replaced)."""
    calls = []
    real = stage_dir.stage_config_hash

    def counted(cfg):
        calls.append(str(cfg.get("step") or cfg.stage))
        return real(cfg)

    monkeypatch.setattr(stage_dir, "stage_config_hash", counted)
    return calls


@pytest.fixture
def stand_in_stages(monkeypatch):
    """``run_stage`` replaced by a stage that opens its StageRun and finishes at once; the names it ran."""
    ran = []

    def run_stage(cfg):
        from alignment.stages.runner import StageRun

        stage = StageRun(cfg)
        ran.append(stage.name)
        stage.metrics["steps_run"] = 1
        return stage.finish()

    monkeypatch.setattr(alignment.stages, "run_stage", run_stage)
    return ran


def test_a_stage_command_hashes_its_config_once_and_a_rerun_skips(tmp_path, hash_calls, stand_in_stages, capsys):
    from alignment.__main__ import _work

    overrides = ["stage=sft"]
    _work(_compose(tmp_path, *overrides), overrides, multirun=False)
    assert stand_in_stages == ["sft"] and hash_calls == ["sft"]  # the finished check and the run share one hash
    recorded = json.loads((tmp_path / "sft" / "run_state.json").read_text(encoding="utf-8"))
    assert recorded["config_hash"] == stage_dir.stage_config_hash(_compose(tmp_path, *overrides))[0]
    hash_calls.clear()

    _work(_compose(tmp_path, *overrides), overrides, multirun=False)  # the same command again: nothing runs
    assert stand_in_stages == ["sft"] and hash_calls == ["sft"]
    assert "sft: finished earlier with the same config and inputs; skipped" in capsys.readouterr().out


def test_a_stage_run_on_a_config_changed_after_the_check_hashes_it_again(tmp_path, hash_calls):
    from omegaconf import open_dict

    from alignment.stages.runner import StageRun

    cfg = _compose(tmp_path, "stage=sft")
    first = stage_dir.StageDir.of(cfg).config_hash
    with open_dict(cfg):
        cfg.resume = "fresh"  # not hashed: the run takes the hash computed for the check
    StageRun(cfg).close()
    assert hash_calls == ["sft"]
    assert stage_dir.StageDir.of(cfg).config_hash == first  # taken by the run: computed again
    with open_dict(cfg):
        cfg.trainer.learning_rate = 0.5  # hashed: the run must not take the stale hash
    run = StageRun(cfg)
    run.close()
    assert hash_calls == ["sft", "sft", "sft"]
    assert run.config_hash != first
    assert json.loads((run.dir / "run_state.json").read_text(encoding="utf-8"))["config_hash"] == run.config_hash


def _run_pipeline(out, *overrides: str) -> dict[str, dict]:
    from hydra import initialize_config_dir

    from alignment.paths import CONF_DIR
    from alignment.pipeline import run_pipeline

    argv = ["pipeline=dpo", *overrides]
    cfg = _compose(out, *argv)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        run_pipeline(cfg, argv)
    return {s["name"]: s for s in json.loads((out / "pipeline.json").read_text(encoding="utf-8"))["steps"]}


def test_the_pipeline_records_the_stage_hash_and_reruns_only_when_a_hashed_key_changes(
    tmp_path, hash_calls, stand_in_stages, capsys
):
    from alignment.pipeline import step_hash

    first = _run_pipeline(tmp_path)
    assert stand_in_stages == ["sft", "dpo", "compare"]
    assert hash_calls == ["sft", "dpo", "compare"]  # each step's hash serves the pipeline and its stage run
    recorded = {
        name: json.loads((tmp_path / name / "run_state.json").read_text(encoding="utf-8"))["config_hash"]
        for name in first
    }
    # The step's hash is its stage's own hash combined with the hashes of the steps it reads from.
    assert first["sft"]["config_hash"] == step_hash(recorded["sft"], {})
    sft = first["sft"]["config_hash"]
    assert first["dpo"]["config_hash"] == step_hash(recorded["dpo"], {"model": sft, "ref_model": sft})

    stand_in_stages.clear()
    hash_calls.clear()
    again = _run_pipeline(tmp_path, "trainer.logging_steps=3", "tracking.project=other")  # not hashed
    assert stand_in_stages == [] and hash_calls == ["sft", "dpo", "compare"]
    assert {n: s["config_hash"] for n, s in again.items()} == {n: s["config_hash"] for n, s in first.items()}
    assert capsys.readouterr().out.count("done earlier with the same config; skipped") == 3

    changed = _run_pipeline(tmp_path, "trainer.learning_rate=0.001")  # hashed: sft, and so every later step
    assert stand_in_stages == ["sft", "dpo", "compare"]
    assert all(changed[n]["config_hash"] != first[n]["config_hash"] for n in first)
    out = capsys.readouterr().out
    assert "[pipeline] sft: config changed since it finished; running it and every later step again" in out

"""pipeline.json says `interrupted` for a step stopped by Ctrl-C (the same command resumes it), `failed` otherwise."""

from __future__ import annotations

import json

import pytest

import alignment.stages
from alignment.errors import AlignmentError, RunInterrupted


def pipeline_cfg(out):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["pipeline=dpo"])
    with open_dict(cfg):
        cfg.output_dir = str(out)
    return cfg


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (
            RunInterrupted("sft interrupted: kept X/checkpoint-3; run the same command again to resume from it"),
            "interrupted",
        ),
        (KeyboardInterrupt(), "interrupted"),
        (AlignmentError("bad data"), "failed"),
    ],
)
def test_a_stopped_step_is_marked_interrupted(tmp_path, monkeypatch, error, status):
    from hydra import initialize_config_dir

    from alignment.paths import CONF_DIR
    from alignment.pipeline import run_pipeline

    def stop(cfg):
        raise error

    monkeypatch.setattr(alignment.stages, "run_stage", stop)
    cfg = pipeline_cfg(tmp_path)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"), pytest.raises(type(error)):
        run_pipeline(cfg, ["pipeline=dpo"])
    steps = json.loads((tmp_path / "pipeline.json").read_text(encoding="utf-8"))["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [("sft", status)]
    assert steps[0]["ended"] is not None

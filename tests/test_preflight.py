"""Checks before any heavy import: a mistake on the command line or in a path is one line naming it."""

from __future__ import annotations

import json
import sys

import pytest
from hydra import compose, initialize_config_dir

from alignment.command_line import check_command_line
from alignment.config import register_configs
from alignment.errors import AlignmentError
from alignment.paths import CONF_DIR
from alignment.preflight import check_config
from alignment.sweep import default_output_dir, job_dir_name

register_configs()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["trainer.learnig_rate=1e-4"],
            "unknown config key 'trainer.learnig_rate': did you mean 'trainer.learning_rate'",
        ),
        # Hydra's own hint (+key=value) would add the misspelt key: it is refused the same way.
        (["+trainer.learnig_rate=1e-4"], "did you mean 'trainer.learning_rate'"),
        (["data.pth=x.jsonl"], "unknown config key 'data.pth': did you mean 'data.path'"),
        (["stage=sftt"], "stage=sftt: no such stage (did you mean stage=sft?); choose one of: chat, compare, dpo"),
        (["stage=dpo", "trainer.bta=0.1"], "did you mean 'trainer.beta'"),
        (["trainer.learning_rate=abc"], "trainer.learning_rate=abc: Value 'abc'"),
        (["sweep.direction=maximise"], "expected one of [minimize, maximize]"),
        # A sweep is checked with each swept key's first value.
        (["-m", "trainer.learnig_rate=1e-3,1e-2"], "did you mean 'trainer.learning_rate'"),
    ],
)
def test_command_line_mistakes_name_the_key_and_the_fix(argv, expected):
    with pytest.raises(AlignmentError) as err:
        check_command_line(argv)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_a_valid_command_line_passes():
    check_command_line(["-m", "stage=dpo", "trainer.beta=0.1,0.5", "seed=1,2", "hydra/sweeper=basic"])
    check_command_line(["--cfg", "job"])  # Hydra's own flags are left to Hydra


def test_a_column_mapping_is_given_as_the_docs_write_it():
    """``data.columns={prompt: question, ...}`` (docs/data.md) sets the mapping: an empty dict default would refuse it,
    Hydra merging new keys into a struct dict."""
    argv = [
        "stage=dpo",
        "data=custom",
        "data.path=qa.jsonl",
        "data.columns={prompt: question, chosen: good, rejected: bad}",
    ]
    check_command_line(argv)
    cfg = _cfg(*argv)
    assert dict(cfg.data.columns) == {"prompt": "question", "chosen": "good", "rejected": "bad"}
    assert _cfg("stage=dpo").data.columns is None


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return cfg


def test_missing_data_file_and_unreadable_format_are_caught_before_loading(tmp_path):
    with pytest.raises(AlignmentError, match="data file not found: .*nope.jsonl"):
        check_config(_cfg("stage=sft", f"data.path={tmp_path / 'nope.jsonl'}"))
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"question": "hi", "answer_text": "yo"}) + "\n", encoding="utf-8")
    with pytest.raises(AlignmentError, match=r"cannot tell the dataset format from its columns \['answer_text'"):
        check_config(_cfg("stage=sft", f"data.path={odd}"))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"instruction": "hi", "output": "yo"}) + "\n", encoding="utf-8")
    check_config(_cfg("stage=sft", f"data.path={good}"))


def test_transforms_on_a_stage_without_pairs_are_refused():
    with pytest.raises(AlignmentError, match="stage=sft does not train on"):
        check_config(_cfg("stage=sft", "data.transforms=[{name: flip, p: 0.1}]"))
    check_config(_cfg("stage=rm", "data.transforms=[{name: flip, p: 0.1}]"))
    with pytest.raises(AlignmentError, match=r"data.transforms\[0\]"):
        check_config(_cfg("stage=rm", "data.transforms=[{name: flop}]"))


def test_missing_model_paths_name_their_key(tmp_path):
    with pytest.raises(AlignmentError, match="model.path .* does not exist"):
        check_config(_cfg("stage=sft", f"model.path={tmp_path / 'gone'}"))
    with pytest.raises(AlignmentError, match="ref_model .* does not exist"):
        check_config(_cfg("stage=dpo", f"+ref_model={tmp_path / 'gone'}"))


def test_pipeline_steps_are_checked_whole_before_the_first_one_runs():
    from omegaconf import open_dict

    cfg = _cfg("pipeline=dpo")
    check_config(cfg)
    with open_dict(cfg):
        cfg.pipeline.steps.sft.inputs = {"model": "dpo"}  # reads a step that comes later
    with pytest.raises(AlignmentError, match="reads model from 'dpo', which is not an earlier step .*comes later"):
        check_config(cfg)
    cfg = _cfg("pipeline=dpo")
    cfg.pipeline.steps.dpo.stage = "dop"
    with pytest.raises(AlignmentError, match="step 'dpo': unknown stage 'dop'"):
        check_config(cfg)


def test_default_output_dir_follows_the_command(monkeypatch):
    def out(*argv):
        monkeypatch.setattr(sys, "argv", ["alignment", *argv])
        return default_output_dir()

    assert out() == "outputs/sft"
    assert out("stage=dpo") == "outputs/dpo"
    assert out("pipeline=rlhf", "debug=true") == "outputs/rlhf"
    same = out("stage=sft", "trainer.max_steps=5", "seed=1")
    assert same == out("seed=1", "trainer.max_steps=5", "stage=sft")  # order does not matter
    assert same.startswith("outputs/sft-") and same != out("stage=sft", "trainer.max_steps=6", "seed=1")
    assert out("-m", "experiment=label_noise") == "outputs/label_noise"


def test_job_dir_names_are_path_safe_and_bounded(tmp_path):
    from omegaconf import OmegaConf

    root = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "overrides": {"task": []}}})
    assert job_dir_name("", 3, _root_=root) == "job3"
    assert job_dir_name("model.path=runs/a/sft,seed=1", 0, _root_=root) == "model.path=runs_a_sft,seed=1"
    long = job_dir_name("x=" + "a" * 300, 0, _root_=root)
    assert len(long) <= 120 and long != job_dir_name("x=" + "a" * 299 + "b", 0, _root_=root)


def test_a_sweep_job_clears_its_old_failure_and_groups_tracking_by_sweep(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from alignment.sweep import FAILED, start_job

    job = tmp_path / "my-sweep" / "seed=1"
    job.mkdir(parents=True)
    (job / FAILED).write_text("{}", encoding="utf-8")
    cfg = OmegaConf.create({"output_dir": str(job), "stage": "sft", "model": {"path": None}, "data": {"path": None}})
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    monkeypatch.setattr(sys, "argv", ["alignment", "-m", "seed=1,2"])
    start_job(cfg, ["seed=1"], multirun=True)
    assert not (job / FAILED).exists()
    import os

    assert os.environ["WANDB_RUN_GROUP"] == "my-sweep"
    out = capsys.readouterr().out
    assert f"outputs in {job}" in out and "the same sweep command again resumes it" in out


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_and_passes_the_checks(preset):
    check_command_line(["-m", f"experiment={preset}"])
    cfg = _cfg(f"experiment={preset}")
    assert cfg.pipeline.steps and cfg.sweep.metric
    check_config(cfg)  # the steps, their inputs, their data transforms (with ${vars.*} resolved) and paths

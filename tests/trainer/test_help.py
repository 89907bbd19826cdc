"""The trainer.* schema keeps TRL's help text, and ``python -m alignment.trainer STAGE`` prints it with defaults."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

from trl import DPOConfig

from alignment.paths import REPO_DIR
from alignment.trainer import schema
from alignment.trainer.__main__ import describe

BETA_HELP = "Parameter controlling the deviation from the reference model."
PACKING_HELP = "Whether to group multiple sequences into fixed-length blocks"


def test_trainer_fields_keep_trl_help_and_default():
    by_name = {name: (type_name, default, text) for name, type_name, default, text in schema.trainer_fields(DPOConfig)}
    type_name, default, text = by_name["beta"]
    assert (type_name, default) == ("float", 0.1)
    assert text.startswith(BETA_HELP)
    assert "\n" not in text  # one line: TRL's multi-line strings are joined


def test_cached_schema_keeps_help(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    specs = schema.trainer_specs()  # a miss: built from TRL and written
    cached = json.loads(schema._schema_cache_file().read_text(encoding="utf-8"))
    assert cached["sft"][0] == "SFTConfig"
    packing = next(row for row in cached["sft"][1] if row[0] == "packing")
    assert packing[1:3] == ["bool", False] and packing[3].startswith(PACKING_HELP)
    assert schema.trainer_specs() == specs  # the hit reads the same rows
    fields = {f.name: f for f in dataclasses.fields(schema.trainer_schemas()["dpo"])}
    assert fields["beta"].default == 0.1 and fields["beta"].metadata["help"].startswith(BETA_HELP)


def test_cache_name_changes_with_its_row_layout(monkeypatch):
    before = schema._schema_cache_file().name
    monkeypatch.setattr(schema, "_CACHE_FORMAT", schema._CACHE_FORMAT - 1)
    assert schema._schema_cache_file().name != before  # a cache of 3-field rows (no help) is never read


def test_describe_dpo_shows_help_trl_default_and_stage_value():
    text = describe("dpo")
    assert "beta (float, TRL default 0.1; stage=dpo sets 0.2)\n    " + BETA_HELP in text
    assert "learning_rate (float, TRL default 1e-06; stage=dpo sets 0.0005)" in text
    names = {line.split(" (")[0] for line in text.split("\n\n")[1].splitlines() if not line.startswith(" ")}
    assert {"beta", "loss_type", "max_steps"} <= names
    assert not names & {"output_dir", "seed", "max_length", "report_to"}  # the run sets these


def test_describe_sft_and_word_filter():
    text = describe("sft", ["packing"])
    assert "packing (bool, TRL default false" in text and PACKING_HELP in text
    assert "eval_packing (bool?, TRL default null)" in text
    assert "learning_rate" not in text


def test_describe_own_settings_and_unknown_stage():
    assert "kl_coef (" in describe("ppo") and "AdamW learning rate of the policy." in describe("ppo")
    try:
        describe("eval")
    except SystemExit as err:
        assert "stage 'eval' has no trainer.* options" in str(err)
    else:
        raise AssertionError("stage=eval has no trainer options")


def test_command_prints_dpo_beta():
    out = subprocess.run(
        [sys.executable, "-m", "alignment.trainer", "dpo", "beta"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("trainer.* options of stage=dpo (TRL's DPOConfig)")
    assert "beta (float, TRL default 0.1; stage=dpo sets 0.2)" in out and BETA_HELP in out

"""pipeline=iterative_dpo: a step's `data` input, and round 2's pairs really sampled from round 1's DPO policy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from alignment.errors import AlignmentError
from alignment.paths import CONF_DIR, DATA_DIR
from alignment.pipeline import compose_step
from tests.conftest import cli_in_one_process, read_metrics

STEPS = ["sft", "gen1", "label1", "dpo1", "gen2", "label2", "dpo2"]


def _compose(name: str, step: dict, outputs: dict[str, str], *overrides: str):
    from hydra import initialize_config_dir

    from alignment.config import register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose_step(name, OmegaConf.create(step), list(overrides), "/run", outputs)


def test_a_data_input_sets_data_path_and_keeps_the_embedded_oracle_eval():
    outputs = {"sft": "/run/sft/model", "label1": "/run/label1/pairs.jsonl"}
    cfg = _compose("dpo1", {"stage": "dpo", "inputs": {"model": "sft", "data": "label1"}}, outputs)
    assert cfg.data.path == "/run/label1/pairs.jsonl" and cfg.model.path == "/run/sft/model"
    assert cfg.oracle_eval.path == str(DATA_DIR / "prompts")  # else data.path would switch oracle_reward off
    # A run on the user's own data keeps the oracle off (its prompts have no oracle) unless oracle_eval.path is set.
    cfg = _compose("dpo1", {"stage": "dpo", "inputs": {"data": "label1"}}, outputs, "data.path=/mine.jsonl")
    assert cfg.data.path == "/run/label1/pairs.jsonl" and cfg.oracle_eval.path is None


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"model": "label1"}, "reads model from 'label1', which writes data"),
        ({"data": "sft"}, "reads data from 'sft', which writes a model"),
    ],
)
def test_a_data_step_is_no_model_and_a_model_step_is_no_data(inputs, message):
    outputs = {"sft": "/run/sft/model", "label1": "/run/label1/pairs.jsonl"}
    with pytest.raises(AlignmentError, match=message):
        _compose("dpo1", {"stage": "dpo", "inputs": inputs}, outputs)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _config(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_iterative_dpo_round_two_samples_from_round_one_policy(tmp_path):
    short = [
        "+pipeline.steps.sft.trainer.max_steps=20",
        *(f"pipeline.steps.{s}.trainer.max_steps=3" for s in ("dpo1", "dpo2")),
        *(f"+pipeline.steps.{s}.data.max_train_rows=12" for s in ("gen1", "gen2")),
        *(f"+pipeline.steps.{s}.trainer.max_new_tokens=32" for s in ("gen1", "gen2")),
        "data.max_eval_rows=16",
        "oracle_eval.num_prompts=8",
        "oracle_eval.samples_per_prompt=2",
        "oracle_eval.max_new_tokens=16",
    ]
    (run,) = cli_in_one_process([["pipeline=iterative_dpo", f"output_dir={tmp_path}", *short]])
    assert run["code"] == 0, run["stderr"][-3000:]
    manifest = json.loads((tmp_path / "pipeline.json").read_text(encoding="utf-8"))
    assert [(s["name"], s["status"]) for s in manifest["steps"]] == [(s, "done") for s in [*STEPS, "compare"]]

    cfg = {name: _config(tmp_path / name / "config.yaml") for name in STEPS}
    model = {name: str(tmp_path / name / "model") for name in ("sft", "dpo1")}
    assert cfg["gen1"]["model"]["path"] == model["sft"] and cfg["gen2"]["model"]["path"] == model["dpo1"]
    assert cfg["label2"]["data"]["path"] == str(tmp_path / "gen2" / "generations.jsonl")
    assert (cfg["dpo1"]["model"]["path"], cfg["dpo1"]["ref_model"]) == (model["sft"], model["sft"])
    assert (cfg["dpo2"]["model"]["path"], cfg["dpo2"]["ref_model"]) == (model["dpo1"], model["dpo1"])
    assert cfg["dpo2"]["data"]["path"] == str(tmp_path / "label2" / "pairs.jsonl")
    for name in ("dpo1", "dpo2"):
        metrics = read_metrics(tmp_path / name)
        assert "oracle_reward" in metrics and "oracle_reward_before" in metrics
        pairs = len(_lines(tmp_path / f"label{name[-1]}" / "pairs.jsonl"))
        assert metrics["data_rows"] == pairs - math.ceil(0.05 * pairs)  # no test split: 5% held out
    # dpo2 starts from dpo1's saved policy: its "before" samples are dpo1's "after" samples.
    after = (tmp_path / "dpo1" / "oracle_samples.jsonl").read_text(encoding="utf-8")
    assert (tmp_path / "dpo2" / "oracle_samples_before.jsonl").read_text(encoding="utf-8") == after

    # Re-sampling from dpo1's saved model with gen2's seed and settings gives gen2's replies, which gen1 did not.
    from alignment.generation import sample_replies
    from alignment.models import load_causal_lm, load_tokenizer

    gen1, gen2 = _lines(tmp_path / "gen1" / "generations.jsonl"), _lines(tmp_path / "gen2" / "generations.jsonl")
    settings, model_cfg = cfg["gen2"]["trainer"], OmegaConf.create(cfg["gen2"]["model"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI ran
    try:
        replies = sample_replies(
            load_causal_lm(model["dpo1"], model_cfg),
            load_tokenizer(model["dpo1"], model_cfg),
            [line["prompt"] for line in gen2],
            samples_per_prompt=settings["samples_per_prompt"],
            temperature=settings["temperature"],
            top_p=settings["top_p"],
            max_new_tokens=settings["max_new_tokens"],
            batch_size=settings["batch_size"],
            seed=cfg["gen2"]["seed"] if settings["seed"] is None else settings["seed"],
            max_prompt_length=cfg["gen2"]["data"]["max_length"],
        )
    finally:
        torch.set_num_threads(threads)
    k = settings["samples_per_prompt"]
    assert [replies.texts[i * k : (i + 1) * k] for i in range(len(gen2))] == [line["replies"] for line in gen2]
    assert [line["prompt"] for line in gen1] == [line["prompt"] for line in gen2]
    assert [line["replies"] for line in gen1] != [line["replies"] for line in gen2]

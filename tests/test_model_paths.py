"""Every key naming a model (model.path, ref_model, value_model, reward.sources.N.path) takes a finished stage dir, a
model dir or a Hub id, through one resolver: the early config check and the stages that load the models agree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from alignment.config import register_configs
from alignment.errors import AlignmentError
from alignment.models import locate_model
from alignment.paths import CONF_DIR
from alignment.preflight import check_config
from alignment.rewards import build_reward_fn
from tests.conftest import read_metrics, run_cli

pytestmark = pytest.mark.slow

register_configs()
TINY_PPO = ["trainer.max_steps=1", "trainer.rollout_batch_size=8", "trainer.mini_batch_size=8"]
TINY_PPO += ["trainer.ppo_epochs=1", "trainer.max_new_tokens=8"]
NO_EVAL = ["oracle_eval.enabled=false", "data.max_train_rows=16", "data.max_eval_rows=8"]


@pytest.fixture(scope="module")
def rm_run(sft_run, tmp_path_factory) -> Path:
    """A finished rm stage dir (its model in ``model/``), trained from the SFT stage dir."""
    out = tmp_path_factory.mktemp("rm-run")
    run_cli("stage=rm", f"model.path={sft_run}", f"output_dir={out}", "trainer.max_steps=2", *NO_EVAL)
    return out / "rm"


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _ppo_cfg(policy, reward, value, ref):
    return _cfg(
        "stage=ppo",
        f"model.path={policy}",
        "reward=model",
        f"reward.sources.0.path={reward}",
        f"value_model={value}",
        f"ref_model={ref}",
    )


def test_a_stage_dir_resolves_to_its_model_and_an_unfinished_one_is_refused_for_every_key(sft_run, rm_run, tmp_path):
    assert locate_model(rm_run, "value_model") == str(rm_run / "model")
    assert locate_model(rm_run / "model", "value_model") == str(rm_run / "model")
    assert locate_model("Qwen/Qwen2.5-0.5B-Instruct", "ref_model") == "Qwen/Qwen2.5-0.5B-Instruct"
    check_config(_ppo_cfg(sft_run, rm_run, rm_run, sft_run))  # stage dirs for every key pass the early check
    reward = build_reward_fn([{"type": "model", "path": str(rm_run)}], device="cpu")  # grpo, rloo, ppo, label
    assert reward.sources[0][0] == "model:rm"
    assert reward.sources[0][2].model.name_or_path == str(rm_run / "model")

    cut = tmp_path / "cut" / "rm"  # an rm stage cut short: model/ written, metrics.json not
    shutil.copytree(rm_run, cut, ignore=shutil.ignore_patterns("checkpoint-*"))
    (cut / "metrics.json").unlink()
    nothing = tmp_path / "empty"
    nothing.mkdir()
    for key, cfg in {
        "reward.sources.0.path": _ppo_cfg(sft_run, cut, rm_run, sft_run),
        "value_model": _ppo_cfg(sft_run, rm_run, cut, sft_run),
        "ref_model": _ppo_cfg(sft_run, rm_run, rm_run, cut),
    }.items():
        with pytest.raises(AlignmentError, match=f"^{key}: the stage in '{cut}' has not finished"):
            check_config(cfg)
    with pytest.raises(AlignmentError, match=f"^value_model '{nothing}' holds no model"):
        check_config(_ppo_cfg(sft_run, rm_run, nothing, sft_run))
    with pytest.raises(AlignmentError, match=r"^reward.sources.0.path '.*gone' does not exist"):
        check_config(_ppo_cfg(sft_run, tmp_path / "gone", rm_run, sft_run))


def test_ppo_loads_reward_value_and_reference_models_from_stage_dirs(sft_run, rm_run, tmp_path):
    """``reward.sources.0.path=RUN/rm value_model=RUN/rm ref_model=RUN/sft`` as a user types them (grpo and rloo
    build their reward models through the same ``build_reward_fn``, checked in the test above)."""
    run_cli(
        "stage=ppo",
        f"model.path={sft_run}",
        "reward=model",
        f"reward.sources.0.path={rm_run}",
        f"value_model={rm_run}",
        f"ref_model={sft_run}",
        f"output_dir={tmp_path}",
        *TINY_PPO,
        *NO_EVAL,
    )
    assert read_metrics(tmp_path / "ppo")["global_step"] == 1
    rows = [json.loads(x) for x in (tmp_path / "ppo" / "log_history.jsonl").read_text("utf-8").splitlines()]
    assert "score/model:rm" in rows[0]  # the rm stage's model scored the rollouts

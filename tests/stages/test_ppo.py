"""stage=ppo and pipeline=rlhf through the CLI: the policy trains, stats reach the log and tracker, models are saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import FAST, read_metrics, run_cli

pytestmark = pytest.mark.slow

# A few small PPO steps: enough for every parameter to move and every statistic to be computed.
SMALL_PPO = [
    "trainer.max_steps=3",
    "trainer.rollout_batch_size=16",
    "trainer.mini_batch_size=8",
    "trainer.ppo_epochs=1",
    "trainer.max_new_tokens=16",
]
STATS = (
    "score non_score_reward kl entropy policy_clipfrac value_clipfrac value_loss approx_kl response_length"
).split()


def make_reward_model(model_dir: Path, out: Path) -> Path:
    """Any HF sequence-classification model works as a reward: here the SFT backbone with a fresh scalar head."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def write_reward_function(folder: Path) -> str:
    """A user reward module (``file.py:function``): prefers short replies."""
    path = folder / "my_reward.py"
    path.write_text(
        "def brevity(prompts, responses, oracle):\n    return [-len(r) / 50 for r in responses]\n", encoding="utf-8"
    )
    return f"{path}:brevity"


def changed_fraction(before: dict, after: dict) -> float:
    same = sum(torch.equal(before[k], after[k]) for k in before)
    return 1 - same / len(before)


@pytest.fixture(scope="module")
def reward_model(sft_run, tmp_path_factory) -> Path:
    return make_reward_model(sft_run / "model", tmp_path_factory.mktemp("rm") / "model")


def test_ppo_trains_logs_to_the_tracker_and_saves_policy_and_value(sft_run, reward_model, tmp_path):
    run_cli(
        "stage=ppo",
        f"model.path={sft_run / 'model'}",
        f"output_dir={tmp_path}",
        "reward=model_and_oracle",
        f"reward.sources.0.path={reward_model}",
        "tracking=tensorboard",
        *SMALL_PPO,
        *FAST,
    )
    out = tmp_path / "ppo"
    metrics = read_metrics(out)
    for key in ("kl", "score", "oracle_reward", "oracle_reward_before", "response_length", "global_step"):
        assert key in metrics, key
    assert metrics["global_step"] == 3

    rows = [json.loads(line) for line in (out / "log_history.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in STATS + ["score/oracle", "score/model:model"]:
        assert key in rows[0], key
    # The weighted sum: model score + 0.5 * oracle score.
    assert rows[0]["score"] == pytest.approx(rows[0]["score/model:model"] + 0.5 * rows[0]["score/oracle"], abs=1e-5)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "runs")).Reload()
    for key in STATS:
        assert len(events.Scalars(f"ppo/{key}")) == 3, key

    before = AutoModelForCausalLM.from_pretrained(sft_run / "model").state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert changed_fraction(before, after) > 0.9
    value = AutoModelForSequenceClassification.from_pretrained(out / "value_model").state_dict()
    value_start = AutoModelForSequenceClassification.from_pretrained(reward_model).state_dict()
    assert changed_fraction(value_start, value) > 0.9  # the value model starts from the reward model and trains


def test_ppo_with_lora_and_a_function_reward(sft_run, tmp_path):
    run_cli(
        "stage=ppo",
        f"model.path={sft_run / 'model'}",
        f"output_dir={tmp_path}",
        "peft=lora",
        "reward=function",
        f"reward.sources.0.path='{write_reward_function(tmp_path)}'",
        *SMALL_PPO,
        *FAST,
    )
    out = tmp_path / "ppo"
    metrics = read_metrics(out)
    assert metrics["trainable_params"] < 0.5 * metrics["total_params"]
    assert "kl" in metrics and metrics["kl"] == metrics["kl"]  # present and not NaN
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "value_model_adapter" / "adapter_config.json").is_file()
    rows = [json.loads(line) for line in (out / "log_history.jsonl").read_text(encoding="utf-8").splitlines()]
    # Only the function scores: every reply is a non-positive brevity reward.
    assert all(r["score"] <= 0 for r in rows)
    before = AutoModelForCausalLM.from_pretrained(sft_run / "model").state_dict()
    merged = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert 0 < changed_fraction(before, merged) < 1  # LoRA moved the adapted projections only


def test_rlhf_pipeline_wires_sft_into_rm_and_both_into_ppo(tmp_path):
    ppo_small = "{rollout_batch_size:16,mini_batch_size:8,ppo_epochs:1,max_new_tokens:16,max_steps:2}"
    run_cli(
        "pipeline=rlhf",
        f"output_dir={tmp_path}",
        "trainer.max_steps=4",
        f"+pipeline.steps.ppo.trainer={ppo_small}",
        "oracle_eval.enabled=false",
        "data.max_train_rows=128",
        "data.max_eval_rows=32",
    )
    manifest = json.loads((tmp_path / "pipeline.json").read_text(encoding="utf-8"))
    assert [(s["name"], s["status"]) for s in manifest["steps"]] == [
        ("sft", "done"),
        ("rm", "done"),
        ("ppo", "done"),
        ("compare", "done"),
    ]
    rm_cfg = yaml.safe_load((tmp_path / "rm" / "config.yaml").read_text(encoding="utf-8"))
    assert rm_cfg["model"]["path"] == str(tmp_path / "sft" / "model")
    cfg = yaml.safe_load((tmp_path / "ppo" / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["model"]["path"] == str(tmp_path / "sft" / "model")
    assert cfg["ref_model"] == str(tmp_path / "sft" / "model")
    assert cfg["value_model"] == str(tmp_path / "rm" / "model")
    assert cfg["reward"]["sources"] == [{"type": "model", "path": str(tmp_path / "rm" / "model"), "weight": 1.0}]
    metrics = read_metrics(tmp_path / "ppo")
    assert metrics["global_step"] == 2 and "kl" in metrics
    assert (tmp_path / "ppo" / "value_model" / "config.json").is_file()

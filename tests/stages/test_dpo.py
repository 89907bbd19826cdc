"""stage=dpo through the CLI from the shared SFT run, TRL's loss variants, and precomputed reference log-probs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from alignment.errors import AlignmentError
from alignment.stages.dpo import check_loss_settings, trl_loss_types
from tests.conftest import FAST, read_metrics, run_cli

# A few real optimiser steps, no warm-up: enough for every parameter to move.
STEPS = ["trainer.max_steps=3", "trainer.warmup_steps=0", "trainer.logging_steps=1", "trainer.save_strategy=no"]
# Enough steps for a preference loss to move its numbers the right way, not only to move them (3 steps leave the
# held-out DPO margin at about +0.01, 8 at about +0.24).
LEARN = ["trainer.max_steps=8", *STEPS[1:]]
# Evaluate on the pairs trained on (held-out rows = the first 32 train rows): what training must fit, in few steps.
ON_TRAINED_PAIRS = [
    "data.max_train_rows=32",
    "data.eval_split=train",
    "data.max_eval_rows=32",
    *(x for x in FAST if x.startswith("oracle_eval.")),
]


def changed_fraction(before_dir: Path, after_dir: Path, model_cls=AutoModelForCausalLM) -> float:
    """Share of the start model's tensors that differ in the trained model (tensors both models have)."""
    before = AutoModelForCausalLM.from_pretrained(before_dir).state_dict()
    after = model_cls.from_pretrained(after_dir).state_dict()
    common = [k for k in before if k in after and before[k].shape == after[k].shape]
    assert len(common) > 0.8 * len(before), "the trained model lost most of the start model's tensors"
    return 1 - sum(torch.equal(before[k], after[k]) for k in common) / len(common)


@pytest.mark.slow
def test_dpo_trains_the_sft_model_and_records_held_out_rewards(sft_run, tmp_path):
    run_cli("stage=dpo", f"model.path={sft_run / 'model'}", f"output_dir={tmp_path}", *LEARN, *FAST)
    out = tmp_path / "dpo"
    metrics = read_metrics(out)
    for key in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_logps/chosen", "oracle_reward"):
        assert key in metrics and f"{key}_before" in metrics, key
    assert metrics["global_step"] == 8
    # Before training the policy is its own reference: every implicit reward is zero.
    assert metrics["eval_rewards/margins_before"] == pytest.approx(0.0, abs=1e-5)
    # After it, held-out chosen replies gained on rejected ones (a loss of the wrong sign would make this negative).
    assert metrics["eval_rewards/margins"] > 0.05
    assert metrics["eval_rewards/accuracies"] > 0.5
    assert 0.0 <= metrics["oracle_reward"] <= 1.0
    per_task = [k for k in metrics if k.startswith("eval_rewards/accuracies/") and not k.endswith("_before")]
    assert len(per_task) >= 2 and all(0.0 <= metrics[k] <= 1.0 for k in per_task)
    # The oracle reward per family is the mean of that family's scored samples, before and after.
    for suffix in ("", "_before"):
        samples = [json.loads(line) for line in (out / f"oracle_samples{suffix}.jsonl").open(encoding="utf-8")]
        families = {s["task"] for s in samples}
        assert len(families) >= 2
        for task in families:
            mine = [s["score"] for s in samples if s["task"] == task and s["score"] is not None]
            assert metrics[f"oracle_reward/{task}{suffix}"] == pytest.approx(sum(mine) / len(mine))
    assert changed_fraction(sft_run / "model", out / "model") > 0.9


@pytest.mark.slow
def test_precomputed_reference_with_a_weighted_robust_and_sft_loss(sft_run, tmp_path):
    proc = run_cli(
        "stage=dpo",
        f"model.path={sft_run / 'model'}",
        f"output_dir={tmp_path}",
        "trainer.precompute_ref_log_probs=true",
        "trainer.loss_type=[robust,sft]",
        "trainer.loss_weights=[1.0,0.5]",
        "trainer.label_smoothing=0.1",
        "oracle_eval.enabled=false",
        *LEARN,
        *FAST,
    )
    # TRL's precompute pass names itself only in a progress bar, and library bars are off when output is not a
    # terminal (alignment/progress.py): check the setting reached TRL, and its effect below.
    assert proc.returncode == 0
    config = yaml.safe_load((tmp_path / "dpo" / "config.yaml").read_text(encoding="utf-8"))
    assert config["trainer"]["precompute_ref_log_probs"] is True
    metrics = read_metrics(tmp_path / "dpo")
    # The precomputed reference log-probs are the start model's own: zero rewards before training; after it the
    # robust loss (labels assumed 10% flipped) still favours the chosen replies.
    assert metrics["eval_rewards/chosen_before"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["eval_rewards/rejected_before"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["eval_rewards/margins"] > 0.05
    assert "oracle_reward" not in metrics
    assert changed_fraction(sft_run / "model", tmp_path / "dpo" / "model") > 0.9


@pytest.mark.slow
def test_label_smoothing_on_a_loss_that_ignores_it_fails_before_loading(tmp_path):
    proc = run_cli(
        "stage=dpo",
        f"output_dir={tmp_path}",
        "trainer.loss_type=[sigmoid]",
        "trainer.label_smoothing=0.1",
        check=False,
    )
    assert proc.returncode == 2
    assert "loss_type=cdpo" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "dpo").exists()


def test_trl_loss_names_are_read_from_trl():
    names = trl_loss_types()
    assert {"sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "exo_pair"} <= set(
        names
    )


@pytest.mark.parametrize(
    "trainer",
    [
        {"loss_type": ["sigmoid"]},
        {"loss_type": "ipo"},
        {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.2]},
        {"loss_type": ["robust"], "label_smoothing": 0.1},
        {"loss_type": ["exo_pair"], "label_smoothing": 1e-3},
    ],
)
def test_valid_loss_settings_pass(trainer):
    losses = check_loss_settings(trainer)
    assert losses == ([trainer["loss_type"]] if isinstance(trainer["loss_type"], str) else trainer["loss_type"])


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"loss_type": ["sigmod"]}, "unknown DPO loss 'sigmod'"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, "1 values for 2 losses"),
        ({"loss_type": ["sigmoid"], "label_smoothing": 0.1}, "conservative DPO use trainer.loss_type=cdpo"),
        ({"loss_type": ["robust"], "label_smoothing": 0.5}, "[0, 0.5)"),
        ({"loss_type": ["exo_pair"]}, "label_smoothing > 0"),
    ],
)
def test_invalid_loss_settings_name_the_key_and_the_fix(trainer, message):
    with pytest.raises(AlignmentError, match=None) as err:
        check_loss_settings(trainer)
    assert message in str(err.value)

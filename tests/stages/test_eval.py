"""stage=eval: the win rate's maths, and end to end: SFT's own held-out loss and oracle reward reproduced, a reward
model's pair accuracy as stage=rm measures it, DPO's win rate over SFT under the oracle with its interval, and
lm-eval on the shipped task (run when installed, skipped with a message when not)."""

from __future__ import annotations

import builtins
import json
import statistics

import pytest
from omegaconf import OmegaConf

from alignment.evaluation.scoring import outcome, win_rate
from alignment.stages.eval import model_kind
from tests.conftest import FAST, cli_in_one_process, read_metrics

ORACLE_EVAL = [a for a in FAST if a.startswith("oracle_eval.")]  # the sft_run fixture's decoding


def test_win_rate_counts_ties_half_and_its_interval_is_over_prompts():
    # two prompts, two replies each: outcomes 1, 0.5 | 0.5, 0 -> prompt means 0.75, 0.25
    result = win_rate([1.0, 0.0, 1.0, 0.5], [0.0, 0.0, 1.0, 1.0], [12, 10, 10, 8], [10, 10, 10, 10], per_prompt=2)
    assert (result.rate, result.prompts, result.pairs) == (0.5, 2, 4)
    half = 12.706204736174707 * statistics.stdev([0.75, 0.25]) / 2**0.5  # t(0.975, 1 dof) * s / sqrt(n)
    assert result.low == max(0.0, 0.5 - half) and result.high == min(1.0, 0.5 + half)
    # outcome = a + b * length difference through (2, 1), (0, .5), (0, .5), (-2, 0): a = 0.5, b = 0.25
    assert result.length_controlled == pytest.approx(0.5) and result.length_slope == pytest.approx(0.25)


def test_length_controlled_win_rate_removes_a_win_that_only_longer_replies_bring():
    # A wins exactly when its reply is 20 tokens longer, ties at equal length: at equal length A is even with B
    scores_a, scores_b = [1.0, 1.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]
    result = win_rate(scores_a, scores_b, [40, 40, 20, 20], [20, 20, 20, 20], per_prompt=1)
    assert result.rate == 0.75 and result.length_controlled == pytest.approx(0.5)
    assert [outcome(1, 0), outcome(0.5, 0.5), outcome(0, 1)] == [1.0, 0.5, 0.0]


def test_model_kind_reads_the_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForSequenceClassification"]}))
    assert model_kind(str(tmp_path), "auto") == "reward_model"
    assert model_kind(str(tmp_path), "policy") == "policy"
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    assert model_kind(str(tmp_path), "auto") == "policy"


def test_lm_eval_not_installed_skips_with_a_message(monkeypatch, capsys):
    from alignment.evaluation.lm_eval_tasks import lm_eval_scores

    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    settings = OmegaConf.create({"tasks": ["aster_identity"], "include_path": []})
    assert lm_eval_scores(None, None, settings) == {"lm_eval_skipped": 1}
    assert "lm-eval is not installed, so aster_identity were skipped; pip install" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_reproduces_sft_rm_numbers_and_measures_dpo_against_sft(sft_run, tmp_path):
    out = tmp_path / "run"
    short = ["trainer.max_steps=3", "trainer.warmup_steps=0", "trainer.save_strategy=no", *FAST]
    runs = cli_in_one_process(
        [
            ["stage=eval", f"model.path={sft_run}", f"output_dir={tmp_path / 'e_sft'}", "data.max_eval_rows=32"]
            + ORACLE_EVAL,
            ["stage=rm", f"model.path={sft_run}", f"output_dir={out}", *short],
            ["stage=eval", f"model.path={out / 'rm'}", f"output_dir={tmp_path / 'e_rm'}", *FAST],
            ["stage=dpo", f"model.path={sft_run}", f"output_dir={out}", *short],
            ["stage=eval", f"model.path={out / 'dpo'}", f"eval.against={sft_run}", f"output_dir={tmp_path / 'e_dpo'}"]
            + [*FAST, "eval.loss=false"],
        ]
    )
    for run in runs:
        assert run["code"] == 0, run["stderr"][-3000:]
    sft, evaluated = read_metrics(sft_run), read_metrics(tmp_path / "e_sft" / "eval")
    # the same held-out rows, encoding, masks, packing and batches as the SFT stage's final evaluation
    assert evaluated["eval_loss"] == pytest.approx(sft["eval_loss"], abs=1e-4)
    assert evaluated["perplexity"] == pytest.approx(2.718281828459045 ** sft["eval_loss"], rel=1e-3)
    # the same prompts and decoding as the stage's oracle evaluation
    assert evaluated["oracle_reward"] == pytest.approx(sft["oracle_reward"], abs=1e-9)
    assert evaluated["mean_reply_tokens"] > 0 and evaluated["reward/oracle"] == evaluated["oracle_reward"]

    rm, rm_eval = read_metrics(out / "rm"), read_metrics(tmp_path / "e_rm" / "eval")
    assert rm_eval["reward_model"] == 1 and "eval_loss" in rm_eval
    for key in ("eval_accuracy", "eval_margin"):
        assert rm_eval[key] == pytest.approx(rm[key], abs=1e-4)

    dpo = read_metrics(tmp_path / "e_dpo" / "eval")
    assert dpo["oracle_reward"] == pytest.approx(read_metrics(out / "dpo")["oracle_reward"], abs=1e-9)
    assert 0 <= dpo["win_rate_low"] <= dpo["win_rate"] <= dpo["win_rate_high"] <= 1
    assert 0 <= dpo["win_rate_lc"] <= 1 and dpo["win_rate_prompts"] == 8 and dpo["win_rate_pairs"] == 16
    lines = [json.loads(x) for x in (tmp_path / "e_dpo" / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all(len(line["replies"]) == 2 == len(line["against_replies"]) for line in lines)
    judged = [
        outcome(a, b) for line in lines for a, b in zip(line["judge"]["model"], line["judge"]["against"], strict=True)
    ]
    assert dpo["win_rate"] == pytest.approx(sum(judged) / len(judged))
    assert [s for line in lines for s in line["scores"]["oracle"]] == [
        s for line in lines for s in line["judge"]["model"]
    ]


@pytest.mark.slow
def test_lm_eval_runs_the_shipped_task_on_the_loaded_model(sft_run, tmp_path):
    pytest.importorskip("lm_eval")
    (run,) = cli_in_one_process(
        [
            [
                "stage=eval",
                f"model.path={sft_run}",
                f"output_dir={tmp_path}",
                "eval.loss=false",
                "eval.generate=false",
                "eval.lm_eval.tasks=[aster_identity]",
            ]
        ]
    )
    assert run["code"] == 0, run["stderr"][-3000:]
    metrics = read_metrics(tmp_path / "eval")
    accuracy = metrics["lm_eval/aster_identity/acc"]
    assert 0 <= accuracy <= 1 and (accuracy * 8) == pytest.approx(round(accuracy * 8))  # 8 rows, right or wrong
    assert "lm_eval/aster_identity/acc_stderr" in metrics

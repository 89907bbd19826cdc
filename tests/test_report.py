"""alignment.report on a synthetic single run dir: table rows per stage, n beside rates, panels that say why they are
empty, files written, clean error. Sweeps and dirs of runs: tests/report/."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alignment.errors import AlignmentError
from alignment.report import main, report
from alignment.report.plots import NO_CURVE, NO_ORACLE, run_figure


def _stage(run, name, metrics, losses):
    d = run / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    rows = [{"step": i + 1, "loss": v} for i, v in enumerate(losses)]
    (d / "log_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"name": name, "stage": name, "status": "done", "output": str(d)}


def test_report_tables_every_stage_in_pipeline_order(tmp_path):
    steps = [
        _stage(tmp_path, "sft", {"eval_loss_before": 8.0, "eval_loss": 2.0, "oracle_reward": 0.3}, [8, 4, 2]),
        _stage(
            tmp_path,
            "dpo",
            {
                "eval_rewards/accuracies": 0.9,
                "eval_rewards/accuracies/chat": 0.8,
                "eval_rewards/accuracies/chat_before": 0.5,
                "oracle_reward_before": 0.3,
                "oracle_reward": 0.5,
            },
            [0.69, 0.4],
        ),
    ]
    (tmp_path / "pipeline.json").write_text(json.dumps({"pipeline": "dpo", "steps": steps}), encoding="utf-8")
    text = report(tmp_path)
    lines = text.splitlines()
    assert "| sft | held-out loss | 8 | 2 |" in lines
    assert "| dpo | oracle reward | 0.3 | 0.5 |" in lines
    assert lines.index("| dpo | reward accuracy |  | 0.9 |") + 1 == lines.index(
        "| dpo | reward accuracy: chat | 0.5 | 0.8 |"
    )
    assert lines.index("| sft | held-out loss | 8 | 2 |") < lines.index("| dpo | oracle reward | 0.3 | 0.5 |")
    assert (tmp_path / "report.png").stat().st_size > 1000
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == text


def test_report_on_a_dir_without_results_is_a_clean_error(tmp_path, capsys):
    with pytest.raises(AlignmentError, match="no finished stage"):
        report(tmp_path)
    assert main([str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_rates_show_how_many_rows_or_replies_they_were_measured_on(tmp_path):
    metrics = {
        "eval_accuracy_before": 0.5,
        "eval_accuracy": 0.75,
        "eval_rows": 32,
        "eval_accuracy/chat": 0.8,
        "eval_rows/chat": 10,
        "eval_accuracy/math": 0.6,  # no per-task count recorded: no n shown
        "oracle_reward": 0.4,
        "oracle_samples": 16,
    }
    _stage(tmp_path, "rm", metrics, [0.7, 0.5])
    lines = report(tmp_path).splitlines()
    assert "| rm | RM accuracy | 0.5 | 0.75 (n=32) |" in lines
    assert "| rm | RM accuracy: chat |  | 0.8 (n=10) |" in lines
    assert "| rm | RM accuracy: math |  | 0.6 |" in lines
    assert "| rm | oracle reward |  | 0.4 (n=16) |" in lines


def test_empty_panels_say_why_and_short_curves_get_markers(tmp_path):
    sft = tmp_path / "sft"
    _stage(tmp_path, "sft", {"eval_loss": 2.0}, [3.0, 2.5, 2.0])
    _stage(tmp_path, "rm", {"eval_accuracy": 0.7}, [])
    _stage(tmp_path, "long", {"eval_loss": 1.0}, [1.0] * 25)
    fig = run_figure([sft, tmp_path / "rm", tmp_path / "long"])
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert texts == [[], [NO_CURVE], [], [NO_ORACLE]]
    assert NO_ORACLE.replace("\n", " ") == (
        "no oracle on this data: oracle_reward is measured on the embedded prompts only"
    )
    assert [line.get_marker() for line in fig.axes[0].lines] == ["o"]  # 3 points
    assert [line.get_marker() for line in fig.axes[2].lines] == ["None"]  # 25 points: a plain line
    assert fig.axes[0].get_xlabel() == "optimizer step" and fig.axes[0].get_ylabel() == "loss (nats)"
    assert fig.axes[0].get_title() == "sft: training loss by step"


def test_python_m_alignment_report_runs_and_errors_in_one_line(tmp_path):
    _stage(tmp_path / "run", "sft", {"eval_loss": 2.0}, [3.0, 2.0])
    ok = subprocess.run(
        [sys.executable, "-m", "alignment.report", str(tmp_path / "run")], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "| sft | held-out loss |  | 2 |" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "alignment.report", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and "not a directory" in bad.stderr and bad.stderr.count("\n") == 1


def test_a_failed_or_unfinished_run_says_so_above_its_table(tmp_path):
    steps = [_stage(tmp_path, "sft", {"eval_loss": 2.0}, [3.0, 2.0])]
    steps.append({"name": "dpo", "stage": "dpo", "status": "running", "output": str(tmp_path / "dpo")})
    (tmp_path / "pipeline.json").write_text(json.dumps({"pipeline": "dpo", "steps": steps}), encoding="utf-8")
    lines = report(tmp_path).splitlines()
    assert lines[2].startswith("**This run has not finished**") and "| sft | held-out loss |  | 2 |" in lines
    failure = {"error": "the loss became NaN at step 2", "exception": "AlignmentError", "overrides": []}
    (tmp_path / "failed.json").write_text(json.dumps(failure), encoding="utf-8")
    lines = report(tmp_path).splitlines()
    assert lines[2] == (
        "**This run failed** (AlignmentError: the loss became NaN at step 2); only the stages that finished are shown."
    )

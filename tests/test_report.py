"""alignment.report on a synthetic pipeline run dir: table rows per stage, files written, clean error."""

from __future__ import annotations

import json

import pytest

from alignment.errors import AlignmentError
from alignment.report import main, report


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

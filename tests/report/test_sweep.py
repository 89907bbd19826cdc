"""python -m alignment.report on sweep dirs and dirs of runs: report.csv, seed statistics, failed and missing runs."""

from __future__ import annotations

import csv
import math

from alignment.report import main, report
from alignment.report.stats import summarize
from alignment.report.tables import print_table
from tests.report import dirs

T_975_DF1 = 12.706204736174707  # Student t quantile 0.975 with 1 degree of freedom (statistical tables)


def _job(sweep, i, overrides, metrics, losses=(2.0, 1.5, 1.0)):
    run = dirs.hydra_job(sweep / str(i), overrides)
    dirs.stage(run, "sft", metrics, list(losses))
    return run


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_two_learning_rates_give_a_csv_row_each_a_table_and_plots(tmp_path):
    dirs.multirun(tmp_path, ["trainer.learning_rate=1e-3,1e-2"])
    _job(tmp_path, 0, ["trainer.learning_rate=0.001"], {"eval_loss": 1.25})
    _job(tmp_path, 1, ["trainer.learning_rate=0.01"], {"eval_loss": 0.75})
    text = report(tmp_path)
    columns, rows = _csv(tmp_path / "report.csv")
    assert columns == ["run", "status", "trainer.learning_rate", "eval_loss", "sft/eval_loss", "error"]
    assert rows == [
        {"run": "0", "status": "done", "trainer.learning_rate": "0.001", "eval_loss": "1.25", "sft/eval_loss": "1.25",
         "error": ""},
        {"run": "1", "status": "done", "trainer.learning_rate": "0.01", "eval_loss": "0.75", "sft/eval_loss": "0.75",
         "error": ""},
    ]  # fmt: skip
    lines = text.splitlines()
    assert "| # | trainer.learning_rate | seeds / run | eval_loss (minimize) |" in lines
    # Best first: eval_loss is minimised by default.
    assert lines.index("| 1 | 0.01 |  | 0.75 (n=1) |") + 1 == lines.index("| 2 | 0.001 |  | 1.25 (n=1) |")
    assert "2 runs: 2 done, 0 failed, 0 incomplete, 0 missing." in lines
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == text
    for png in ("report_eval_loss.png", "report_curves.png"):
        assert (tmp_path / png).stat().st_size > 5000
        assert f"]({png})" in text


def test_seeds_are_aggregated_into_mean_std_ci_and_n(tmp_path):
    dirs.multirun(tmp_path, ["trainer.learning_rate=1e-3,1e-2", "seed=1,2"])
    values = {("0.001", "1"): 1.0, ("0.001", "2"): 3.0, ("0.01", "1"): 0.5, ("0.01", "2"): 0.7}
    for i, ((lr, seed), loss) in enumerate(values.items()):
        metrics = {"eval_loss": loss, "eval_accuracy": loss / 4, "eval_rows": 32}
        _job(tmp_path, i, [f"trainer.learning_rate={lr}", f"seed={seed}"], metrics)
    text = report(tmp_path)

    def expected(a, b):  # two seeds: mean, sample std (ddof=1), mean -+ t * std / sqrt(2)
        mean = (a + b) / 2
        std = math.sqrt((a - mean) ** 2 + (b - mean) ** 2)
        half = T_975_DF1 * std / math.sqrt(2)
        return f"{mean:.4g} ± {std:.4g} [{mean - half:.4g}, {mean + half:.4g}]"

    assert expected(1.0, 3.0) == "2 ± 1.414 [-10.71, 14.71]"
    first = (
        f"| 1 | 0.01 | seed=1, seed=2 | {expected(0.5, 0.7)} (n=2) | {expected(0.125, 0.175)} (n=2; n=32 rows each) |"
    )
    second = (
        f"| 2 | 0.001 | seed=1, seed=2 | {expected(1.0, 3.0)} (n=2) | {expected(0.25, 0.75)} (n=2; n=32 rows each) |"
    )
    lines = text.splitlines()
    assert lines.index(first) + 1 == lines.index(second)
    _, rows = _csv(tmp_path / "report.csv")
    assert [(r["trainer.learning_rate"], r["seed"], r["eval_loss"]) for r in rows] == [
        ("0.001", "1", "1.0"),
        ("0.001", "2", "3.0"),
        ("0.01", "1", "0.5"),
        ("0.01", "2", "0.7"),
    ]


def test_summary_matches_hand_computed_values_for_three_seeds():
    s = summarize([1.0, 2.0, 6.0])
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2)
    half = 4.302652729911275 * std / math.sqrt(3)  # t(0.975, df=2)
    assert (s.mean, s.n) == (3.0, 3)
    assert math.isclose(s.std, std) and math.isclose(s.low, 3 - half) and math.isclose(s.high, 3 + half)
    one = summarize([0.5])
    assert one.mean == 0.5 and one.n == 1 and math.isnan(one.std)


def test_failed_and_missing_runs_are_listed_not_dropped(tmp_path):
    dirs.multirun(tmp_path, ["stage=sft", "trainer.learning_rate=1e-3,1e-2,1e-1"])
    _job(tmp_path, 0, ["stage=sft", "trainer.learning_rate=0.001"], {"eval_loss": 1.0})
    dirs.hydra_job(tmp_path / "1", ["stage=sft", "trainer.learning_rate=0.01"])
    dirs.failed(tmp_path / "1", "the loss became NaN at step 2", "AlignmentError", ["trainer.learning_rate=0.01"])
    text = report(tmp_path)
    lines = text.splitlines()
    assert "3 runs: 1 done, 1 failed, 0 incomplete, 1 missing." in lines
    assert "## Failed runs (1)" in lines
    # Runs are named by the overrides that vary (stage=sft is in every run: said once, above the table).
    assert "Same in every run: stage=sft." in lines
    assert "| 1 | trainer.learning_rate=0.01 | AlignmentError: the loss became NaN at step 2 |" in lines
    assert "## Missing runs (1)" in lines
    assert "| trainer.learning_rate=0.1 |" in lines
    _, rows = _csv(tmp_path / "report.csv")
    assert [(r["run"], r["status"], r["trainer.learning_rate"], r["error"]) for r in rows] == [
        ("0", "done", "0.001", ""),
        ("1", "failed", "0.01", "AlignmentError: the loss became NaN at step 2"),
        ("", "missing", "0.1", ""),
    ]


def test_a_pipeline_sweep_has_a_column_per_step_metric_and_the_last_step_as_objective(tmp_path):
    dirs.multirun(tmp_path, ["pipeline=dpo", "trainer.beta=0.1,0.5"])
    for i, (beta, acc) in enumerate([("0.1", 0.75), ("0.5", 0.5)]):
        run = dirs.hydra_job(tmp_path / str(i), ["pipeline=dpo", f"trainer.beta={beta}"])
        steps = [
            dirs.stage(run, "sft", {"eval_loss": 2.0, "eval_rows": 32}, [3.0, 2.0]),
            dirs.stage(run, "dpo", {"eval_loss": 0.5 + acc, "eval_rewards/accuracies": acc, "eval_rows": 32}, [0.7]),
        ]
        dirs.pipeline(run, steps, name="dpo")
    text = report(tmp_path)
    columns, rows = _csv(tmp_path / "report.csv")
    assert columns == [
        "run", "status", "pipeline", "trainer.beta", "dpo/eval_loss", "dpo/eval_rewards/accuracies", "dpo/eval_rows",
        "eval_loss", "eval_rewards/accuracies", "eval_rows", "sft/eval_loss", "sft/eval_rows", "error",
    ]  # fmt: skip
    assert [(r["trainer.beta"], r["dpo/eval_rewards/accuracies"], r["sft/eval_loss"]) for r in rows] == [
        ("0.1", "0.75", "2.0"),
        ("0.5", "0.5", "2.0"),
    ]
    assert "| 1 | 0.5 |  | 1 (n=1) | 0.5 (n=1; n=32 rows each) |" in text.splitlines()
    assert "Same in every run: pipeline=dpo." in text.splitlines()


def test_sweep_metric_and_direction_order_the_table_and_report_metrics_are_plotted(tmp_path):
    sweep = {"metric": "oracle_reward", "direction": "maximize", "report_metrics": ["eval_rewards/*"]}
    dirs.multirun(tmp_path, ["data.transforms=[flip],[subsample]"], sweep=sweep)
    for i, (transform, reward) in enumerate([("[flip]", 0.25), ("[subsample]", 0.5)]):
        metrics = {"oracle_reward": reward, "oracle_samples": 16, "eval_rewards/margins": reward * 2}
        _job(tmp_path, i, [f"data.transforms={transform}"], metrics)
    text = report(tmp_path)
    lines = text.splitlines()
    assert "Objective: `oracle_reward`, maximize (sweep.metric)." in lines
    assert "| # | data.transforms | seeds / run | oracle_reward (maximize) | eval_rewards/margins |" in lines
    assert lines.index("| 1 | [subsample] |  | 0.5 (n=1; n=16 replies each) | 1 (n=1) |") + 1 == lines.index(
        "| 2 | [flip] |  | 0.25 (n=1; n=16 replies each) | 0.5 (n=1) |"
    )
    assert (tmp_path / "report_oracle_reward.png").stat().st_size > 5000
    assert (tmp_path / "report_eval_rewards_margins.png").stat().st_size > 5000


def test_a_parent_dir_compares_its_runs_without_merging_runs_that_recorded_no_overrides(tmp_path):
    dirs.stage(tmp_path / "2026-01-01_10-00-00", "sft", {"eval_loss": 1.0})
    dirs.stage(tmp_path / "2026-01-02_10-00-00", "sft", {"eval_loss": 0.5})
    (tmp_path / "2026-01-03_10-00-00" / "sft").mkdir(parents=True)  # started, never finished
    (tmp_path / "2026-01-03_10-00-00" / "sft" / "run_state.json").write_text("{}", encoding="utf-8")
    text = report(tmp_path)
    lines = text.splitlines()
    assert lines[0] == f"# Runs report: {tmp_path}"
    assert "| 1 | 2026-01-02_10-00-00 | 0.5 (n=1) |" in lines and "| 2 | 2026-01-01_10-00-00 | 1 (n=1) |" in lines
    assert "## Incomplete runs (1)" in lines and "| 2026-01-03_10-00-00 | (no overrides recorded) |" in lines


def test_main_prints_plain_text_off_a_terminal_and_a_rich_table_on_one(tmp_path, capsys, monkeypatch):
    dirs.multirun(tmp_path, ["seed=1,2"])
    _job(tmp_path, 0, ["seed=1"], {"eval_loss": 1.0})
    _job(tmp_path, 1, ["seed=2"], {"eval_loss": 3.0})
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip("\n") == (tmp_path / "report.md").read_text(encoding="utf-8").rstrip("\n")
    assert "| 1 | seed=1, seed=2 | 2 ± 1.414 [-10.71, 14.71] (n=2) |" in out.splitlines()
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    print_table("Sweep report", ["#", "eval_loss"], [["1", "2 ± 1.414"]], "| markdown |", "## Missing runs (1) [x]")
    out = capsys.readouterr().out
    assert "Sweep report" in out and "2 ± 1.414" in out and "| markdown |" not in out
    assert out.splitlines()[-1] == "## Missing runs (1) [x]"  # failed and missing runs follow the table


def test_a_dir_without_runs_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x", encoding="utf-8")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no finished stage (metrics.json) or run dir under") and err.count("\n") == 1

"""Sweeps through the real CLI (``-m``): job dirs, the objective, failures, re-running, Optuna, shared steps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from alignment.report import report
from tests.conftest import cli_in_one_process, read_metrics

pytestmark = pytest.mark.slow

TINY = ["trainer.max_steps=2", "data.max_train_rows=32", "data.max_eval_rows=16", "oracle_eval.enabled=false"]


def _objective_lines(stdout: str) -> dict[str, float]:
    """``[sweep] <job dir>: <metric> = <value>`` lines: what each job returned to the sweeper."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("[sweep] ") and " = " in line and not line.startswith("[sweep] job "):
            where, value = line.removeprefix("[sweep] ").rsplit(" = ", 1)
            out[Path(where.rsplit(":", 1)[0]).name] = float(value)
    return out


def test_a_sweep_runs_every_job_returns_the_objective_resumes_and_survives_a_failure(tmp_path):
    sweep = tmp_path / "sweep"
    argv = ["-m", "stage=sft", *TINY, "trainer.learning_rate=1e-3,1e-2", "seed=1,2", "sweep.metric=eval_loss"]
    argv.append(f"output_dir={sweep}")
    jobs = [f"seed={s},trainer.learning_rate={lr}" for lr in ("0.001", "0.01") for s in (1, 2)]
    metrics_files = [str(sweep / job / "sft" / "metrics.json") for job in jobs]
    bad = tmp_path / "bad"
    failing = ["-m", "stage=sft", *TINY, "trainer.learning_rate=-1,1e-2", f"output_dir={bad}"]
    first, again, with_failure = cli_in_one_process(
        [{"argv": argv, "read": metrics_files}, {"argv": argv, "read": metrics_files}, failing]
    )

    assert first["code"] == 0, first["stderr"][-2000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(jobs)
    returned = _objective_lines(first["stdout"])
    assert set(returned) == set(jobs)
    for job in jobs:  # each job returned its own final eval_loss
        assert returned[job] == pytest.approx(read_metrics(sweep / job / "sft")["eval_loss"], rel=1e-5)
    assert (sweep / "multirun.yaml").exists()

    # The same command again: every job is found finished and skipped, nothing is retrained.
    assert again["code"] == 0
    assert again["stdout"].count("finished earlier with the same config") == 4
    for path in metrics_files:
        assert again["files"][path]["mtime_ns"] == first["files"][path]["mtime_ns"]
    assert _objective_lines(again["stdout"]) == returned

    # Seeds are aggregated: one row per learning rate, mean ± std over n=2 seeds.
    text = report(sweep)
    rows = list(csv.DictReader((sweep / "report.csv").open(encoding="utf-8")))
    assert len(rows) == 4 and {"trainer.learning_rate", "seed", "eval_loss", "status"} <= set(rows[0])
    lr_001 = [read_metrics(sweep / j / "sft")["eval_loss"] for j in jobs if j.endswith("=0.001")]
    mean = sum(lr_001) / 2
    assert f"{mean:.4g} ± " in text and "(n=2)" in text
    assert list(sweep.glob("report_*.png"))

    # A failing job is recorded and the sweep goes on; the report lists it.
    assert with_failure["code"] == 0
    failed = json.loads((bad / "trainer.learning_rate=-1" / "failed.json").read_text(encoding="utf-8"))
    assert "trainer.learning_rate must be positive" in failed["error"]
    assert "trainer.learning_rate=-1" in failed["overrides"]
    assert (bad / "trainer.learning_rate=0.01" / "sft" / "metrics.json").exists()
    text = report(bad)
    rows = {r["trainer.learning_rate"]: r for r in csv.DictReader((bad / "report.csv").open(encoding="utf-8"))}
    assert len(rows) == 2 and rows["-1"]["status"] == "failed" and rows["0.01"]["status"] == "done"
    assert float(rows["0.01"]["eval_loss"]) > 0
    assert "must be positive" in text


def test_optuna_sweep_searches_the_objective(tmp_path):
    argv = [
        "-m",
        "stage=sft",
        *TINY,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.direction=minimize",
        "trainer.learning_rate=tag(log,interval(1e-4,1e-2))",
        "sweep.metric=eval_loss",
        f"output_dir={tmp_path}",
    ]
    (result,) = cli_in_one_process([argv])
    assert result["code"] == 0, result["stderr"][-2000:]
    jobs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(jobs) == 2 and all(p.name.startswith("trainer.learning_rate=") for p in jobs)
    losses = {p.name: read_metrics(p / "sft")["eval_loss"] for p in jobs}
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text(encoding="utf-8"))
    assert best["best_value"] == pytest.approx(min(losses.values()), rel=1e-5)
    best_job = min(losses, key=losses.get)
    assert float(best_job.split("=", 1)[1]) == pytest.approx(best["best_params"]["trainer.learning_rate"])


def test_a_pipeline_sweep_runs_the_step_it_does_not_vary_once(tmp_path):
    argv = [
        "-m",
        "experiment=beta_frontier",
        "vars.beta=0.1,0.5",
        "seed=1",
        "pipeline.steps.sft.trainer.max_steps=2",
        "pipeline.steps.dpo.trainer.max_steps=2",
        "pipeline.steps.dpo.data.max_train_rows=32",
        "data.max_train_rows=32",
        "data.max_eval_rows=16",
        "oracle_eval.enabled=false",
        f"output_dir={tmp_path}",
    ]
    (result,) = cli_in_one_process([argv])
    assert result["code"] == 0, result["stderr"][-2000:]
    first, second = tmp_path / "seed=1,vars.beta=0.1", tmp_path / "seed=1,vars.beta=0.5"
    steps = {
        p: {s["name"]: s for s in json.loads((p / "pipeline.json").read_text())["steps"]} for p in (first, second)
    }
    assert steps[second]["sft"]["shared"] is True and steps[second]["sft"]["output"] == str(first / "sft")
    assert not (second / "sft").exists()  # not trained again
    assert result["stdout"].count("[pipeline] sft: running stage sft") == 1
    for job, beta in ((first, 0.1), (second, 0.5)):
        config = yaml.safe_load((job / "dpo" / "config.yaml").read_text(encoding="utf-8"))
        assert config["trainer"]["beta"] == beta and config["model"]["path"] == str(first / "sft" / "model")
        metrics = read_metrics(job / "dpo")  # evaluate_before: false in the preset's dpo step
        assert "eval_loss" in metrics and "eval_loss_before" not in metrics
    rows = list(csv.DictReader(_report_csv(tmp_path)))
    assert {r["vars.beta"] for r in rows} == {"0.1", "0.5"} and all(r["dpo/eval_loss"] for r in rows)


def _report_csv(sweep: Path):
    report(sweep)
    return (sweep / "report.csv").open(encoding="utf-8")

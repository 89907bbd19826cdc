"""Sweep plots: the metric against each swept parameter (numeric or categorical, error bars over seeds) and the
training curves of every run; labelled axes and titles that say what is shown."""

from __future__ import annotations

import math

import pytest

from alignment.report.plots import curves_figure, metric_figure
from alignment.report.runs import Run
from alignment.report.stats import group_runs


def _run(name, overrides, metrics, path=None):
    return Run(name=name, path=path, status="done", overrides=overrides, metrics=metrics, has_overrides=True)


@pytest.fixture
def lr_by_beta():
    """trainer.learning_rate (numeric, 3 values) x trainer.beta (2 values) x seed (2): eval_loss = lr*100 + beta +
    seed/10."""
    runs = []
    for lr in ("0.001", "0.01", "0.1"):
        for beta in ("0.1", "0.5"):
            for seed in ("1", "2"):
                loss = float(lr) * 100 + float(beta) + int(seed) / 10
                overrides = {"trainer.learning_rate": lr, "trainer.beta": beta, "seed": seed}
                runs.append(_run(f"{lr}-{beta}-{seed}", overrides, {"eval_loss": loss}))
    return runs


def test_a_numeric_parameter_is_a_log_axis_with_a_series_per_other_setting_and_seed_error_bars(lr_by_beta):
    fig = metric_figure(group_runs(lr_by_beta), ["trainer.learning_rate", "trainer.beta"], "eval_loss", "note")
    lr_ax, beta_ax = fig.axes
    assert lr_ax.get_xscale() == "log" and lr_ax.get_xlabel() == "trainer.learning_rate (log scale)"
    assert lr_ax.get_ylabel() == "eval_loss (nats)" and lr_ax.get_title() == "eval_loss vs trainer.learning_rate\nnote"
    assert [t.get_text() for t in lr_ax.get_legend().get_texts()] == ["trainer.beta=0.1", "trainer.beta=0.5"]
    first = lr_ax.lines[0]  # the beta=0.1 series: mean over seeds 1 and 2 at each learning rate
    assert list(first.get_xdata()) == [0.001, 0.01, 0.1]
    assert [round(y, 9) for y in first.get_ydata()] == [0.35, 1.25, 10.25]
    std = math.sqrt(2 * 0.05**2)  # seeds add 0.1 and 0.2: mean +-0.05, sample std over 2
    (bars,) = [c for c in lr_ax.collections if c.get_segments()][:1]
    spans = [round(seg[1][1] - seg[0][1], 9) for seg in bars.get_segments()]
    assert spans == [round(2 * std, 9)] * 3
    assert beta_ax.get_xscale() == "linear" and list(beta_ax.lines[0].get_xdata()) == [0.1, 0.5]


def test_a_categorical_parameter_has_its_values_as_categories():
    runs = [
        _run(str(i), {"data.transforms": t, "seed": s}, {"oracle_reward": r})
        for i, (t, s, r) in enumerate([("[flip]", "1", 0.2), ("[flip]", "2", 0.4), ("[subsample]", "1", 0.6)])
    ]
    fig = metric_figure(group_runs(runs), ["data.transforms"], "oracle_reward", "note")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[flip]", "[subsample]"]
    assert list(ax.lines[0].get_xdata()) == [0, 1] and [round(y, 9) for y in ax.lines[0].get_ydata()] == [0.3, 0.6]
    assert ax.get_ylabel() == "oracle_reward (mean oracle score, 0-1)"
    assert metric_figure(group_runs(runs), ["data.transforms"], "eval_loss", "note") is None


def test_training_curves_one_colour_per_setting_a_style_per_seed_markers_when_short(tmp_path):
    from tests.report import dirs

    runs = []
    for i, (lr, seed, n) in enumerate([("0.001", "1", 5), ("0.001", "2", 5), ("0.01", "1", 30)]):
        dirs.stage(tmp_path / str(i), "sft", {"eval_loss": 1.0}, [1.0 / (k + 1) for k in range(n)])
        runs.append(_run(str(i), {"trainer.learning_rate": lr, "seed": seed}, {}, path=tmp_path / str(i)))
    fig = curves_figure(runs, lambda r: f"trainer.learning_rate={r.overrides['trainer.learning_rate']}")
    (ax,) = fig.axes
    assert ax.get_title() == "sft: training loss by step, one line per run"
    assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "loss (nats)"
    assert [line.get_label() for line in ax.lines] == [
        "trainer.learning_rate=0.001 seed=1",
        "trainer.learning_rate=0.001 seed=2",
        "trainer.learning_rate=0.01 seed=1",
    ]
    assert [line.get_color() for line in ax.lines] == ["C0", "C0", "C1"]
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--", "-"]
    assert [line.get_marker() for line in ax.lines] == ["o", "o", "None"]

"""Plots: a run's training curves and oracle reward; a sweep's metrics against each swept parameter (error bars over
seeds) and every run's training curve. Axes are labelled with units, titles say what is shown, and a panel with no
data says why."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from alignment.report.runs import Run, parse_value, read_metrics, stage_dirs
from alignment.report.stats import Group

# The training curve drawn per stage: the first of these its log_history has.
CURVES = ["loss", "score", "reward"]
STYLES = ["-", "--", ":", "-."]  # seeds of one setting: one colour, these line styles
FEW_POINTS = 20  # curves with fewer points get markers, so a 3-point curve does not pass for a straight line
NO_CURVE = "no training curve logged"
NO_ORACLE = "no oracle on this data:\noracle_reward is measured on\nthe embedded prompts only"
# (pattern, unit) for axis labels, first match wins.
UNITS = [
    (r"accura|win_rate", "fraction"),
    (r"oracle_reward", "mean oracle score, 0-1"),
    (r"loss|(^|/)kl$", "nats"),
    (r"runtime", "s"),
    (r"per_second", "per s"),
    (r"rss_mb", "MiB"),
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def axis_label(metric: str) -> str:
    unit = next((u for pattern, u in UNITS if re.search(pattern, metric)), None)
    return f"{metric} ({unit})" if unit else metric


def history(stage_dir: Path) -> list[dict]:
    path = stage_dir / "log_history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def curve(rows: list[dict], key: str) -> list[tuple[float, float]]:
    return [(row.get("step", i), row[key]) for i, row in enumerate(rows) if _finite(row.get(key))]


def draw_curve(ax, points: list[tuple[float, float]], **kwargs) -> None:
    marker = {"marker": "o", "markersize": 3} if len(points) < FEW_POINTS else {}
    ax.plot(*zip(*points, strict=True), **marker, **kwargs)


def empty_panel(ax, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_run(dirs: list[Path], out: Path) -> None:
    """Save :func:`run_figure` to ``out``."""
    fig = run_figure(dirs)
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)


def run_figure(dirs: list[Path]):
    """One run: each stage's training curve, then the oracle reward before and after each stage."""
    plt = _pyplot()
    n = len(dirs) + 1
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, d in zip(axes[0], dirs, strict=False):
        rows = history(d)
        key, points = next(((k, p) for k in CURVES if (p := curve(rows, k))), (None, []))
        ax.set_title(f"{d.name}: training {key or 'curve'} by step")
        if points:
            draw_curve(ax, points)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(axis_label(key))
        else:
            empty_panel(ax, NO_CURVE)
    ax = axes[0][-1]
    names, before, after = [], [], []
    for d in dirs:
        m = read_metrics(d)
        if "oracle_reward" in m:
            names.append(d.name)
            before.append(m.get("oracle_reward_before", float("nan")))
            after.append(m["oracle_reward"])
    ax.set_title("oracle reward before and after each stage")
    if names:
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], before, width=0.4, label="before")
        ax.bar([x + 0.2 for x in xs], after, width=0.4, label="after")
        ax.set_xticks(list(xs), names)
        ax.set_xlabel("stage")
        ax.set_ylabel(axis_label("oracle_reward"))
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    else:
        empty_panel(ax, NO_ORACLE)
    fig.tight_layout()
    return fig


# -- sweeps ---------------------------------------------------------------------------------------------------------
def slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)


def _numeric(values: list[str]) -> bool:
    parsed = [parse_value(v) for v in values]
    return all(isinstance(p, int | float) and not isinstance(p, bool) for p in parsed)


def _save(fig, out: Path) -> bool:
    if fig is None:
        return False
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return True


def plot_metric(groups: list[Group], params: list[str], metric: str, note: str, out: Path) -> bool:
    """Save :func:`metric_figure` to ``out``; False (nothing written) when no run recorded the metric."""
    return _save(metric_figure(groups, params, metric, note), out)


def metric_figure(groups: list[Group], params: list[str], metric: str, note: str):
    """``metric`` against each swept parameter (a panel each), one series per setting of the other parameters,
    mean with error bars of one std over seeds; None when no run recorded the metric."""
    groups = [g for g in groups if g.summary(metric) is not None]
    if not groups:
        return None
    plt = _pyplot()
    panels = params or ["run"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, param in zip(axes[0], panels, strict=True):
        labels = {id(g): g.params.get(param, "") if param != "run" else g.runs[0].name for g in groups}
        others = [p for p in params if p != param]
        numeric = param != "run" and _numeric(list(labels.values()))
        categories = list(dict.fromkeys(labels.values()))
        series: dict[str, list[Group]] = {}
        for g in groups:
            series.setdefault(", ".join(f"{p}={g.params.get(p, '')}" for p in others), []).append(g)
        for name, members in series.items():
            pts = []
            for g in members:
                x = parse_value(labels[id(g)]) if numeric else categories.index(labels[id(g)])
                s = g.summary(metric)
                pts.append((x, s.mean, 0.0 if math.isnan(s.std) else s.std))
            pts.sort()
            xs, ys, err = zip(*pts, strict=True)
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name or None)
        if numeric:
            xs = [float(parse_value(v)) for v in categories]
            if min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 4 else 0)
        ax.set_xlabel(param + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel(axis_label(metric))
        ax.set_title(f"{metric} vs {param}\n{note}", fontsize=10)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(runs: list[Run], setting, out: Path) -> bool:
    """Save :func:`curves_figure` to ``out``; False (nothing written) when no run has a finished stage."""
    return _save(curves_figure(runs, setting), out)


def curves_figure(runs: list[Run], setting):
    """Every run's training curve in one figure, a panel per stage (pipeline step), a line per run: one colour per
    setting (``setting(run)``), one line style per seed."""
    per_stage: dict[str, list[tuple[str, dict, list[dict]]]] = {}
    settings = list(dict.fromkeys(setting(r) for r in runs))
    seen: dict[str, int] = {}
    for run in runs:
        name = setting(run)
        style = {"color": f"C{settings.index(name) % 10}", "linestyle": STYLES[seen.get(name, 0) % len(STYLES)]}
        seen[name] = seen.get(name, 0) + 1
        label = " ".join(x for x in (name, f"seed={run.overrides['seed']}" if "seed" in run.overrides else "") if x)
        for d in stage_dirs(run.path) if run.path is not None else []:
            per_stage.setdefault(d.name, []).append((label or run.name, style, history(d)))
    if not per_stage:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(per_stage), figsize=(5.2 * len(per_stage), 3.8), squeeze=False)
    for ax, (stage, lines) in zip(axes[0], per_stage.items(), strict=True):
        key = next((k for k in CURVES if any(curve(rows, k) for _, _, rows in lines)), None)
        ax.set_title(f"{stage}: training {key or 'curve'} by step, one line per run", fontsize=10)
        if key is None:
            empty_panel(ax, NO_CURVE)
            continue
        for name, style, rows in lines:
            if points := curve(rows, key):
                draw_curve(ax, points, label=name, **style)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(axis_label(key))
        if len(lines) <= 12:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_together(groups: list[Group], params: list[str], title: str, metrics: list[str], note: str, out: Path):
    """Save :func:`together_figure` to ``out``; False when no run recorded any of the metrics."""
    return _save(together_figure(groups, params, title, metrics, note), out)


def together_figure(groups: list[Group], params: list[str], title: str, metrics: list[str], note: str):
    """Several metrics of one kind (e.g. each step's held-out accuracy) against each swept parameter in one panel,
    a series per metric (and per setting of the other parameters), mean with error bars of one std over seeds."""
    metrics = [m for m in metrics if any(g.summary(m) is not None for g in groups)]
    if not metrics or not params:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(params), figsize=(6.0 * len(params), 4.2), squeeze=False)
    for ax, param in zip(axes[0], params, strict=True):
        others = [p for p in params if p != param]
        numeric = _numeric([g.params.get(param, "") for g in groups])
        categories = list(dict.fromkeys(g.params.get(param, "") for g in groups))
        for metric in metrics:
            series: dict[str, list[tuple]] = {}
            for g in groups:
                s = g.summary(metric)
                if s is None:
                    continue
                x = parse_value(g.params.get(param, "")) if numeric else categories.index(g.params.get(param, ""))
                rest = ", ".join(f"{p}={g.params.get(p, '')}" for p in others)
                series.setdefault(rest, []).append((x, s.mean, 0.0 if math.isnan(s.std) else s.std))
            for rest, pts in series.items():
                xs, ys, err = zip(*sorted(pts), strict=True)
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{metric} {rest}".strip())
        if not numeric:
            ax.set_xticks(range(len(categories)), categories)
        ax.set_xlabel(param)
        ax.set_ylabel(f"{title} {axis_label(metrics[0])[len(metrics[0]) :].strip()}".strip())
        ax.set_title(f"{title} vs {param}\n{note}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_scatter(groups: list[Group], params: list[str], x: str, y: str, note: str, out: Path) -> bool:
    """Save :func:`scatter_figure` to ``out``; False when no run recorded both metrics."""
    return _save(scatter_figure(groups, params, x, y, note), out)


def scatter_figure(groups: list[Group], params: list[str], x: str, y: str, note: str):
    """``y`` against ``x``, one point per setting (mean over seeds, error bars of one std both ways), labelled with
    the setting's swept values and joined in order of ``x``: e.g. DPO's reward/KL frontier over beta."""
    pts = []
    for g in groups:
        sx, sy = g.summary(x), g.summary(y)
        if sx is not None and sy is not None:
            label = ", ".join(f"{p}={g.params.get(p, '')}" for p in params)
            err = [0.0 if math.isnan(s.std) else s.std for s in (sx, sy)]
            pts.append((sx.mean, sy.mean, *err, label))
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    pts.sort()
    xs, ys, ex, ey, labels = zip(*pts, strict=True)
    ax.errorbar(xs, ys, xerr=ex, yerr=ey, marker="o", capsize=3, linestyle="-", alpha=0.8)
    for px, py, label in zip(xs, ys, labels, strict=True):
        ax.annotate(label, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(f"{y} against {x}, one point per setting\n{note}", fontsize=10)
    fig.tight_layout()
    return fig

"""The report on many runs (a Hydra sweep dir or any dir of run dirs): report.csv, report.md and the plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alignment.atomic import write_atomic
from alignment.errors import AlignmentError
from alignment.report.plots import plot_curves, plot_metric, plot_scatter, plot_together, slug
from alignment.report.runs import Run, expected_runs, find_run_dirs, load_run, sweep_settings
from alignment.report.stats import (
    SEED,
    choose_objective,
    expand_patterns,
    group_runs,
    shown_metrics,
    sort_groups,
    varying_params,
)
from alignment.report.tables import csv_text, fixed_overrides, group_rows, markdown_table, problem_sections


@dataclass
class SweepReport:
    markdown: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: str  # what the terminal prints under the table: counts, objective, failed and missing runs, files


def collect_runs(root: Path) -> tuple[list[Run], list[str]]:
    """Every run dir under ``root`` (depth <= 2), then the runs a sweep expected but that have no dir, with notes on
    how those were counted."""
    runs = [load_run(d, root) for d in find_run_dirs(root)]
    sweep_dirs = [d for d in [root, *root.iterdir()] if d.is_dir() and (d / "multirun.yaml").exists()]
    notes = []
    for sweep_dir in sweep_dirs:
        found = [r for r in runs if r.path is not None and r.path.is_relative_to(sweep_dir)]
        missing, note = expected_runs(sweep_dir, found)
        where = "" if sweep_dir == root else f"{sweep_dir.relative_to(root).as_posix()}: "
        for run in missing:
            run.name = where.rstrip(": ")
        runs += missing
        notes.append(where + note)
    return runs, notes


def sweep_report(root: Path) -> SweepReport:
    """Write ``report.csv``, ``report.md`` and ``report_*.png`` into ``root`` and return the Markdown and table."""
    runs, notes = collect_runs(root)
    if not runs:
        raise AlignmentError(
            f"no finished stage (metrics.json) or run dir under {root} (searched 2 levels down); pass a run dir "
            "(output_dir), a sweep dir (with multirun.yaml) or a dir holding run dirs"
        )
    settings = sweep_settings(root, runs)
    objective, direction, why = choose_objective(settings, runs)
    extra = expand_patterns([str(p) for p in settings.get("report_metrics") or []], runs)
    metrics = shown_metrics(objective, extra, runs)
    params = varying_params(runs)
    groups = sort_groups(group_runs(runs), objective, direction)
    header, rows = group_rows(groups, params, metrics)
    if objective:
        header[header.index(objective)] = f"{objective} ({direction})"

    write_atomic(root / "report.csv", csv_text(runs))
    sizes = sorted({len(g.runs) for g in groups})
    seeds = f"n={sizes[0]}" if len(sizes) == 1 else f"n={sizes[0]}-{sizes[-1]}"
    images = []
    grouped = {m for patterns in (settings.get("plots") or {}).values() for m in expand_patterns(list(patterns), runs)}
    for metric in dict.fromkeys([m for m in [objective, *extra] if m and (m == objective or m not in grouped)]):
        goal = f", {direction}" if metric == objective else ""
        note = f"mean ± 1 std over seeds ({seeds} per point{goal})"
        if plot_metric(groups, params, metric, note, root / f"report_{slug(metric)}.png"):
            images.append((f"{metric} against each swept parameter", f"report_{slug(metric)}.png"))

    for title, patterns in (settings.get("plots") or {}).items():
        together = expand_patterns([str(p) for p in patterns], runs)
        name = f"report_{slug(str(title))}.png"
        if plot_together(
            groups, params, str(title), together, f"mean ± 1 std over seeds ({seeds} per point)", root / name
        ):
            images.append((f"{title}: {', '.join(together)} against each swept parameter", name))
    for pair in settings.get("scatter") or []:
        x, _, y = str(pair).partition(":")
        name = f"report_{slug(y)}_vs_{slug(x)}.png"
        if y and plot_scatter(groups, params, x, y, f"mean ± 1 std over seeds ({seeds} per point)", root / name):
            images.append((f"{y} against {x}", name))

    def setting(run: Run) -> str:
        """The swept values but seed, or the run's path when it has none (so unrelated runs get their own colour)."""
        text = " ".join(f"{k}={run.overrides[k]}" for k in params if k in run.overrides)
        return text if text or SEED in run.overrides else run.name

    if plot_curves([r for r in runs if r.status != "missing"], setting, root / "report_curves.png"):
        images.append(("training curves, one line per run", "report_curves.png"))

    kind = "Sweep" if (root / "multirun.yaml").exists() else "Runs"
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in ("done", "failed", "incomplete", "missing"))
    summary = [f"{len(runs)} runs: {counts}."]
    summary.append(f"Objective: `{objective}`, {direction} ({why})." if objective else f"Objective: none ({why}).")
    if fixed := fixed_overrides(runs, params):
        summary.append(f"Same in every run: {fixed}.")
    lines = [f"# {kind} report: {root}", "", *summary]
    lines += [
        "",
        "Runs that differ only in `seed` are one row, best first: mean ± std [95% CI, Student t] (n = runs); an "
        "accuracy or win rate also says how many held-out rows or scored replies each run measured it on. Every "
        "run's own numbers are in report.csv.",
        "",
        markdown_table(header, rows) if rows else "No run finished.",
    ]
    problems = problem_sections(runs, "; ".join(notes), [*params, SEED])
    if problems:
        lines += ["", problems]
    if images:
        lines += ["", "## Plots", "", *(f"![{alt}]({path})" for alt, path in images)]
    markdown = "\n".join(lines) + "\n"
    write_atomic(root / "report.md", markdown)
    files = ", ".join(["report.md", "report.csv", *(path for _, path in images)])
    terminal = "\n\n".join(["\n".join(summary), *([problems] if problems else []), f"Written in {root}: {files}"])
    return SweepReport(markdown, f"{kind} report: {root}", header, rows, terminal)

"""Tables: a run's metrics before/after per stage; a sweep's CSV (one row per run) and Markdown (one row per setting,
seeds aggregated, failed and missing runs listed); the same table in the terminal through rich."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from alignment.report.runs import Run, read_metrics
from alignment.report.stats import SEED, Group, Summary, count_key, sample_count

# (metric, label) pairs shown when present; "_before" variants are shown as "before -> after".
KEY_METRICS = [
    ("eval_loss", "held-out loss"),
    ("eval_accuracy", "RM accuracy"),
    ("eval_rewards/accuracies", "reward accuracy"),
    ("eval_rewards/margins", "reward margin"),
    ("win_rate", "win rate"),
    ("oracle_reward", "oracle reward"),
    ("kl", "KL to reference"),
    ("train_runtime", "train seconds"),
    ("trainable_params", "trainable params"),
]


def fmt(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.4g}"


def _with_count(text: str, metric: str, metrics: dict[str, float]) -> str:
    n = sample_count(metric, metrics)
    return f"{text} (n={n})" if n is not None else text


def metrics_table(dirs: list[Path]) -> str:
    """One run: a row per stage and key metric (and its per-task breakdown), before and after the stage."""
    rows = ["| stage | metric | before | after |", "|---|---|---|---|"]
    for d in dirs:
        m = read_metrics(d)
        for key, label in KEY_METRICS:
            if key not in m:
                continue
            tasks = sorted(k[len(key) + 1 :] for k in m if k.startswith(f"{key}/") and not k.endswith("_before"))
            for name, text in [(key, label)] + [(f"{key}/{t}", f"{label}: {t}") for t in tasks]:
                before = m.get(f"{name}_before")
                after = _with_count(fmt(m[name]), name, m)
                rows.append(f"| {d.name} | {text} | {fmt(before) if before is not None else ''} | {after} |")
    return "\n".join(rows)


# -- sweeps ---------------------------------------------------------------------------------------------------------
def override_keys(runs: list[Run]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    return keys


def csv_text(runs: list[Run]) -> str:
    """One row per run: run, status, the overrides as typed, every final metric (sorted), the error."""
    metric_keys = sorted({k for r in runs for k in r.metrics})
    columns = ["run", "status", *override_keys(runs), *metric_keys, "error"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for run in runs:
        writer.writerow({"run": run.name, "status": run.status, **run.overrides, **run.metrics, "error": run.error})
    return out.getvalue()


def cell(summary: Summary | None, counts: list[int], unit: str = "rows") -> str:
    """``mean ± std [95% CI] (n=seeds)``; for a rate also how many rows or replies each run measured it on."""
    if summary is None:
        return "–"
    text = fmt(summary.mean)
    if summary.n > 1:
        text += f" ± {fmt(summary.std)} [{fmt(summary.low)}, {fmt(summary.high)}]"
    n = f"n={summary.n}"
    if counts:
        lo, hi = min(counts), max(counts)
        n += f"; n={lo} {unit} each" if lo == hi else f"; n={lo}-{hi} {unit}"
    return f"{text} ({n})"


def _counts(group: Group, metric: str) -> list[int]:
    return [c for r in group.runs if metric in r.metrics and (c := sample_count(metric, r.metrics)) is not None]


def _run_label(run: Run) -> str:
    """A Hydra job by its seed (its other overrides are the row's columns; its dir is in report.csv), any other run by
    its path."""
    if SEED in run.overrides:
        return f"{SEED}={run.overrides[SEED]}"
    return "" if run.has_overrides else run.name


def group_rows(groups: list[Group], params: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sweep table (shared by the Markdown and the terminal)."""
    header = ["#", *params, "seeds / run", *metrics]
    rows = []
    for i, group in enumerate(groups, 1):
        names = ", ".join(_run_label(r) for r in group.runs)
        cells = [cell(group.summary(m), _counts(group, m), count_unit(m)) for m in metrics]
        rows.append([str(i), *(group.params.get(p, "") for p in params), names, *cells])
    return header, rows


def count_unit(metric: str) -> str:
    """What a rate's sample count counts: held-out rows (accuracies) or scored replies (oracle reward, win rate)."""
    key = count_key(metric) or ""
    return "rows" if "eval_rows" in key else "replies"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def problem_sections(runs: list[Run], missing_note: str, keys: list[str] | None = None) -> str:
    """Failed, incomplete and missing runs, each listed: a report never drops a run silently. A run is named by its
    overrides among ``keys`` (those that vary between runs), or all of them when it has none of those."""

    def _overrides_text(run: Run) -> str:
        shown = {k: v for k, v in run.overrides.items() if keys is None or k in keys} or run.overrides
        return " ".join(f"{k}={v}" for k, v in shown.items()) or "(no overrides recorded)"

    parts = []
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        rows = [[r.name, _overrides_text(r), r.error or "(no error recorded)"] for r in failed]
        parts.append(f"## Failed runs ({len(failed)})\n\n" + markdown_table(["run", "overrides", "error"], rows))
    incomplete = [r for r in runs if r.status == "incomplete"]
    if incomplete:
        rows = [[r.name, _overrides_text(r)] for r in incomplete]
        parts.append(
            f"## Incomplete runs ({len(incomplete)})\n\nStarted, but no finished metrics.json "
            "(interrupted, or still running):\n\n" + markdown_table(["run", "overrides"], rows)
        )
    missing = [r for r in runs if r.status == "missing"]
    if missing or missing_note:
        text = f"## Missing runs ({len(missing)})\n\n{missing_note}." if missing_note else "## Missing runs"
        listed = [[_overrides_text(r)] for r in missing if r.overrides]
        if listed:
            text += "\n\nNo run dir for:\n\n" + markdown_table(["overrides"], listed)
        parts.append(text)
    return "\n\n".join(parts)


def fixed_overrides(runs: list[Run], varying: list[str]) -> str:
    present = [r for r in runs if r.status != "missing" and r.has_overrides]
    keys = [k for k in override_keys(present) if k not in varying and k != SEED]
    same = [f"{k}={present[0].overrides[k]}" for k in keys if all(k in r.overrides for r in present)]
    return ", ".join(same)


def print_table(title: str, header: list[str], rows: list[list[str]], markdown: str, notes: str = "") -> None:
    """The table through rich in a terminal, then ``notes`` (counts, failed and missing runs); the Markdown as plain
    text otherwise (pipes, files, CI logs)."""
    import sys

    if not sys.stdout.isatty():
        print(markdown)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for name in header:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    if notes:
        console.print(notes, markup=False, highlight=False)

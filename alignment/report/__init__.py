"""``python -m alignment.report DIR``: one page on a run, or on a sweep or any dir of runs.

On a run dir (one ``output_dir``: a stage or a pipeline) it prints the key metrics per stage and writes ``report.md``
and ``report.png`` (the training curve of each stage and the oracle reward before and after). On a sweep dir (Hydra
multirun, with ``multirun.yaml``) or any dir holding run dirs it writes ``report.csv`` (one row per run),
``report.md`` (one row per setting with seeds aggregated, failed and missing runs listed) and ``report_*.png``.

Modules: ``runs`` finds runs and reads them, ``stats`` groups seeds and computes their statistics, ``tables`` and
``plots`` render, ``sweep`` puts the many-run report together.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alignment.atomic import write_atomic
from alignment.errors import AlignmentError
from alignment.report.plots import plot_run
from alignment.report.runs import is_run_dir, run_metrics, run_status, stage_dirs
from alignment.report.sweep import SweepReport, sweep_report
from alignment.report.tables import metrics_table, print_table

__all__ = ["main", "report", "run_metrics"]


def _single_run(run_dir: Path) -> str:
    dirs = stage_dirs(run_dir)
    if not dirs:
        failed = run_dir / "failed.json"
        why = (
            f"; the job failed: {json.loads(failed.read_text(encoding='utf-8')).get('error')}"
            if failed.exists()
            else ""
        )
        raise AlignmentError(f"no finished stage (metrics.json) under {run_dir}{why}")
    status, error = run_status(run_dir)
    warning = {
        "failed": f"**This run failed** ({error}); only the stages that finished are shown.\n\n",
        "incomplete": "**This run has not finished** (a stage or pipeline step is interrupted or still running); only "
        "the stages that finished are shown.\n\n",
    }.get(status, "")
    text = f"# Run report: {run_dir}\n\n{warning}{metrics_table(dirs)}\n\n![curves](report.png)\n"
    plot_run(dirs, run_dir / "report.png")
    write_atomic(run_dir / "report.md", text)
    return text


def _build(path: str | Path) -> str | SweepReport:
    path = Path(path)
    if not path.is_dir():
        raise AlignmentError(f"{path} is not a directory; pass a run dir (output_dir), a stage dir or a sweep dir")
    if not (path / "multirun.yaml").exists() and is_run_dir(path):
        return _single_run(path)
    return sweep_report(path)


def report(run_dir: str | Path) -> str:
    """Write the report files for a run, sweep or parent dir and return the Markdown."""
    built = _build(run_dir)
    return built if isinstance(built, str) else built.markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alignment.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run dir (output_dir), one stage's dir, a sweep dir or a dir of runs")
    args = parser.parse_args(argv)
    try:
        built = _build(args.run_dir)
    except AlignmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if isinstance(built, str):
        print(built)
    else:
        print_table(built.title, built.header, built.rows, built.markdown, built.notes)
    return 0

"""Finding runs on disk: a run's stage dirs and metrics, its status and overrides, and the runs a sweep expected.

A stage dir holds ``metrics.json`` (written last: its presence means the stage finished). A run dir (one
``output_dir``) holds one stage dir per stage, or a pipeline (``pipeline.json`` and a stage dir per step), and, when
it was a Hydra job, ``.hydra/overrides.yaml``; a job that failed leaves ``failed.json``. A sweep dir holds Hydra's
``multirun.yaml`` and one run dir per job.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STATUSES = ("done", "failed", "incomplete", "missing")


@dataclass
class Run:
    """One run of a sweep or a parent dir; ``overrides`` maps each override key to its value as typed."""

    name: str
    path: Path | None
    status: str
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    has_overrides: bool = False

    def value(self, key: str) -> Any:
        """The override's value parsed as Hydra would (a number for numbers), or None when not set."""
        return parse_value(self.overrides[key]) if key in self.overrides else None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _pipeline_steps(run_dir: Path) -> list[dict] | None:
    manifest = run_dir / "pipeline.json"
    return _read_json(manifest)["steps"] if manifest.exists() else None


def _step_dir(run_dir: Path, step: dict) -> Path:
    """A step's stage dir: the one inside the run dir when there is one (the run may have been moved), else its path."""
    output = Path(step.get("output") or step["name"])
    inside = run_dir / output.name
    return inside if inside.is_dir() or not output.is_dir() else output


def stage_dirs(run_dir: Path) -> list[Path]:
    """Stage dirs with a finished metrics.json: in pipeline order when a pipeline.json says it, else by finish time."""
    steps = _pipeline_steps(run_dir)
    if steps is not None:
        dirs = [_step_dir(run_dir, s) for s in steps]
    elif (run_dir / "metrics.json").exists():
        dirs = [run_dir]
    else:
        dirs = sorted((p.parent for p in run_dir.glob("*/metrics.json")), key=lambda d: _mtime(d / "metrics.json"))
    return [d for d in dirs if (d / "metrics.json").exists()]


def _mtime(path: Path) -> tuple[float, str]:
    return path.stat().st_mtime, str(path)


def read_metrics(stage_dir: Path) -> dict[str, float]:
    """The numbers of a stage's ``metrics.json`` (anything else it may hold is skipped)."""
    raw = _read_json(stage_dir / "metrics.json")
    return {k: v for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def run_metrics(run_dir: str | Path) -> dict[str, float]:
    """A run's final metrics, as one flat dict.

    A single-stage run: the stage's metrics as they are, and again as ``<stage>/<key>``. A pipeline (or several
    stages in one run dir): each step's metrics as ``<step>/<key>``, plus the last step's unprefixed, but only when
    that last step finished, so an unfinished pipeline never passes off an earlier step's number as its result.
    """
    run_dir = Path(run_dir)
    steps = _pipeline_steps(run_dir)
    dirs = stage_dirs(run_dir)
    out: dict[str, float] = {}
    for d in dirs:
        out |= {f"{d.name}/{k}": v for k, v in read_metrics(d).items()}
    last_finished = dirs and (steps is None or _step_dir(run_dir, steps[-1]) == dirs[-1])
    if last_finished:
        out = read_metrics(dirs[-1]) | out
    return dict(sorted(out.items()))


def _is_stage_dir(d: Path) -> bool:
    return (d / "metrics.json").exists() or (d / "run_state.json").exists()


def is_run_dir(d: Path) -> bool:
    """A run dir (or a stage dir given directly): a pipeline, a Hydra job, a failed job, or stage dirs inside."""
    if any((d / marker).exists() for marker in ("pipeline.json", "failed.json", ".hydra", "metrics.json")):
        return True
    return any(_is_stage_dir(c) for c in _subdirs(d))


def _subdirs(d: Path) -> list[Path]:
    return sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))


def find_run_dirs(root: Path, depth: int = 2) -> list[Path]:
    """Run dirs under ``root``, at most ``depth`` levels down; a run dir's own subdirs are not searched."""
    found = []
    for child in _subdirs(root):
        if is_run_dir(child):
            found.append(child)
        elif depth > 1:
            found.extend(find_run_dirs(child, depth - 1))
    return found


def run_status(run_dir: Path) -> tuple[str, str]:
    """(status, error) of a run dir: done, failed (with the error) or incomplete."""
    failed = run_dir / "failed.json"
    if failed.exists():
        info = _read_json(failed)
        exc = info.get("exception")
        return "failed", f"{exc}: {info.get('error', '')}" if exc else str(info.get("error", ""))
    steps = _pipeline_steps(run_dir)
    if steps is not None:
        bad = [s["name"] for s in steps if s.get("status") == "failed"]
        if bad:
            return "failed", f"pipeline step {bad[0]} failed (no failed.json with the error)"
        finished = all(s.get("status") == "done" and (_step_dir(run_dir, s) / "metrics.json").exists() for s in steps)
        return ("done", "") if finished and steps else ("incomplete", "")
    return ("done", "") if stage_dirs(run_dir) else ("incomplete", "")


def load_run(run_dir: Path, root: Path) -> Run:
    status, error = run_status(run_dir)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    typed = (_read_yaml(overrides_file) or []) if overrides_file.exists() else []
    return Run(
        name=run_dir.relative_to(root).as_posix() if run_dir != root else ".",
        path=run_dir,
        status=status,
        overrides=parse_overrides(typed),
        metrics=run_metrics(run_dir) if status != "missing" else {},
        error=error,
        has_overrides=overrides_file.exists(),
    )


# -- overrides ------------------------------------------------------------------------------------------------------
@functools.cache
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_overrides(typed: list[str]) -> dict[str, str]:
    """``["trainer.learning_rate=0.001", "+x=1"]`` -> ``{"trainer.learning_rate": "0.001", "x": "1"}`` (as typed)."""
    out = {}
    for text in typed:
        key, _, value = str(text).partition("=")
        out[key.lstrip("+~")] = value
    return out


def parse_value(text: str) -> Any:
    """An override value as Hydra parses it: ``1e-3`` -> 0.001, ``[a,b]`` -> ["a", "b"]; the text if unparsable."""
    try:
        return _parser().parse_override(f"k={text}").value()
    except Exception:  # noqa: BLE001 -- any value Hydra cannot parse is shown as typed
        return text


def same_value(a: str, b: str) -> bool:
    return a == b or repr(parse_value(a)) == repr(parse_value(b))


def sweep_config(sweep_dir: Path) -> dict:
    """``multirun.yaml`` as a plain dict (not resolved: its interpolations need Hydra's runtime)."""
    return _read_yaml(sweep_dir / "multirun.yaml") or {}


def expected_runs(sweep_dir: Path, found: list[Run]) -> tuple[list[Run], str]:
    """The runs ``multirun.yaml`` expected that are not among ``found``, as ``missing`` runs, and a note on how they
    were counted (or why they could not be)."""
    hydra = sweep_config(sweep_dir).get("hydra") or {}
    task = list((hydra.get("overrides") or {}).get("task") or [])
    sweeper = hydra.get("sweeper") or {}
    target = str(sweeper.get("_target_") or "")
    if "optuna" in target.lower():
        n_trials = int(sweeper.get("n_trials") or 0)
        gap = max(n_trials - len(found), 0)
        missing = [Run(name="", path=None, status="missing", error="no run dir") for _ in range(gap)]
        return missing, f"Optuna sweep of n_trials={n_trials}: {len(found)} run dirs found, {gap} missing"
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    # The sweeper's own ``params`` (e.g. an experiment preset's) sweep too; the command line wins for a key in both.
    typed = {str(o).split("=", 1)[0].lstrip("+~") for o in task}
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items() if str(k) not in typed]
    task = params + task
    try:
        batches = BasicSweeper.split_arguments(_parser().parse_overrides(task), None)[0]
    except Exception as err:  # noqa: BLE001 -- a sweep we cannot expand is reported, not fatal
        return [], f"could not expand multirun.yaml's overrides ({type(err).__name__}: {err}); missing runs unknown"
    missing = []
    for combo in batches:
        want = parse_overrides(combo)
        if not any(all(k in r.overrides and same_value(r.overrides[k], v) for k, v in want.items()) for r in found):
            missing.append(Run(name="", path=None, status="missing", overrides=want, has_overrides=True))
    return missing, f"{len(batches)} jobs expected from multirun.yaml ({', '.join(task) or 'no overrides'})"


def sweep_settings(root: Path, runs: list[Run]) -> dict:
    """The ``sweep:`` section (metric, direction, report_metrics): from multirun.yaml, else the first run's config."""
    sources = [root / "multirun.yaml"] + [r.path / ".hydra" / "config.yaml" for r in runs if r.path is not None]
    for path in sources:
        if path.exists():
            section = (_read_yaml(path) or {}).get("sweep")
            if isinstance(section, dict):
                return section
    return {}

"""A run as a job: where it writes by default, what it says first, what it returns to a sweeper, how it fails.

- The default ``output_dir`` is derived from the command (``outputs/<stage or pipeline>[-<hash of the overrides>]``),
  so running the same command again finds and resumes the same run; a sweep's jobs get one subdir each, named by
  their overrides, so the same sweep command skips finished jobs and resumes unfinished ones.
- Every run first prints where its outputs go, the model and data it reads, and how to resume it.
- In a sweep (``-m``) a failed job leaves ``failed.json`` (the error, its overrides) and the sweep goes on; each job
  returns ``sweep.metric`` from its metrics, which Hydra's Optuna sweeper optimises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import sys
import time
import traceback
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from alignment.atomic import write_atomic
from alignment.errors import AlignmentError

log = logging.getLogger("alignment")

FAILED = "failed.json"
# Overrides that do not change what a run computes, or only name it or publish it: left out of its dir name.
_NOT_IN_NAME = ("output_dir", "resume", "debug", "hydra", "hub")
_MAX_NAME = 120


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def default_output_dir() -> str:
    """``outputs/<pipeline, stage or experiment>``, plus a short hash of the other overrides when there are any.

    Read from the command line as typed (``sys.argv``): one value for a sweep and all its jobs, which Hydra hands
    the sweep's resolved value through the resolver cache.
    """
    overrides = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    choices = {_key(o): o.split("=", 1)[1] for o in overrides if _key(o) in ("pipeline", "stage", "experiment")}
    name = choices.get("pipeline") or choices.get("stage") or choices.get("experiment") or "sft"
    kept = sorted(o for o in overrides if not _key(o).startswith(_NOT_IN_NAME) and _key(o) not in choices)
    if "experiment" in choices and name != choices["experiment"]:
        kept.append(f"experiment={choices['experiment']}")
    name = re.sub(r"[^\w.-]+", "_", name)
    if not kept:
        return f"outputs/{name}"
    return f"outputs/{name}-{hashlib.sha256(chr(10).join(sorted(kept)).encode('utf-8')).hexdigest()[:8]}"


def job_dir_name(override_dirname: str, num: int, *, _root_: DictConfig) -> str:
    """A sweep job's subdir: its values of the swept keys as ``k=v,k=v`` (path-safe, hashed when long); all its
    overrides where the swept keys are unknown; ``job<num>`` when there are none."""
    swept = _swept_keys(_root_)
    if swept:
        job = OmegaConf.select(_root_, "hydra.overrides.task", default=None) or []
        override_dirname = ",".join(sorted(o.lstrip("+~") for o in job if _key(o) in swept))
    name = re.sub(r"[/\\\s]+", "_", str(override_dirname or "")).strip("._")
    if not name:
        return f"job{num}"
    if len(name) > _MAX_NAME:
        name = f"{name[: _MAX_NAME - 9]}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"
    return name


def _swept_keys(root: DictConfig) -> set[str]:
    """Keys the sweep varies: the sweeper's ``params`` and the sweep overrides of the command (``multirun.yaml``)."""
    keys = {str(k) for k in (OmegaConf.select(root, "hydra.sweeper.params", default=None) or {})}
    sweep_dir = OmegaConf.select(root, "hydra.sweep.dir", default=None)
    saved = Path(str(sweep_dir)) / "multirun.yaml" if sweep_dir else None
    if saved and saved.is_file():
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            task = OmegaConf.load(saved).hydra.overrides.task
            parsed = OverridesParser.create().parse_overrides(list(task))
        except Exception:  # an unreadable record: name the job by all its overrides
            return keys
        keys |= {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
    return keys


def register_resolvers() -> None:
    # Cached: Hydra copies the resolver cache from a sweep to its jobs, so every job resolves the sweep's dir.
    OmegaConf.register_new_resolver("default_output_dir", default_output_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("job_dir_name", job_dir_name, replace=True)


def start_job(cfg: DictConfig, overrides: list[str], multirun: bool) -> None:
    """Say where the run writes and how to resume it; in a sweep, clear an earlier attempt's failure record and
    group the job's tracking runs by the sweep."""
    from alignment.distributed import is_launched

    run_dir = Path(cfg.output_dir)
    if multirun:
        (run_dir / FAILED).unlink(missing_ok=True)
        os.environ["WANDB_RUN_GROUP"] = run_dir.parent.name  # wandb reads it: one group per sweep
    if is_launched():
        return  # the launching process said it already
    if str(cfg.get("stage")) == "chat" and not cfg.get("pipeline"):
        return  # a chat keeps nothing to resume, and its stdout is the replies
    what = f"pipeline {cfg.pipeline.name}" if cfg.get("pipeline") else f"stage {cfg.stage}"
    model = cfg.model.path or "the shipped tiny base model (data/tiny-base)"
    data = cfg.data.path or "the embedded data (data/)"
    command = f"python -m alignment {shlex.join(sys.argv[1:])}".strip()
    again = "the same sweep command" if multirun else f"`{command}`"
    print(f"[alignment] {what}: outputs in {run_dir}", flush=True)
    print(f"[alignment]   model: {model}; data: {data}", flush=True)
    print(f"[alignment]   stopped or failed? {again} again resumes it (resume=fresh starts over)", flush=True)


def record_failure(cfg: DictConfig, overrides: list[str], err: BaseException) -> None:
    """Write the job's ``failed.json`` and say in one line that the sweep goes on."""
    from alignment.distributed import is_main_process

    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if is_main_process():
        record = {
            "error": message,
            "exception": type(err).__name__,
            "overrides": overrides,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if not isinstance(err, AlignmentError):
            record["traceback"] = traceback.format_exc()
        run_dir = Path(cfg.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / FAILED, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"[sweep] job {cfg.output_dir} failed: {message}; recorded in {FAILED}, the sweep goes on", flush=True)


def job_objective(cfg: DictConfig) -> float | None:
    """The run's ``sweep.metric`` (None when unset or not recorded), returned to Hydra's sweeper."""
    metric = cfg.get("sweep", {}).get("metric")
    if not metric:
        return None
    from alignment.report import run_metrics

    metrics = run_metrics(Path(cfg.output_dir))
    value = metrics.get(str(metric))
    if value is None:
        known = ", ".join(sorted(k for k in metrics if "/" not in k)[:12])
        log.warning("sweep.metric '%s' is not among this run's metrics (%s); the job returns nothing", metric, known)
        print(f"[sweep] sweep.metric '{metric}' is not in {cfg.output_dir}'s metrics; known: {known}", flush=True)
        return None
    print(f"[sweep] {cfg.output_dir}: {metric} = {value:.6g}", flush=True)
    return float(value)


class SweepRecord(Callback):
    """Hydra callback: record a sweep's command in ``<sweep dir>/multirun.yaml`` before any job runs (Optuna's
    sweeper does not; job dir names and the report read it), and end with a one-line summary."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / "multirun.yaml")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()] if sweep_dir.is_dir() else []
        failed = [p.name for p in jobs if (p / FAILED).exists()]
        tail = f"; failed: {', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}" if failed else ""
        print(
            f"[sweep] {len(jobs)} jobs in {sweep_dir}, {len(failed)} failed{tail}. "
            f"Report: python -m alignment.report {sweep_dir}",
            flush=True,
        )

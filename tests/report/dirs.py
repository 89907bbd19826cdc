"""Synthetic run, pipeline and sweep dirs laid out as the CLI and Hydra write them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def stage(run: Path, name: str, metrics: dict, losses: list[float] | None = None) -> dict:
    """A finished stage dir (metrics.json, log_history.jsonl, config.yaml, run_state.json); its pipeline step."""
    d = run / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"stage: {name}\n", encoding="utf-8")
    (d / "run_state.json").write_text("{}", encoding="utf-8")
    rows = [{"step": i + 1, "loss": v} for i, v in enumerate(losses or [])]
    (d / "log_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (d / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return {"name": name, "stage": name, "status": "done", "output": str(d)}


def pipeline(run: Path, steps: list[dict], name: str = "rlhf") -> None:
    (run / "pipeline.json").write_text(json.dumps({"pipeline": name, "steps": steps}), encoding="utf-8")


def hydra_job(run: Path, overrides: list[str], sweep: dict | None = None) -> Path:
    """A Hydra job's ``.hydra/overrides.yaml`` (as typed) and ``.hydra/config.yaml`` (with its sweep section)."""
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides), encoding="utf-8")
    config = {"seed": 42, "sweep": sweep or {"metric": None, "direction": "minimize", "report_metrics": []}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return run


def failed(run: Path, error: str, exception: str, overrides: list[str]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    info = {"error": error, "exception": exception, "overrides": overrides}
    (run / "failed.json").write_text(json.dumps(info), encoding="utf-8")


def multirun(sweep_dir: Path, task: list[str], sweep: dict | None = None, sweeper: dict | None = None) -> None:
    """Hydra's ``multirun.yaml``: ``hydra.overrides.task`` as typed, the sweeper, the sweep section."""
    sweeper = sweeper or {
        "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "max_batch_size": None,
    }
    config = {
        "hydra": {"sweeper": sweeper, "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": task}},
        "output_dir": str(sweep_dir),
        "sweep": sweep or {"metric": None, "direction": "minimize", "report_metrics": []},
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

"""Where a saved model came from, kept beside it in ``lineage.json``: the base model as the user gave it, the stages
it went through, and the model this stage started from, both as given and as found on this machine.

A later stage that starts from the model reads it to extend the chain (``sft`` then ``dpo``), the model card
(``alignment.model_card``) renders it, and the loader reads it to find a saved adapter's base: the adapter's
``adapter_config.json`` records the base as the user gave it (a Hub id, or a path relative to where they ran), which
another machine can resolve, and ``lineage.json`` adds the absolute path this machine loaded it from.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

LINEAGE = "lineage.json"


def read_lineage(model_dir: str | Path) -> dict[str, Any]:
    """The lineage saved beside a model, or {} for a model saved elsewhere."""
    path = Path(model_dir) / LINEAGE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def stage_lineage(cfg: DictConfig, name: str, start_path: str) -> dict[str, Any]:
    """The lineage of the model a stage saves: its start model's chain (when that model was saved by a stage) plus
    this stage. ``start_path`` is the start model as resolved here (a local dir or a Hub id)."""
    given = str(cfg.model.path) if cfg.model.get("path") else None
    start = str(Path(start_path).resolve()) if Path(start_path).exists() else start_path
    parent = read_lineage(start) if Path(start).is_dir() else {}
    data = str(cfg.data.path) if cfg.data.get("path") else "embedded"
    step = {"name": name, "stage": str(cfg.stage), "data": data, "command": command_line()}
    if parent.get("stages"):
        base, base_path, stages = parent["base_model"], parent["base_model_path"], parent["stages"]
    else:  # a model no stage of ours saved: it is the base
        base, base_path, stages = given, start, []
    return {
        "base_model": base,  # None: the tiny base model built from the embedded data (it has no Hub id)
        "base_model_path": base_path,
        "start_model": given,
        "start_model_path": start,
        "stages": [*stages, step],
    }


def command_line() -> str:
    """The command that ran, secrets masked."""
    from alignment.secrets import scrub_text

    return scrub_text("python -m alignment " + shlex.join(sys.argv[1:]))


def write_lineage(model_dir: Path, lineage: dict[str, Any]) -> None:
    """Write ``lineage.json`` into a model dir being saved; a saved adapter records its base as the user gave it."""
    (model_dir / LINEAGE).write_text(json.dumps(lineage, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    adapter_config = model_dir / "adapter_config.json"
    if adapter_config.exists() and lineage.get("start_model"):
        config = json.loads(adapter_config.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = lineage["start_model"]
        adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def local_adapter_base(adapter_dir: str | Path) -> str | None:
    """The absolute path this machine loaded a saved adapter's base from, if it still exists here."""
    local = read_lineage(adapter_dir).get("start_model_path")
    return local if local and Path(local).exists() else None

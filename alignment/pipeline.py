"""Run the steps of a pipeline in order, hand each the outputs of earlier steps, and keep ``pipeline.json``.

A pipeline is a config in ``conf/pipeline/``: ordered ``steps``, each naming its ``stage``, the earlier steps it
takes ``inputs`` from (``model``, ``ref_model``, ``reward_model``, ``value_model``; ``data``: the generations or
pairs a ``generate``/``label`` step wrote, as its ``data.path``) and any per-step settings
(``trainer: {beta: 0.2}``). Step ``<name>`` writes ``<output_dir>/<name>/``.

A pipeline ends with a ``compare`` step (``stage=compare``: every model of the run side by side, compare.md and
compare.html) unless its config says ``compare: false`` (``pipeline.compare=false`` on the command line).

``pipeline.json`` records each step's status, start and end times, output path and a hash of its stage's config hash
(the one its stage dir records, alignment/stages/stage_dir.py) and of its inputs' hashes. Re-running the same command
skips finished steps whose hash is unchanged and resumes the interrupted one; if a finished step's config changed, it
and every later step run again. Settings that do not change what a stage computes (logging and saving cadence,
tracking; ``HASH_EXCLUDED`` there) never rerun a step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from alignment.atomic import write_atomic
from alignment.config import RewardSourceConfig
from alignment.distributed import barrier, is_main_process
from alignment.errors import AlignmentError
from alignment.paths import DATA_DIR
from alignment.stages.stage_dir import STAGE_BLOCKS, StageDir, finished_metrics

log = logging.getLogger("alignment")

INPUT_KINDS = ("model", "ref_model", "reward_model", "value_model", "data")
# Steps whose output is data, not a model: the file an `inputs: {data: <step>}` step reads as its data.path.
DATA_OUTPUTS = {"generate": "generations.jsonl", "label": "pairs.jsonl"}
COMPARE_STEP = "compare"


def add_compare_step(pipe: DictConfig) -> None:
    """Append the ``compare`` step to ``pipe.steps`` unless ``pipe.compare`` is false or a step already compares."""
    if pipe.get("compare", True) is False or any(str(s.get("stage")) == "compare" for s in pipe.steps.values()):
        return
    if COMPARE_STEP in pipe.steps:
        raise AlignmentError(
            f"pipeline '{pipe.get('name')}' has a step named '{COMPARE_STEP}' that is not stage=compare; rename it, "
            "or set compare: false in the pipeline"
        )
    with open_dict(pipe):
        pipe.steps[COMPARE_STEP] = {"stage": "compare"}


def step_hash(stage_hash: str, input_hashes: dict[str, str]) -> str:
    """A short hash of a step: its stage's config hash (``StageDir.config_hash``) and the hashes of the steps it
    reads from."""
    blob = json.dumps({"stage": stage_hash, "inputs": input_hashes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _step_overrides(task_overrides: list[str]) -> list[str]:
    """The user's command-line overrides that apply to every step (all but pipeline and stage choices)."""
    keep = []
    for item in task_overrides:
        key = item.lstrip("+~").split("=", 1)[0]
        if key in ("pipeline", "stage") or key.startswith("pipeline."):
            continue
        keep.append(item)
    return keep


def compose_step(
    name: str, step: DictConfig, overrides: list[str], run_dir: str, outputs: dict[str, str]
) -> DictConfig:
    """The full config of one step: the stage's defaults, the user's overrides, the step's own settings, inputs."""
    from hydra import compose

    if "stage" not in step:
        raise AlignmentError(f"pipeline step '{name}' has no 'stage'")
    if str(step.stage) in STAGE_BLOCKS:  # a stage that trains nothing takes no trainer.* settings
        overrides = [o for o in overrides if not o.lstrip("+~").startswith("trainer.")]
    cfg = compose(config_name="config", overrides=[f"stage={step.stage}", *overrides])
    settings = {k: v for k, v in OmegaConf.to_container(step, resolve=True).items() if k not in ("stage", "inputs")}
    try:
        cfg = OmegaConf.merge(cfg, settings)
    except Exception as err:  # omegaconf raises several types for unknown keys / wrong types
        key = getattr(err, "full_key", None)
        where = f"pipeline step '{name}': " + (f"{key}: " if key else "")
        raise AlignmentError(f"{where}{err}".splitlines()[0]) from err
    inputs = dict(step.get("inputs") or {})
    with open_dict(cfg):
        cfg.output_dir = run_dir
        cfg.step = name
        for kind, source in inputs.items():
            if kind not in INPUT_KINDS:
                raise AlignmentError(f"pipeline step '{name}': unknown input '{kind}'; use {', '.join(INPUT_KINDS)}")
            if source not in outputs:
                raise AlignmentError(
                    f"pipeline step '{name}' reads {kind} from '{source}', which is not an earlier step"
                )
            path = outputs[source]
            if (kind == "data") != path.endswith(".jsonl"):
                wrote = "data" if path.endswith(".jsonl") else "a model"
                raise AlignmentError(f"pipeline step '{name}' reads {kind} from '{source}', which writes {wrote}")
            if kind == "data":
                if not cfg.data.path and cfg.oracle_eval.path is None:
                    # The run is on the embedded data: keep measuring oracle_reward on its held-out prompts.
                    cfg.oracle_eval.path = str(DATA_DIR / "prompts")
                cfg.data.path = path  # a single file: no test split, so load_train_eval holds out eval_fraction
            elif kind == "model":
                cfg.model.path = path
            elif kind == "ref_model":
                cfg.ref_model = path
            elif kind == "value_model":
                cfg.value_model = path
            elif kind == "reward_model":
                # a structured list: plain dicts are rejected by the typed `reward.sources`
                cfg.reward.sources = [RewardSourceConfig(type="model", path=path, weight=1.0)]
    return cfg


def run_pipeline(cfg: DictConfig, task_overrides: list[str], sweep_dir: Path | None = None) -> dict[str, Any]:
    """Run the steps in order. In a sweep (``sweep_dir``), a step that another job already finished with the same
    config and inputs (e.g. the SFT step that every job of a DPO sweep starts from) is used, not run again."""
    from alignment.stages import run_stage

    pipe = cfg.pipeline
    if not pipe.get("steps"):
        raise AlignmentError(f"pipeline '{pipe.get('name')}' has no steps")
    add_compare_step(pipe)
    from alignment.preflight import check_pipeline_steps

    # Every step composed (compose_step) and its TRL settings built before the first one runs: a bad value in the
    # last step fails now, not after the earlier steps have trained.
    check_pipeline_steps(cfg, task_overrides, trainer_configs=True)
    run_dir = Path(cfg.output_dir)
    manifest_path = run_dir / "pipeline.json"
    manifest = _read_manifest(manifest_path, pipe.name)
    previous = {s["name"]: s for s in manifest["steps"]}
    barrier()  # every rank reads the manifest before rank 0 rewrites it
    overrides = _step_overrides(task_overrides)
    outputs: dict[str, str] = {}
    hashes: dict[str, str] = {}
    results: dict[str, Any] = {}
    rerun_rest = False
    steps = []
    for name, step in pipe.steps.items():
        step_cfg = compose_step(name, step, overrides, str(run_dir), outputs)
        inputs = {k: hashes[v] for k, v in (step.get("inputs") or {}).items()}
        if str(step.stage) == "compare":  # it reads every earlier step's model (and must not be shared in a sweep)
            inputs = {f"step:{k}": v for k, v in hashes.items()}
        state = StageDir.of(step_cfg, name)  # the step's stage run reuses this hash
        digest = step_hash(state.config_hash, inputs)
        hashes[name] = digest
        stage_dir = state.path
        outputs[name] = str(stage_dir / DATA_OUTPUTS.get(str(step.stage), "model"))
        old = previous.get(name)
        # metrics.json is written last: with the same stage config hash, a step killed after it counts as done too.
        finished = old and (stage_dir / "metrics.json").exists()
        finished = finished and (old.get("status") == "done" or finished_metrics(step_cfg, name) is not None)
        if finished and old.get("config_hash") == digest and not rerun_rest:
            log.info("step %s: finished earlier with the same config, skipping", name)
            print(f"[pipeline] {name}: done earlier with the same config; skipped")
            steps.append(dict(old, status="done"))
            results[name] = json.loads((stage_dir / "metrics.json").read_text(encoding="utf-8"))
            continue
        shared = (
            _finished_in_sibling(sweep_dir, run_dir, name, digest)
            if sweep_dir and not step_cfg.resume == "fresh"
            else None
        )
        if shared is not None:  # another job of this sweep ran the very same step (same config, same inputs)
            print(f"[pipeline] {name}: the same step finished in {shared['output']}; using it")
            outputs[name] = str(Path(shared["output"]) / DATA_OUTPUTS.get(str(step.stage), "model"))
            steps.append(dict(shared, status="done", shared=True))
            _write_manifest(manifest_path, pipe.name, steps)
            results[name] = json.loads((Path(shared["output"]) / "metrics.json").read_text(encoding="utf-8"))
            continue
        if old and old.get("config_hash") != digest and not rerun_rest:  # one line, for the first changed step
            what = "finished" if finished else "started"
            print(f"[pipeline] {name}: config changed since it {what}; running it and every later step again")
            rerun_rest = True
        if rerun_rest or (old and old.get("config_hash") != digest):
            with open_dict(step_cfg):
                step_cfg.resume = "fresh"
        record = {
            "name": name,
            "stage": str(step.stage),
            "status": "running",
            "started": _now(),
            "ended": None,
            "output": str(stage_dir),
            "config_hash": digest,
        }
        steps.append(record)
        _write_manifest(manifest_path, pipe.name, steps + [s for n, s in previous.items() if n not in pipe.steps])
        print(f"[pipeline] {name}: running stage {step.stage}")
        try:
            results[name] = run_stage(step_cfg)
        except BaseException as err:
            from alignment.errors import RunInterrupted

            # Ctrl-C: unfinished, not broken; the same command resumes it.
            stopped = isinstance(err, RunInterrupted | KeyboardInterrupt)
            record["status"] = "interrupted" if stopped else "failed"
            record["ended"] = _now()
            _write_manifest(manifest_path, pipe.name, steps)
            raise
        record["status"] = "done"
        record["ended"] = _now()
        _write_manifest(manifest_path, pipe.name, steps)
    return results


def _finished_in_sibling(sweep_dir: Path, run_dir: Path, name: str, digest: str) -> dict | None:
    """The record of step ``name`` finished with hash ``digest`` by another job of the sweep, if any."""
    for manifest in sorted(sweep_dir.glob("*/pipeline.json")):
        if manifest.parent == run_dir:
            continue
        try:
            records = json.loads(manifest.read_text(encoding="utf-8")).get("steps", [])
        except (OSError, ValueError):
            continue
        for rec in records:
            done = rec.get("status") == "done" and not rec.get("shared")
            if done and rec.get("name") == name and rec.get("config_hash") == digest:
                if (Path(rec["output"]) / "metrics.json").exists():
                    return rec
    return None


def _read_manifest(path: Path, name: str) -> dict:
    if not path.exists():
        return {"pipeline": name, "steps": []}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AlignmentError(f"{path} is not valid JSON ({err}); delete it to start the pipeline over") from err
    if manifest.get("pipeline") != name:
        raise AlignmentError(
            f"{path} belongs to pipeline '{manifest.get('pipeline')}', not '{name}'; use another output_dir"
        )
    return manifest


def _write_manifest(path: Path, name: str, steps: list[dict]) -> None:
    if not is_main_process():
        return
    write_atomic(path, json.dumps({"pipeline": name, "steps": steps}, indent=2) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

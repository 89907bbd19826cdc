"""Checks of the composed config that run before any heavy import and before a model is loaded, so that a mistake
costs a second, not a run: the stage or the pipeline's steps and their inputs, data and model paths, the data format
on the first rows, and the values that can be checked without the libraries. (The command line itself is checked
first, in ``alignment/command_line.py``.)
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from alignment.command_line import first_line
from alignment.errors import AlignmentError
from alignment.paths import CONF_DIR

# Which kind of rows each stage reads (alignment.data.load_dataset's ``kind``).
DATA_KIND = {"sft": "sft", "rm": "preference", "dpo": "preference", "orpo": "preference", "kto": "kto"}
# The stages that train on preference pairs, whose train split data.transforms change.
PAIR_STAGES = ("rm", "dpo", "kto", "orpo")


# -- the composed config -----------------------------------------------------------------------------------------
def check_config(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """What can be checked without loading a library or a model: stage or pipeline, paths, data format, values.

    A pipeline is checked whole: each step's config, composed as the step will run it (``overrides``: the command
    line's; by default Hydra's record of it), passes the same checks before the first step starts.
    """
    from omegaconf.errors import OmegaConfBaseException

    try:
        _check_config(cfg, overrides)
    except OmegaConfBaseException as err:  # an interpolation with nothing to resolve to, a value still ``???``
        key = getattr(err, "full_key", None)
        missing = re.search(r"Interpolation key '([^']+)' not found", str(err))
        hint = f"+{missing.group(1)}=..." if missing else f"{key}=..."
        raise AlignmentError(
            f"{key + ': ' if key else ''}{first_line(err)}; set it on the command line ({hint}) or use the "
            "experiment= preset that sets it"
        ) from err


def _check_config(cfg: DictConfig, overrides: list[str] | None) -> None:
    if cfg.get("pipeline"):
        steps = _check_pipeline(cfg.pipeline)
    else:
        steps = [(str(cfg.stage), {})]
    for stage, settings in steps:
        data = OmegaConf.merge(cfg.data, settings.get("data") or {})
        _check_data(data, stage, "data" if not settings.get("data") else f"pipeline.steps data of a {stage} step")
    _check_stage_config(cfg, str(cfg.stage), produced=set())
    if cfg.get("pipeline"):
        check_pipeline_steps(cfg, overrides)


def _check_stage_config(cfg: DictConfig, stage: str, produced: set[str]) -> None:
    """One stage's config: model paths (those an earlier pipeline step will write excepted) and values."""
    for key in ("model.path", "ref_model", "value_model"):
        path = OmegaConf.select(cfg, key)
        if str(path) not in produced:
            _check_model_path(path, key)
    sources = OmegaConf.select(cfg, "reward.sources") or []
    for i, source in enumerate(sources):
        kind = source.get("type")
        path = None if OmegaConf.is_missing(source, "path") else source.get("path")
        if stage in REWARD_STAGES:
            if kind not in REWARD_TYPES:
                raise AlignmentError(f"reward.sources.{i}.type='{kind}' must be one of: {', '.join(REWARD_TYPES)}")
            weight = source.get("weight")
            if not _is_number(weight) or not math.isfinite(weight):
                raise AlignmentError(f"reward.sources.{i}.weight must be a finite number, got {weight}")
            if kind in ("model", "function") and not path:
                what = "the reward model dir" if kind == "model" else "'package.module:function'"
                raise AlignmentError(f"reward.sources.{i}.path is needed for type={kind}: {what}")
        if kind == "model" and str(path) not in produced:
            _check_model_path(path, f"reward.sources.{i}.path")
    _check_run_values(cfg, stage)
    from alignment.adapters import validate_values
    from alignment.trainer.checks import validate_trainer_values

    validate_values(cfg.peft, stage)
    validate_trainer_values(
        OmegaConf.to_container(cfg.trainer, resolve=True),
        stage,
        cfg.data.max_length if _is_number(cfg.data.max_length) else None,
        _processes(cfg.distributed),
    )


def check_pipeline_steps(cfg: DictConfig, overrides: list[str] | None = None, trainer_configs: bool = False) -> None:
    """Compose every step of ``cfg.pipeline`` as the run will (``pipeline.compose_step``) and check it: its values,
    its data and model paths (except those an earlier step writes) and, with ``trainer_configs``, its TRL settings
    built in full (this imports TRL: the pipeline calls it before its first step, not the CLI's preflight)."""
    from alignment.pipeline import DATA_OUTPUTS, _step_overrides, compose_step

    pipe = cfg.pipeline
    step_args = _step_overrides(_task_overrides() if overrides is None else overrides)
    run_dir = str(cfg.output_dir)
    outputs: dict[str, str] = {}
    with _hydra_ready():
        for name, step in pipe.steps.items():
            where = f"pipeline '{pipe.get('name')}' step '{name}'"
            try:
                step_cfg = compose_step(str(name), step, step_args, run_dir, outputs)
            except AlignmentError:
                raise
            except Exception as err:  # Hydra's composition errors (an override this step's stage lacks)
                raise AlignmentError(f"{where}: {first_line(err.__cause__ or err)}") from err
            produced = {outputs[str(src)] for src in (step.get("inputs") or {}).values() if str(src) in outputs}
            outputs[str(name)] = str(Path(run_dir) / str(name) / DATA_OUTPUTS.get(str(step.stage), "model"))
            try:
                _check_data(step_cfg.data, str(step.stage), "data", path=str(step_cfg.data.path) not in produced)
                _check_stage_config(step_cfg, str(step.stage), produced)
                if trainer_configs:
                    from alignment.trainer.checks import check_trainer_config

                    check_trainer_config(step_cfg, Path(run_dir) / str(name))
            except AlignmentError as err:
                raise AlignmentError(f"{where}: {err}") from err


def _task_overrides() -> list[str]:
    """The command line's overrides as Hydra recorded them for this run (none outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except Exception:  # not inside a Hydra run (HydraConfig unset)
        return []


def _hydra_ready():
    """Hydra's config search path for ``compose``: the running app's, or this package's conf/ outside a run."""
    import contextlib

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return contextlib.nullcontext()
    return initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")


REWARD_TYPES = ("model", "oracle", "function")
# The stages that score replies with ``reward.sources``.
REWARD_STAGES = ("ppo", "grpo", "rloo", "label")
# numpy's seeds (transformers.set_seed seeds numpy too).
_MAX_SEED = 2**32 - 1


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_run_values(cfg: DictConfig, stage: str) -> None:
    """The run-wide values a library would reject only after loading: seed, checkpoint timer, model dtype, the
    topology and the oracle evaluation. (The values with fixed choices, such as resume, tracking.backend and
    data.train_on, are enums in the schema: a wrong one fails when the config is composed.)"""
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MAX_SEED:
        raise AlignmentError(f"seed={seed} must be an integer in [0, 2**32 - 1]")
    minutes = cfg.get("save_every_minutes")
    if minutes is not None and (not _is_number(minutes) or not math.isfinite(minutes) or minutes < 0):
        raise AlignmentError(f"save_every_minutes={minutes} must be 0 or more minutes (0 or null: off)")
    from alignment.models import _DTYPES

    dtype = str(OmegaConf.select(cfg, "model.dtype", default="auto"))
    if dtype not in _DTYPES:
        raise AlignmentError(f"model.dtype='{dtype}' must be one of: {', '.join(sorted(_DTYPES))}")
    _check_distributed(cfg.distributed)
    _check_oracle_eval(cfg.oracle_eval, stage)


def _check_distributed(dist: DictConfig) -> None:
    from alignment.launch import validate

    port = dist.get("main_process_port")
    if port is not None and not 1 <= port <= 65535:
        raise AlignmentError(f"distributed.main_process_port={port} must be a port number in 1..65535 (or null)")
    validate(dist)


def _processes(dist: DictConfig) -> int:
    from alignment.distributed import is_launched, world_size
    from alignment.launch import total_processes

    return world_size() if is_launched() else total_processes(dist)


def _check_oracle_eval(oe: DictConfig, stage: str) -> None:
    if not oe.enabled or stage in ("rm", "label"):  # neither measures a policy
        return
    off = "; or turn the measurement off with oracle_eval.enabled=false"
    for key in ("num_prompts", "samples_per_prompt", "max_new_tokens", "batch_size"):
        value = oe.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise AlignmentError(f"oracle_eval.{key} must be a positive integer, got {value}{off}")
    if not oe.greedy and not (_is_number(oe.temperature) and oe.temperature > 0):
        raise AlignmentError(
            f"oracle_eval.temperature must be positive (or oracle_eval.greedy=true), got {oe.temperature}"
        )
    if not (_is_number(oe.top_p) and 0 < oe.top_p <= 1):
        raise AlignmentError(f"oracle_eval.top_p must lie in (0, 1], got {oe.top_p}")
    if not isinstance(oe.seed, int) or not 0 <= oe.seed <= _MAX_SEED:
        raise AlignmentError(f"oracle_eval.seed={oe.seed} must be an integer in [0, 2**32 - 1]")
    path = oe.get("path")
    if path and not _is_interpolation(path):
        from alignment.data.loading import local_path_missing

        if local_path_missing(str(path)):
            raise AlignmentError(f"oracle_eval.path: no prompt data at {Path(str(path)).expanduser().absolute()}")


def _check_pipeline(pipe: DictConfig) -> list[tuple[str, dict]]:
    from alignment.pipeline import INPUT_KINDS
    from alignment.stages import STAGES

    if not pipe.get("steps"):
        raise AlignmentError(f"pipeline '{pipe.get('name')}' has no steps")
    seen: list[str] = []
    steps = []
    for name, step in pipe.steps.items():
        where = f"pipeline '{pipe.get('name')}' step '{name}'"
        if not isinstance(step, DictConfig) or "stage" not in step:
            raise AlignmentError(f"{where} has no 'stage'; give it one of: {', '.join(STAGES)}")
        if step.stage not in STAGES:
            raise AlignmentError(f"{where}: unknown stage '{step.stage}'; choose one of: {', '.join(STAGES)}")
        for kind, source in (step.get("inputs") or {}).items():
            if kind not in INPUT_KINDS:
                raise AlignmentError(f"{where}: unknown input '{kind}'; use {', '.join(INPUT_KINDS)}")
            if source not in seen:
                later = " (it comes later: steps run in the order written)" if source in pipe.steps else ""
                raise AlignmentError(f"{where} reads {kind} from '{source}', which is not an earlier step{later}")
        seen.append(str(name))
        steps.append((str(step.stage), OmegaConf.to_container(step, resolve=True)))
    return steps


def _check_data(data: DictConfig, stage: str, where: str, path: bool = True) -> None:
    """``data.*``: format, values, transforms and (with ``path``) the file and its first rows."""
    from alignment.data.formats import FORMATS, detect_format
    from alignment.data.loading import check_options, local_path_missing, peek_rows

    if str(data.format) != "auto" and data.format not in FORMATS:
        raise AlignmentError(f"data.format='{data.format}' is not a format; use auto or one of: {', '.join(FORMATS)}")
    check_options(data)
    _check_data_values(data)
    transforms = data.get("transforms")
    if transforms and stage not in PAIR_STAGES:
        raise AlignmentError(
            f"data.transforms change preference pairs, which stage={stage} does not train on "
            f"({', '.join(PAIR_STAGES)} do); in a pipeline set them for those steps only, e.g. "
            "+pipeline.steps.dpo.data.transforms=[...]"
        )
    if transforms:
        from alignment.data.transforms import validate_transforms

        validate_transforms(OmegaConf.to_container(transforms, resolve=True))
    path = data.get("path") if path else None
    if not path or _is_interpolation(path):
        return
    if local_path_missing(str(path)):
        local = Path(str(path)).expanduser()
        raise AlignmentError(f"data file not found: {local} (resolved to {local.absolute()}). Check data.path.")
    if str(data.format) == "auto" and stage in DATA_KIND and not data.get("converter"):
        head = peek_rows(str(path), split=str(data.train_split), columns=data.get("columns"))
        if head and head[1]:
            detect_format(head[1], where=head[0])


def _check_data_values(data: DictConfig) -> None:
    if data.max_length is None or not _is_number(data.max_length) or data.max_length <= 0:
        raise AlignmentError(f"data.max_length must be a positive number of tokens, got {data.max_length}")
    if not str(data.train_split or "").strip():
        raise AlignmentError("data.train_split must name a split, e.g. train")
    fraction = data.eval_fraction
    if not _is_number(fraction) or not 0 <= fraction < 1:
        raise AlignmentError(
            f"data.eval_fraction={fraction} must lie in [0, 1): the share of train held out when there is no "
            "eval split (0: none)"
        )
    rows = data.max_train_rows
    if rows is not None and rows < 1:
        raise AlignmentError(f"data.max_train_rows={rows} leaves no rows to train on; give a positive number or null")
    rows = data.max_eval_rows
    if rows is not None and rows < 1:
        raise AlignmentError(
            f"data.max_eval_rows={rows} leaves no held-out rows; give a positive number, or null for all of them "
            "(to train without held-out data: data.eval_split=null data.eval_fraction=0)"
        )


def _check_model_path(path, key: str) -> None:
    if not path or _is_interpolation(path):
        return
    from alignment.models import locate_model

    locate_model(path, key)


def _is_interpolation(value) -> bool:
    return isinstance(value, str) and "${" in value

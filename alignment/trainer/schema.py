"""The ``trainer`` schema of each TRL stage: every simple field of the stage's TRL config class, with TRL's names,
defaults and help text, as a dataclass Hydra checks overrides against. Built once per TRL/transformers version and
cached, so a config typo is reported (and ``python -m alignment.trainer STAGE`` lists the options) without importing
TRL.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import field
from functools import cache
from pathlib import Path
from typing import Any

from alignment.paths import cache_root

_SIMPLE = (bool, int, float, str)


def _field_type(tp: Any) -> Any:
    """Map a TRL/transformers field type to one OmegaConf can validate; anything richer becomes Any."""
    if tp in _SIMPLE:
        return tp
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in _SIMPLE:
            return rest[0] | None
    if typing.get_origin(tp) is list and args and args[0] is str:
        return list[str] if None not in args else Any
    return Any


# TRL fields the run sets itself: output_dir from ``output_dir``, seed from ``seed``, report_to from ``tracking``,
# max_length from ``data.max_length`` (one length for the data layer and the trainer). Publishing is ``hub.*``: TRL's
# push_to_hub uploads the whole output dir (checkpoints, logs) while training; ``hub.push`` uploads the finished model.
_MANAGED = {"output_dir", "report_to", "run_name", "seed", "max_length", "push_to_hub", "hub_model_id", "hub_token"}


# One field of a trainer schema: (name, type name, default, TRL's help text).
FieldSpec = tuple[str, str, Any, str]


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default: its value, what its factory makes, or None when it has neither."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def field_help(f: dataclasses.Field) -> str:
    """A dataclass field's ``help`` metadata on one line (empty when it has none)."""
    return " ".join(str(f.metadata.get("help", "")).split())


def trainer_fields(config_cls: type) -> list[FieldSpec]:
    """Every simple field of a TRL config class as (name, type name, default, help): TRL's names, defaults and
    help text."""
    specs = []
    for f in dataclasses.fields(config_cls):
        if not f.init or f.name.startswith("_") or f.name in _MANAGED:
            continue
        default = field_default(f)
        tp = _field_type(f.type)
        if hasattr(default, "value") and not isinstance(default, _SIMPLE):  # enums -> their string value
            default = default.value
        type_name = "any" if tp is Any or isinstance(default, list | dict) else _TYPE_NAMES[tp]
        specs.append((f.name, type_name, default, field_help(f)))
    return specs


_TYPE_NAMES = {t: t.__name__ for t in _SIMPLE} | {t | None: f"{t.__name__}?" for t in _SIMPLE} | {list[str]: "list"}
_TYPES = {name: tp for tp, name in _TYPE_NAMES.items()}
_CACHE_FORMAT = 2


def _schema_class(name: str, specs: list[FieldSpec]) -> type:
    fields = []
    for key, type_name, default, help_text in specs:
        meta = {"help": help_text}
        if type_name == "any":
            fields.append((key, Any, field(default_factory=(lambda d=default: copy.deepcopy(d)), metadata=meta)))
        else:
            fields.append((key, _TYPES[type_name], field(default=default, metadata=meta)))
    return dataclasses.make_dataclass(name, fields)


@cache
def trainer_schema(config_cls: type) -> type:
    """A dataclass with every simple field of a TRL config class, TRL's names and defaults, for Hydra to check."""
    return _schema_class(f"{config_cls.__name__}Schema", trainer_fields(config_cls))


def _schema_cache_file() -> Path:
    """Where the trainer schemas of the installed TRL and transformers are cached (they take seconds to import)."""
    from importlib.metadata import version

    root = cache_root()
    # This file's mapping and the cached row layout (_CACHE_FORMAT: 2 = with help text) name the cache.
    tag = hashlib.sha256(repr((sorted(_MANAGED), sorted(_TYPES), _CACHE_FORMAT)).encode()).hexdigest()[:8]
    return root / f"trainer-schemas-trl{version('trl')}-transformers{version('transformers')}-{tag}.json"


def trainer_schemas() -> dict[str, type]:
    """The ``trainer`` schema of each TRL stage, read from a per-version cache so that a config typo is reported
    without importing TRL; built from TRL's config classes (and cached) on a miss."""
    return {stage: _schema_class(f"{cls_name}Schema", specs) for stage, (cls_name, specs) in trainer_specs().items()}


def trainer_specs() -> dict[str, tuple[str, list[FieldSpec]]]:
    """Each TRL stage's config class name and field specs, from the per-version cache (built on a miss)."""
    path = _schema_cache_file()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = None
    if not cached:
        cached = {stage: [cls.__name__, trainer_fields(cls)] for stage, cls in trl_config_classes().items()}
        with contextlib.suppress(OSError):  # a read-only home only costs the next start-up its speed
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cached), encoding="utf-8")
            os.replace(tmp, path)
    return {stage: (cls_name, [tuple(spec) for spec in specs]) for stage, (cls_name, specs) in cached.items()}


_TRL_CONFIGS = {
    "sft": "SFTConfig",
    "rm": "RewardConfig",
    "dpo": "DPOConfig",
    "kto": "KTOConfig",
    "grpo": "GRPOConfig",
    "rloo": "RLOOConfig",
}


def trl_config_classes() -> dict[str, type]:
    """The TRL config class behind each stage's ``trainer`` group."""
    classes = {stage: trl_config_class(stage) for stage in (*_TRL_CONFIGS, "orpo")}
    return {stage: cls for stage, cls in classes.items() if cls is not None}


def trl_config_class(stage: str) -> type | None:
    """The TRL config class of one stage (None for our own stages, or orpo when TRL no longer has it). Importing only
    this one keeps start-up from loading the other stages' modules (ORPO's pulls in its trainer)."""
    if stage in _TRL_CONFIGS:
        import trl

        return getattr(trl, _TRL_CONFIGS[stage])
    if stage != "orpo":
        return None
    # TRL warns on importing trl.experimental; at start-up that would reach every command, so it is silenced here
    # and stage=orpo says it once (stages/orpo.py).
    silenced = os.environ.get("TRL_EXPERIMENTAL_SILENCE")
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    try:
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig
    except ImportError:  # experimental module moved or gone: orpo is then unavailable
        return None
    finally:
        if silenced is None:
            os.environ.pop("TRL_EXPERIMENTAL_SILENCE", None)
        else:
            os.environ["TRL_EXPERIMENTAL_SILENCE"] = silenced


def own_settings() -> dict[str, type]:
    """The stages whose ``trainer.*`` is one of our dataclasses rather than a TRL config."""
    from alignment.rl.settings import PPOSettings
    from alignment.stages.generate import GenerateSettings
    from alignment.stages.label import LabelSettings

    return {"ppo": PPOSettings, "generate": GenerateSettings, "label": LabelSettings}

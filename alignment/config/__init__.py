"""Structured configs, registered with Hydra's ConfigStore so that a misspelt key is an error naming the key.

The YAML files in ``conf/`` fill these schemas. A stage's TRL settings live under ``trainer.`` with TRL's own field
names: the schema of ``trainer`` is generated from the stage's TRL config class, so every TRL field is typed and
available, and nothing else is.

The schemas live by concern: ``choices`` (the enums and the old spellings), ``training`` and ``evaluation`` (the
groups); the root config and the registration are here, and every name is importable from ``alignment.config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from alignment.config.choices import (
    Backend,
    Direction,
    OnError,
    PeftMethod,
    Resume,
    Tracker,
    TrainOn,
    translate_old_spellings,
)
from alignment.config.evaluation import (
    ChatConfig,
    ChatRulesConfig,
    CompareConfig,
    EvalConfig,
    LmEvalConfig,
    OracleEvalConfig,
)
from alignment.config.training import (
    DataConfig,
    DistributedConfig,
    HubConfig,
    ModelConfig,
    PeftConfig,
    RewardConfig,
    RewardSourceConfig,
    SweepConfig,
    TrackingConfig,
)
from alignment.trainer.schema import own_settings, trainer_schemas

__all__ = [
    "AlignConfig",
    "Backend",
    "ChatConfig",
    "ChatRulesConfig",
    "CompareConfig",
    "DataConfig",
    "Direction",
    "DistributedConfig",
    "EvalConfig",
    "HubConfig",
    "LmEvalConfig",
    "ModelConfig",
    "NoTrainerSettings",
    "OnError",
    "OracleEvalConfig",
    "PeftConfig",
    "PeftMethod",
    "RewardConfig",
    "RewardSourceConfig",
    "Resume",
    "SweepConfig",
    "Tracker",
    "TrackingConfig",
    "TrainOn",
    "hashable",
    "register_configs",
    "translate_old_spellings",
]


def hashable(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data for a stage's config hash: enums as their names, and ``peft.method=full``
    under ``none``, the default's name when the first hashes were written, so a run made then still resumes."""
    data = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    peft = data.get("peft")
    if isinstance(peft, dict) and peft.get("method") == PeftMethod.full.value:
        peft["method"] = "none"
    return data


@dataclass
class NoTrainerSettings:
    """``trainer.*`` of the stages that train nothing (eval, compare, chat): none, so a trainer key there is a typo."""


@dataclass
class AlignConfig:
    """The root config: one stage, the models and data it uses, and the run's settings."""

    stage: Any = MISSING
    trainer: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    oracle_eval: OracleEvalConfig = field(default_factory=OracleEvalConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    ref_model: str | None = field(default=None, metadata={"help": "Reference model dir; None = the start model."})
    value_model: str | None = field(default=None, metadata={"help": "PPO value model init; None = reward model."})
    pipeline: Any = field(default=None, metadata={"help": "Chosen with pipeline=<name>: ordered steps to run."})
    step: str | None = field(default=None, metadata={"help": "Pipeline step name; the stage writes PATH/<step>/."})
    output_dir: str = field(default=MISSING, metadata={"help": "Run dir; the stage writes PATH/<stage>/."})
    seed: int = 42
    resume: Resume = field(default=Resume.auto, metadata={"help": "auto (resume if a checkpoint exists) or fresh."})
    save_every_minutes: float | None = field(
        default=5.0, metadata={"help": "Also save a checkpoint after this many minutes of training; None or 0 = off."}
    )
    evaluate_before: bool = field(
        default=True,
        metadata={
            "help": "Also measure held-out metrics and oracle reward before training (the *_before keys). Presets "
            "turn it off where every job starts from one model whose numbers are already known."
        },
    )
    debug: bool = field(default=False, metadata={"help": "Show tracebacks."})
    sweep: SweepConfig = field(default_factory=SweepConfig)
    vars: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Free values that presets interpolate (${vars.noise}); sweep them like any key."},
    )


def register_configs() -> None:
    from alignment.sweep import register_resolvers

    register_resolvers()  # conf/config.yaml's default output_dir and sweep job dirs
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=AlignConfig)
    for stage, schema in (trainer_schemas() | own_settings()).items():
        cs.store(group="schema/trainer", name=stage, node=schema)
    for stage in ("eval", "compare", "chat"):
        cs.store(group="schema/trainer", name=stage, node=NoTrainerSettings)

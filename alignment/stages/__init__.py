"""One module per stage; ``run_stage`` dispatches on ``cfg.stage``."""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from alignment.errors import AlignmentError

STAGES = ("sft", "rm", "dpo", "kto", "orpo", "ppo", "grpo", "rloo", "generate", "label", "eval", "compare", "chat")
# Stages that read models and train none: no peft method applies, and no trainer settings are built for them.
EVALUATION_STAGES = ("eval", "compare", "chat")


def run_stage(cfg: DictConfig) -> dict:
    """Run the stage named by ``cfg.stage`` and return its metrics."""
    if cfg.stage not in STAGES:
        raise AlignmentError(f"unknown stage '{cfg.stage}'; choose one of: {', '.join(STAGES)}")
    module = importlib.import_module(f"alignment.stages.{cfg.stage}")
    if cfg.stage == "chat":  # a terminal session: no stage dir, no train.log; Ctrl-C or /exit ends it
        return module.run(cfg)
    from alignment.adapters import validate

    validate(cfg.peft, str(cfg.stage))  # an unsupported peft method fails before any model is loaded
    from alignment.trainer.checks import check_trainer_config

    check_trainer_config(cfg)  # the stage's TRL settings built now: TRL's own checks run before any model loads
    from alignment.stages.live_run import stage_scope

    with stage_scope():  # Ctrl-C stops cleanly (RunInterrupted); a failure is written to the stage's train.log
        return module.run(cfg)

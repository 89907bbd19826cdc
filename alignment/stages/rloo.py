"""RLOO with TRL's RLOOTrainer: like GRPO, with the leave-one-out baseline; same prompts and reward sources."""

from __future__ import annotations

from omegaconf import DictConfig

from alignment.stages import grpo


def run(cfg: DictConfig) -> dict:
    return grpo.run(cfg, trainer_name="rloo")

"""Build a stage's real TRL trainer in-process, from the stage's own config, without training it."""

from __future__ import annotations

from types import ModuleType


def compose(*overrides: str):
    """The config ``python -m alignment OVERRIDES`` would run with."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def built_trainer(monkeypatch, stage: ModuleType, *overrides: str):
    """The trainer ``stage.run`` builds (model, data, TRL trainer), returned where the stage would start fitting."""

    def stop_before_fit(self, trainer, tokenizer, oracle: bool = True):
        return trainer

    monkeypatch.setattr(stage.StageRun, "fit", stop_before_fit)
    return stage.run(compose(*overrides))

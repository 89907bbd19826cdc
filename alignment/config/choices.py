"""The config keys with a fixed set of values, as enums, and the translation of their old spellings.

A misspelt value fails when the config is composed and the error lists the choices. Each member's name is its value
(OmegaConf reads a value by member name), and a StrEnum member equals its value and prints as it
(`cfg.peft.method == "lora"`, f"{cfg.resume}").
"""

from __future__ import annotations

import sys
from enum import StrEnum


class PeftMethod(StrEnum):
    """``peft.method``: how the model is fine-tuned (docs/peft.md)."""

    full = "full"
    # The old name of full: an alias, so peft.method=none composes as full (the CLI says the name is deprecated).
    none = "full"
    freeze = "freeze"
    lora = "lora"
    dora = "dora"
    rslora = "rslora"
    adalora = "adalora"
    ia3 = "ia3"
    qlora = "qlora"
    prompt_tuning = "prompt_tuning"
    p_tuning = "p_tuning"
    prefix_tuning = "prefix_tuning"


class Backend(StrEnum):
    """``distributed.backend``: how the processes share the model (docs/distributed.md)."""

    single = "single"
    ddp = "ddp"
    zero2 = "zero2"
    zero3 = "zero3"
    zero3_offload = "zero3_offload"
    fsdp = "fsdp"


class TrainOn(StrEnum):
    """``data.train_on``: which tokens of a conversation carry the SFT loss (``alignment.data.encode_chat``)."""

    assistant = "assistant"
    last_assistant = "last_assistant"
    all = "all"


# ``raise`` is a keyword, hence the functional form.
OnError = StrEnum("OnError", [("raise", "raise"), ("skip", "skip")])
OnError.__doc__ = "``data.on_error``: stop at a bad row (raise) or drop it and count it (skip)."


class Tracker(StrEnum):
    """``tracking.backend``: where training metrics go besides metrics.json and the log."""

    none = "none"
    wandb = "wandb"
    tensorboard = "tensorboard"


class Resume(StrEnum):
    """``resume``: go on from the stage's newest checkpoint (auto) or clear its dir and start over (fresh)."""

    auto = "auto"
    fresh = "fresh"


class Direction(StrEnum):
    """``sweep.direction``: whether a sweep's objective is minimised or maximised."""

    minimize = "minimize"
    maximize = "maximize"


# resume=true/false: the old spellings of auto/fresh (Hydra reads them as booleans, which the enum refuses).
_RESUME_ALIASES = {"true": Resume.auto, "false": Resume.fresh}
_noted: set[str] = set()


def translate_old_spellings(argv: list[str]) -> list[str]:
    """The command line with the old spellings of choices replaced, each named once on stderr: ``resume=true|false``
    becomes ``resume=auto|fresh``; ``peft=none`` (and ``peft.method=none``) stays, as an alias of full, with a
    deprecation warning (it is not rewritten: the default run dir is named after the command line as typed)."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        name = key.lstrip("+~")
        if sep and name == "resume" and value.lower() in _RESUME_ALIASES:
            new = _RESUME_ALIASES[value.lower()].value
            _note(f"resume={value} is read as resume={new}; resume takes auto or fresh")
            arg = f"{key}={new}"
        elif sep and name in ("peft", "peft.method") and "none" in value.split(","):
            _note(f"{name}=none is deprecated; use {name}=full")
        out.append(arg)
    return out


def _note(message: str) -> None:
    if message not in _noted:
        _noted.add(message)
        print(f"warning: {message}", file=sys.stderr)

"""Checks of ``trainer.*`` before any model loads: the values TRL accepts but cannot train with, the rules TRL's
trainers apply only once a model is loaded, and the stage's whole TRL config built once so that TRL's own checks run
early; each failure names its key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alignment.errors import AlignmentError

# Stages whose ``data.max_length`` bounds the whole sequence (prompt and reply); GRPO/RLOO/PPO truncate prompts to it.
WHOLE_SEQUENCE_STAGES = ("sft", "rm", "dpo", "kto", "orpo")
# Stages whose ``trainer.beta`` scales a preference loss: zero or negative trains nothing or the wrong way.
POSITIVE_BETA_STAGES = ("dpo", "kto", "orpo")
ONLINE_TRL_STAGES = ("grpo", "rloo")

_POSITIVE = (
    "learning_rate",
    "value_learning_rate",
    "temperature",
    "adam_epsilon",
    "logging_steps",
    "eval_steps",
    "cliprange",
    "cliprange_value",
)
_AT_LEAST_ONE = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "eval_accumulation_steps",
    "rollout_batch_size",
    "mini_batch_size",
    "forward_batch_size",
    "ppo_epochs",
    "batch_size",
    "samples_per_prompt",
    "max_new_tokens",
    "max_completion_length",
    "max_prompt_length",
    "num_iterations",
    "generation_batch_size",
    "steps_per_generation",
    "num_generations_eval",
    "precompute_ref_batch_size",
    "dataset_num_proc",
)
_NOT_NEGATIVE = (
    "weight_decay",
    "warmup_steps",
    "max_grad_norm",
    "label_smoothing_factor",
    "dataloader_num_workers",
    "top_k",
    "kl_coef",
    "vf_coef",
    "epsilon",
    "desirable_weight",
    "undesirable_weight",
)
_UNIT_INTERVAL = {"top_p": "(0, 1]", "warmup_ratio": "[0, 1]", "adam_beta1": "[0, 1)", "adam_beta2": "[0, 1)"}
_UNIT_INTERVAL |= {"gamma": "[0, 1]", "lam": "[0, 1]", "ref_model_mixup_alpha": "[0, 1]"}


def validate_trainer_values(
    values: dict[str, Any], stage: str | None = None, max_length: int | None = None, world_size: int = 1
) -> None:
    """Reject ``trainer.*`` values that TRL would accept silently, or reject only after the model and data have
    loaded, naming the key. ``max_length`` is ``data.max_length``; ``world_size`` the number of training processes.
    """
    for key, value in values.items():
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            raise AlignmentError(f"trainer.{key}={value} must be a finite number")
        if key in _POSITIVE and value <= 0:
            raise AlignmentError(f"trainer.{key} must be positive, got {value}")
        if key in _AT_LEAST_ONE and value < 1:
            raise AlignmentError(f"trainer.{key} must be a positive integer, got {value}")
        if key in _NOT_NEGATIVE and value < 0:
            raise AlignmentError(f"trainer.{key} must be 0 or more, got {value}")
        if key in _UNIT_INTERVAL and not _in_interval(value, _UNIT_INTERVAL[key]):
            raise AlignmentError(f"trainer.{key}={value} must lie in {_UNIT_INTERVAL[key]}")
    _check_beta(values, stage)
    _check_steps(values, stage)
    if stage == "kto":
        _check_kto(values)
    _check_lengths(values, stage, max_length)
    if stage in ONLINE_TRL_STAGES:
        _check_generations(values, stage, world_size)


def _in_interval(value: float, interval: str) -> bool:
    low_ok = value > 0 if interval[0] == "(" else value >= 0
    high_ok = value < 1 if interval[-1] == ")" else value <= 1
    return low_ok and high_ok


def _number(values: dict[str, Any], key: str) -> float | None:
    value = values.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _check_beta(values: dict[str, Any], stage: str | None) -> None:
    beta = _number(values, "beta")
    if beta is None:
        return
    if stage in POSITIVE_BETA_STAGES and beta <= 0:
        raise AlignmentError(
            f"trainer.beta must be positive for stage={stage}, got {beta} (it scales the preference loss; "
            "0.1 is a common choice)"
        )
    if beta < 0:
        raise AlignmentError(f"trainer.beta (the KL weight) must be 0 or more, got {beta}")


def _check_steps(values: dict[str, Any], stage: str | None) -> None:
    steps, epochs = _number(values, "max_steps"), _number(values, "num_train_epochs")
    if stage == "ppo":
        if steps is not None and steps < 0:
            raise AlignmentError(f"trainer.max_steps must be 0 or more, got {steps}")
        return
    if steps is not None and steps <= 0 and epochs is not None and epochs <= 0:
        raise AlignmentError(
            f"trainer.max_steps={steps} and trainer.num_train_epochs={epochs}: nothing would train; "
            "set trainer.max_steps to a positive number of steps or trainer.num_train_epochs > 0"
        )
    save_steps = _number(values, "save_steps")  # the HF Trainer's (PPO's own save_steps=0 means never)
    if save_steps is not None and save_steps <= 0 and str(values.get("save_strategy")) == "steps":
        raise AlignmentError(f"trainer.save_steps must be positive with save_strategy=steps, got {save_steps}")


def _check_kto(values: dict[str, Any]) -> None:
    """KTOTrainer's own rules (checked only once the model has loaded): its KL term pairs each row with another row
    of the same batch, in a fixed order."""
    if values.get("loss_type") == "apo_zero_unpaired":  # the one KTO loss without the KL term
        return
    batch = _number(values, "per_device_train_batch_size")
    if batch is not None and batch < 2:
        raise AlignmentError(
            f"trainer.per_device_train_batch_size={batch}: stage=kto estimates its KL term from the other rows of a "
            "batch, so it needs at least 2 per device (or trainer.loss_type=apo_zero_unpaired)"
        )
    strategy = values.get("train_sampling_strategy")
    if strategy is not None and strategy != "sequential":
        raise AlignmentError(
            f"trainer.train_sampling_strategy={strategy!r}: stage=kto pairs each row with its neighbour in a "
            "fixed-order batch for its KL term, so it needs sequential (or trainer.loss_type=apo_zero_unpaired)"
        )


def _check_lengths(values: dict[str, Any], stage: str | None, max_length: int | None) -> None:
    if stage not in WHOLE_SEQUENCE_STAGES or not max_length:
        return
    for key in ("max_prompt_length", "max_completion_length"):
        n = _number(values, key)
        if n is not None and n >= max_length:
            raise AlignmentError(
                f"trainer.{key}={n} must be less than data.max_length={max_length}, the length of the whole "
                "sequence (prompt and reply); raise data.max_length or lower trainer." + key
            )


def _check_generations(values: dict[str, Any], stage: str, world_size: int) -> None:
    """TRL's GRPO/RLOO group rule: each generation batch holds whole groups of ``num_generations`` replies."""
    n = _number(values, "num_generations")
    if n is None:
        return
    if n < 2:
        raise AlignmentError(
            f"trainer.num_generations={n}: stage={stage} compares replies to the same prompt, so it needs at least "
            "2 per prompt"
        )
    per_device = _number(values, "per_device_train_batch_size") or 1
    gen_batch, steps = _number(values, "generation_batch_size"), _number(values, "steps_per_generation")
    if gen_batch is not None and steps is not None:
        raise AlignmentError(
            "trainer.generation_batch_size and trainer.steps_per_generation cannot both be set; set one of them"
        )
    global_batch = int(per_device) * max(int(world_size), 1)
    if gen_batch is not None:
        if gen_batch % global_batch:
            raise AlignmentError(
                f"trainer.generation_batch_size={gen_batch} must be a multiple of the global batch "
                f"(trainer.per_device_train_batch_size={per_device} x {world_size} processes = {global_batch})"
            )
        what = f"trainer.generation_batch_size={gen_batch}"
    else:
        steps = steps if steps is not None else _number(values, "gradient_accumulation_steps") or 1
        gen_batch = global_batch * int(steps)
        what = (
            f"the generation batch (trainer.per_device_train_batch_size={per_device} x {world_size} processes x "
            f"{int(steps)} steps_per_generation or gradient_accumulation_steps = {gen_batch})"
        )
    if gen_batch % n:
        raise AlignmentError(
            f"{what} must be divisible by trainer.num_generations={n}, so that each batch holds whole groups of "
            "replies to one prompt; change trainer.per_device_train_batch_size or trainer.num_generations"
        )


def check_trainer_config(cfg: DictConfig, stage_dir: Path | None = None) -> None:
    """Build the stage's trainer settings from the composed config without loading a model, so that our checks and
    TRL's own (``__post_init__``) fail in seconds, naming the key, before any model or data is loaded.

    Imports TRL: call it after the command line's cheap checks (a stage's start, a pipeline's start).
    """
    from alignment.distributed import is_launched, world_size
    from alignment.launch import total_processes

    stage = str(cfg.stage)
    values = OmegaConf.to_container(cfg.trainer, resolve=True)
    world = world_size() if is_launched() else total_processes(cfg.distributed)
    validate_trainer_values(values, stage, _max_length(cfg), world)
    if stage == "ppo":
        from alignment.rl.settings import stage_settings

        stage_settings(values, int(cfg.seed)).validate()
        return
    if stage in ("generate", "label"):
        _check_data_stage_settings(stage, values)
        return
    from alignment.trainer.schema import trl_config_class

    config_cls = trl_config_class(stage)  # this stage's class only: the others' TRL modules stay unloaded
    if config_cls is None:
        return
    if stage == "dpo":
        from alignment.stages.dpo import check_loss_settings

        check_loss_settings(values)
    _check_choices(config_cls, values)
    _check_trainer_rules(values, stage, str(OmegaConf.select(cfg, "peft.method", default="full")))
    name = str(cfg.get("step") or stage)
    stage_dir = stage_dir or Path(str(cfg.output_dir)) / name
    with _environment_kept():  # report_to sets the tracker's variables: the real run sets them again
        from alignment.trainer.args import trainer_args  # it calls validate_trainer_values from here

        trainer_args(cfg, name, stage_dir, config_cls)
    from alignment.distributed import forget_previous_stage

    forget_previous_stage()  # a ZeRO-3 config registered by this trial build must not shard the next model load


def _check_trainer_rules(values: dict[str, Any], stage: str, peft_method: str) -> None:
    """Rules TRL's trainers enforce only in ``__init__``, after the model has loaded (TRL 1.16)."""
    if stage == "sft":
        if values.get("loss_type") not in (None, "nll", "dft"):
            raise AlignmentError(f"trainer.loss_type={values['loss_type']!r}: SFTTrainer takes nll or dft")
        if values.get("padding_free") and not values.get("packing"):
            raise AlignmentError(
                "trainer.padding_free=true needs trainer.packing=true here: without packing TRL cannot enforce "
                "data.max_length"
            )
    if values.get("sync_ref_model"):
        if stage in ("grpo", "rloo") and not values.get("beta"):
            raise AlignmentError(
                f"trainer.sync_ref_model=true with trainer.beta=0: stage={stage} then keeps no reference model to "
                "sync; set trainer.beta > 0 or trainer.sync_ref_model=false"
            )
        if stage in ("dpo", "kto") and peft_method not in ("full", "freeze"):
            raise AlignmentError(
                f"trainer.sync_ref_model=true with peft={peft_method}: the reference is the policy without its "
                "adapter, so there is no separate model to sync; set trainer.sync_ref_model=false"
            )
        if stage in ("dpo", "kto") and values.get("precompute_ref_log_probs"):
            raise AlignmentError(
                "trainer.sync_ref_model=true and trainer.precompute_ref_log_probs=true exclude each other: a synced "
                "reference changes, precomputed log-probs assume it does not; turn one off"
            )
    if stage in ("grpo", "rloo") and values.get("use_vllm") and importlib.util.find_spec("vllm") is None:
        # TRL finds out only after the policy has loaded, and raises a bare ImportError.
        raise AlignmentError(
            f"trainer.use_vllm=true: stage={stage} samples with vLLM, which is not installed; `pip install vllm` "
            "(it needs a CUDA GPU; docs/stages.md, grpo), or leave trainer.use_vllm=false to sample with "
            "transformers' generate"
        )
    weights = values.get("reward_weights")
    if stage in ("grpo", "rloo") and weights is not None and (not isinstance(weights, list) or len(weights) != 1):
        raise AlignmentError(
            f"trainer.reward_weights={weights!r}: stage={stage} gets one reward function (reward.sources, already "
            "weighted there), so give one weight or leave it unset"
        )


def _max_length(cfg: DictConfig) -> int | None:
    value = OmegaConf.select(cfg, "data.max_length")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _check_data_stage_settings(stage: str, values: dict[str, Any]) -> None:
    if stage == "generate":
        from alignment.stages.generate import GenerateSettings

        GenerateSettings(**values).validate()


# TRL reads these strings only deep in training (an unknown name fails at the first loss, after the model loads).
_GRPO_CHOICES = {
    "scale_rewards": ("group", "batch", "none", True, False),
    "importance_sampling_level": ("token", "sequence"),
}


def _check_choices(config_cls: type, values: dict[str, Any]) -> None:
    """Values outside a field's documented choices: TRL's ``choices`` metadata, and GRPO's loss names and scalings."""
    by_name = {f.name: f for f in dataclasses.fields(config_cls)}
    for key, value in values.items():
        f = by_name.get(key)
        if f is None or value is None:
            continue
        choices = f.metadata.get("choices")
        if choices is None and key == "loss_type" and config_cls.__name__ in ("GRPOConfig", "RLOOConfig"):
            choices = _supported_values(f.metadata.get("help", "")) or None
        if choices is None and config_cls.__name__ == "GRPOConfig":
            choices = _GRPO_CHOICES.get(key)
        if choices is not None and not isinstance(value, list | dict) and value not in choices:
            shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
            raise AlignmentError(f"trainer.{key}={value!r} is not one of: {shown}")


def _supported_values(help_text: str) -> list[str]:
    """The names in a TRL help text's "Supported values are 'a', 'b' and 'c'." sentence."""
    match = re.search(r"Supported values are ('[^.]*)\.", help_text)
    return re.findall(r"'(\w+)'", match.group(1)) if match else []


@contextlib.contextmanager
def _environment_kept():
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def library_message(err: BaseException, values: dict[str, Any]) -> str:
    """One line from a library's error, naming the ``trainer.*`` key when the message only quotes its value."""
    text = " ".join(str(err).split()) or type(err).__name__
    if len(text) > 400:
        text = text[:400] + " ..."
    named = [k for k in values if re.search(rf"\b{re.escape(k)}\b", text)]
    if not named:
        quoted = [k for k, v in values.items() if isinstance(v, str) and v and (f"'{v}'" in text or f"{v} is" in text)]
        if len(quoted) == 1:
            return f"trainer.{quoted[0]}={values[quoted[0]]!r}: {text}"
    return text

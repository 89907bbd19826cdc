"""Fine-tuning methods behind ``peft=``: full, freeze, the LoRA family, AdaLoRA, IA3, prompt learning and QLoRA.

A stage loads its model with ``load_kwargs`` (4-bit weights for QLoRA), then calls ``prepare(model, cfg.peft,
stage=...)`` before building its trainer: that checks the method suits the stage, freezes parameters for
``freeze``, and returns the peft config to hand to TRL (None when no adapter is added). ``callbacks`` gives the
trainer callbacks a method needs (AdaLoRA's rank budget schedule).
"""

from __future__ import annotations

import logging
from functools import cache

from omegaconf import DictConfig

from alignment.config import PeftMethod as M
from alignment.errors import AlignmentError

log = logging.getLogger("alignment")

LORA_FAMILY = (M.lora, M.dora, M.rslora, M.adalora, M.ia3, M.qlora)
PROMPT_LEARNING = (M.prompt_tuning, M.p_tuning, M.prefix_tuning)
METHODS = tuple(M)  # every method once (the alias none is full)

# Which methods each stage trains with. Prompt learning prepends virtual tokens, which only SFT's loss accounts for;
# PPO's and GRPO's references are the policy with its adapter disabled, which needs a LoRA-style adapter, and
# AdaLoRA's budget schedule and freeze are only wired into the HF-Trainer stages.
_OFFLINE = (M.full, M.freeze, *LORA_FAMILY)
_ONLINE = (M.full, M.lora, M.dora, M.rslora)
STAGE_METHODS: dict[str, tuple[M, ...]] = {
    "sft": METHODS,
    "dpo": _OFFLINE,
    "kto": _OFFLINE,
    "orpo": _OFFLINE,
    "rm": _OFFLINE,
    "grpo": _ONLINE,
    "rloo": _ONLINE,
    "ppo": _ONLINE,
}
CLASSIFIER_HEADS = ("score", "classifier")
# Stages whose TRL trainer refuses an adapter on lm_head (it reads lm_head.weight itself).
LM_HEAD_FROZEN_STAGES = ("kto", "grpo", "rloo")


def method_of(peft_cfg: DictConfig) -> M:
    """``peft.method`` as its enum member. The schema already refuses other values; a config built without it (a
    plain dict) gets the same refusal here."""
    try:
        return M[str(peft_cfg.method)]
    except KeyError:
        raise AlignmentError(
            f"peft.method='{peft_cfg.method}' is unknown; choose one of: {', '.join(METHODS)}"
        ) from None


def validate(peft_cfg: DictConfig, stage: str) -> None:
    """Fail before any training when ``peft.method`` is unknown, unsupported by ``stage``, or needs missing hardware."""
    validate_values(peft_cfg, stage)
    if method_of(peft_cfg) == M.qlora:
        _check_qlora_available()


def validate_values(peft_cfg: DictConfig, stage: str | None = None) -> None:
    """The ``peft.*`` values the chosen method reads, checked without importing a library (the CLI's preflight):
    method name and stage, ranks, alpha, dropout in [0, 1), target module names, virtual tokens, prompt init."""
    method = method_of(peft_cfg)
    allowed = STAGE_METHODS.get(stage, METHODS) if stage else METHODS
    if method not in allowed:
        raise AlignmentError(
            f"peft={method} does not work with stage={stage}; for stage={stage} use one of: {', '.join(allowed)}"
        )
    if method in LORA_FAMILY and method != M.ia3:
        _check_int(peft_cfg, "r", 1)
        _check_int(peft_cfg, "alpha", 1)
        dropout = peft_cfg.get("dropout")
        if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise AlignmentError(f"peft.dropout must be a probability in [0, 1), got {dropout}")
        if method == M.adalora and peft_cfg.get("init_r") is not None:
            _check_int(peft_cfg, "init_r", 1)
    if method in LORA_FAMILY:
        _check_target_names(peft_cfg.get("target_modules"))
        targets = [str(t) for t in peft_cfg.get("target_modules") or []]
        if stage in LM_HEAD_FROZEN_STAGES and any(t == "lm_head" or t.endswith(".lm_head") for t in targets):
            raise AlignmentError(
                f"peft.target_modules: lm_head cannot take an adapter in stage={stage}: TRL computes its "
                "log-probabilities from lm_head.weight directly, so the adapter would never train; leave lm_head out"
            )
    if method in PROMPT_LEARNING:
        _check_int(peft_cfg, "num_virtual_tokens", 1)
    if method == M.p_tuning:
        _check_int(peft_cfg, "encoder_hidden_size", 1)
    if method == M.prompt_tuning:
        init = str(peft_cfg.get("prompt_init")).lower()
        if init not in ("random", "text"):
            raise AlignmentError(f"peft.prompt_init='{peft_cfg.prompt_init}' must be random or text")
        if init == "text" and not peft_cfg.get("prompt_init_text"):
            raise AlignmentError(
                "peft.prompt_init=text needs peft.prompt_init_text='<words to start the prompt from>'"
            )
    if method == M.freeze and peft_cfg.get("freeze_trainable_layers") == 0:
        raise AlignmentError(
            "peft.freeze_trainable_layers=0 trains no layer; give N > 0 (the last N layers) or N < 0 (the first |N|)"
        )


def _check_int(peft_cfg: DictConfig, key: str, least: int) -> None:
    value = peft_cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise AlignmentError(f"peft.{key} must be a positive integer, got {value}")


def _check_target_names(targets) -> None:
    names = [targets] if isinstance(targets, str) else list(targets or [])
    if not names or any(not isinstance(n, str) or not n.strip() for n in names):
        raise AlignmentError(
            f"peft.target_modules must be a list of module names, e.g. [q_proj,v_proj], or [all-linear]; got {targets}"
        )
    if "all-linear" in names and len(names) > 1:
        raise AlignmentError(
            f"peft.target_modules={names}: all-linear already means every linear layer; give it alone or list names"
        )


def check_target_modules(model, peft_cfg: DictConfig) -> None:
    """Fail, naming ``peft.target_modules``, when a listed name matches no layer of the loaded model that PEFT can
    adapt (peft itself fails later with a traceback, or skips a misspelt name beside a good one)."""
    targets = [str(t) for t in (peft_cfg.get("target_modules") or [])]
    if method_of(peft_cfg) not in LORA_FAMILY or not targets or targets == ["all-linear"]:
        return
    adaptable = {name for name, module in model.named_modules() if name and _adaptable(module)}
    shown = ", ".join(sorted(linear_layer_names(model))[:8])
    # A reward or value model's head trains in full (peft's modules_to_save) and is never an adapter's target.
    heads = CLASSIFIER_HEADS if task_type_of(model) == "SEQ_CLS" else ()
    for target in targets:
        if target.rpartition(".")[2] in heads:
            raise AlignmentError(
                f"peft.target_modules: '{target}' is the classifier head of this reward/value model, which trains in "
                f"full beside the adapter (it cannot be an adapter target); name other layers, e.g. {shown}"
            )
        if any(n == target or n.endswith(f".{target}") for n in adaptable):
            continue
        other = next((n for n, _ in model.named_modules() if n == target or n.endswith(f".{target}")), None)
        if other is not None:
            kind = type(model.get_submodule(other)).__name__
            raise AlignmentError(
                f"peft.target_modules: '{target}' names a {kind}, not a layer that peft={peft_cfg.method} can adapt; "
                f"use linear layer names, e.g. {shown} (or [all-linear])"
            )
        raise AlignmentError(
            f"peft.target_modules: no layer of the model is named '{target}'; its linear layers are named {shown} "
            "(or use [all-linear])"
        )


def _adaptable(module) -> bool:
    import torch

    kinds: tuple[type, ...] = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    return isinstance(module, kinds) or type(module).__name__ == "Conv1D"  # transformers' GPT-2 style linear


def linear_layer_names(model) -> set[str]:
    """The distinct last name parts of the model's linear layers (q_proj, up_proj, score, ...)."""
    import torch

    return {
        name.rpartition(".")[2]
        for name, module in model.named_modules()
        if name and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D")
    }


def _check_qlora_available() -> None:
    import torch

    if not torch.cuda.is_available():
        raise AlignmentError(
            "peft=qlora loads 4-bit NF4 weights with bitsandbytes, which needs a CUDA GPU, and none is available; "
            "use peft=lora on this machine, or run on a machine with an NVIDIA GPU"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise AlignmentError(
            "peft=qlora needs the bitsandbytes package: pip install 'alignment[qlora]' (or pip install bitsandbytes)"
        ) from err


def load_kwargs(peft_cfg: DictConfig) -> dict:
    """Extra ``from_pretrained`` arguments of a method: QLoRA's 4-bit NF4 quantisation, nothing for the others."""
    if method_of(peft_cfg) != M.qlora:
        return {}
    _check_qlora_available()
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute,
    )
    return {"quantization_config": quant, "dtype": compute}


def prepare(model, peft_cfg: DictConfig, stage: str):
    """Check the method against ``stage``, freeze what ``freeze`` leaves out, and return the peft config or None.

    The task type follows the model: a sequence classifier (reward or value model) gets ``SEQ_CLS``, whose score
    head peft keeps trainable (``modules_to_save``).
    """
    validate(peft_cfg, stage)
    method = method_of(peft_cfg)
    if hasattr(model, "peft_config"):  # only prompt-learning adapters stay unmerged on load, and they load frozen
        base = next(iter(model.peft_config.values())).base_model_name_or_path
        raise AlignmentError(
            f"the start model is a saved prompt-learning adapter on '{base}': it can generate and be evaluated but "
            f"not trained further; start stage={stage} from its base (model.path={base}) or from a merged model"
        )
    if method == M.freeze:
        from alignment.freezing import freeze

        freeze(model, peft_cfg)
        return None
    check_target_modules(model, peft_cfg)  # right after the model loads, before any data work
    if method == M.qlora:
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return peft_config(peft_cfg, task_type=task_type_of(model), model=model)


def task_type_of(model) -> str:
    """``SEQ_CLS`` for a sequence classifier, else ``CAUSAL_LM``."""
    return "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


def peft_config(peft_cfg: DictConfig, task_type: str = "CAUSAL_LM", model=None):
    """The peft config of ``peft.method``, or None for methods that add no adapter (full, freeze)."""
    method = method_of(peft_cfg)
    if method in (M.full, M.freeze):
        return None
    targets = list(peft_cfg.target_modules)
    target_modules = "all-linear" if targets == ["all-linear"] else targets
    if method in (M.lora, M.dora, M.rslora, M.qlora):
        from peft import LoraConfig

        return LoraConfig(
            r=int(peft_cfg.r),
            lora_alpha=int(peft_cfg.alpha),
            lora_dropout=float(peft_cfg.dropout),
            target_modules=target_modules,
            use_dora=method == M.dora,
            use_rslora=method == M.rslora,
            task_type=task_type,
        )
    if method == M.adalora:
        from peft import AdaLoraConfig

        init_r = int(peft_cfg.init_r or round(1.5 * int(peft_cfg.r)))
        # total_step is a placeholder: AdaLoraSchedule sets it from the trainer's step count when training begins.
        return AdaLoraConfig(
            init_r=max(init_r, int(peft_cfg.r)),
            target_r=int(peft_cfg.r),
            lora_alpha=int(peft_cfg.alpha),
            lora_dropout=float(peft_cfg.dropout),
            target_modules=target_modules,
            total_step=100,
            tinit=10,
            tfinal=20,
            deltaT=1,
            task_type=task_type,
        )
    if method == M.ia3:
        from peft import IA3Config

        # IA3 scales keys, values and the MLP's input; "all-linear" means peft's own per-architecture default here.
        return IA3Config(target_modules=None if targets == ["all-linear"] else targets, task_type=task_type)
    return _prompt_learning_config(method, peft_cfg, task_type, model)


def _prompt_learning_config(method: str, peft_cfg: DictConfig, task_type: str, model):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

    tokens = int(peft_cfg.num_virtual_tokens)
    if method == M.prefix_tuning:
        return PrefixTuningConfig(num_virtual_tokens=tokens, task_type=task_type)
    if method == M.p_tuning:
        return PromptEncoderConfig(
            num_virtual_tokens=tokens, encoder_hidden_size=int(peft_cfg.encoder_hidden_size), task_type=task_type
        )
    init = str(peft_cfg.prompt_init).lower()
    if init == "random":
        return PromptTuningConfig(num_virtual_tokens=tokens, prompt_tuning_init="RANDOM", task_type=task_type)
    if init != "text":
        raise AlignmentError(f"peft.prompt_init='{peft_cfg.prompt_init}' must be random or text")
    text = peft_cfg.prompt_init_text
    if not text:
        raise AlignmentError("peft.prompt_init=text needs peft.prompt_init_text='<words to start the prompt from>'")
    source = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
    if not source:
        raise AlignmentError("peft.prompt_init=text needs the model's tokenizer; use peft.prompt_init=random")
    return PromptTuningConfig(
        num_virtual_tokens=tokens,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text=str(text),
        tokenizer_name_or_path=str(source),
        task_type=task_type,
    )


# -- training-time helpers -----------------------------------------------------------------------------------------
def callbacks(peft_cfg: DictConfig) -> list:
    """Trainer callbacks the method needs: AdaLoRA's rank reallocation; none for the others."""
    return [adalora_schedule_class()()] if method_of(peft_cfg) == M.adalora else []


def _adalora_schedule(total: int) -> dict[str, int]:
    """AdaLoRA's phases for ``total`` optimiser steps: 10% warm-up at full rank, 20% final at the target budget."""
    total = max(int(total), 3)
    tinit = max(1, total // 10)
    tfinal = max(1, total // 5)
    tfinal = min(tfinal, total - tinit - 1)
    return {"total_step": total, "tinit": tinit, "tfinal": tfinal, "deltaT": max(1, (total - tinit - tfinal) // 10)}


@cache
def adalora_schedule_class() -> type:
    """The AdaLoRA schedule callback class (built on first use: importing transformers' Trainer takes seconds, and
    the CLI's checks import this module)."""
    from transformers import TrainerCallback

    class AdaLoraSchedule(TrainerCallback):
        """Sets AdaLoRA's step schedule from the trainer's real step count and reallocates ranks after each step.

        peft's AdaLoRA needs ``total_step`` up front and ``update_and_allocate`` after every optimiser step; the HF
        Trainer does neither, and the step count is only known once the trainer has sized its dataloader.
        """

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            tuner = _adalora_tuner(model)
            if tuner is None:
                return
            config = tuner.peft_config[tuner.trainable_adapter_name]
            schedule = _adalora_schedule(state.max_steps)
            for key, value in schedule.items():
                setattr(config, key, value)
            tuner.rankallocator.set_total_step(config.total_step)
            log.info("adalora schedule: %s", schedule)

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            # after optimizer.step and before zero_grad, as peft requires; global_step is this step's index
            tuner = _adalora_tuner(model)
            if tuner is not None:
                tuner.update_and_allocate(state.global_step)

    return AdaLoraSchedule


def __getattr__(name: str):
    if name == "AdaLoraSchedule":
        return adalora_schedule_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _adalora_tuner(model):
    from peft.tuners.adalora import AdaLoraModel

    inner = getattr(model, "module", model)  # DDP wrapper
    tuner = getattr(inner, "base_model", None)
    return tuner if isinstance(tuner, AdaLoraModel) else None


# -- counting and saving -------------------------------------------------------------------------------------------
def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; with peft the total includes the frozen base model."""
    # A ZeRO-3-partitioned parameter holds a shard (often empty); ds_numel is its whole size.
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    return trainable, total


def can_merge(model) -> bool:
    """Whether a peft model's adapter folds into its base weights (prompt-learning adapters do not)."""
    config = getattr(model, "peft_config", None)
    if not config:
        return False
    return not any(c.is_prompt_learning for c in config.values()) and hasattr(model, "merge_and_unload")

"""Load tokenizers and models (causal LM, reward / value heads); adapters live in ``alignment.adapters``.

The tiny offline model and any Hugging Face model go through the same ``from_pretrained`` path: ``model.path`` is a
Hub id or a local dir, and with ``model.name=tiny`` and no path the cached tiny model is built first.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from alignment.errors import AlignmentError

log = logging.getLogger(__name__)

_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DTYPES |= {"float16": "float16", "fp16": "float16"}


def resolve_model_path(model_cfg: DictConfig) -> str:
    """The dir or Hub id to load: ``model.path`` if set, else the (built on demand) tiny model."""
    if model_cfg.path:
        path = str(model_cfg.path)
        local = Path(path).expanduser()
        if local.exists():
            return str(_model_dir_of(local))
        if path.startswith((".", "/", "~")) or path.count("/") > 1:
            raise AlignmentError(
                f"model.path '{path}' does not exist. Give a local model dir (with config.json) or a Hub id "
                "like 'Qwen/Qwen2.5-0.5B-Instruct'."
            )
        return path
    if model_cfg.name != "tiny":
        raise AlignmentError(f"model '{model_cfg.name}' needs model.path=<hub id or local dir>")
    from alignment.launch import barrier, is_main_process
    from alignment.tiny_model import tiny_model_dir

    # Launched ranks: only rank 0 builds it (transformers writes weights on rank 0 only); the others wait, then load.
    if is_main_process():
        tiny_model_dir(rebuild=bool(model_cfg.get("rebuild", False)))
    barrier()
    return str(tiny_model_dir())


def _model_dir_of(path: Path) -> Path:
    """Accept a stage dir (``PATH/sft``) or run dir as well as the model dir inside it, from finished stages only."""
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        model_dir = path
    elif (path / "model").is_dir():
        model_dir = path / "model"
    else:
        raise AlignmentError(
            f"'{path}' holds no model: expected config.json or adapter_config.json there, or a model/ dir"
        )
    # A stage's metrics.json is written last: without it, its model/ belongs to a run that was cut short.
    stage = model_dir.parent
    if model_dir.name == "model" and (stage / "run_state.json").exists() and not (stage / "metrics.json").exists():
        raise AlignmentError(
            f"the stage in '{stage}' has not finished (no metrics.json: it was interrupted or is still running); "
            "re-run that stage to complete it, then use its model"
        )
    return model_dir


def _common_kwargs(model_cfg: DictConfig) -> dict:
    dtype = _DTYPES.get(str(model_cfg.get("dtype", "auto")))
    if dtype is None:
        raise AlignmentError(f"model.dtype='{model_cfg.dtype}' is not one of {sorted(_DTYPES)}")
    kwargs = {"trust_remote_code": bool(model_cfg.get("trust_remote_code", False)), "dtype": dtype}
    if model_cfg.get("attn_implementation"):
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    return kwargs


def _load_error(path: str, err: Exception) -> AlignmentError:
    return AlignmentError(f"could not load model '{path}': {err.__class__.__name__}: {str(err).splitlines()[0]}")


def load_tokenizer(path: str, model_cfg: DictConfig | None = None):
    """Load the tokenizer; give it a pad token (left padding is set where generation needs it)."""
    from transformers import AutoTokenizer

    trust = bool(model_cfg.get("trust_remote_code", False)) if model_cfg is not None else False
    base = adapter_base(path) or path
    src = path if (Path(path) / "tokenizer_config.json").exists() else base
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust)
    except (OSError, ValueError) as err:
        raise _load_error(src, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise AlignmentError(
            f"the tokenizer of '{src}' has no chat template; use a chat/instruct model or set one in its "
            "tokenizer_config.json"
        )
    return tokenizer


def adapter_base(path: str) -> str | None:
    """The base model id of a saved PEFT adapter dir, or None for a plain model."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.exists():
        return None
    return json.loads(cfg.read_text(encoding="utf-8"))["base_model_name_or_path"]


def load_causal_lm(path: str, model_cfg: DictConfig, peft_cfg: DictConfig | None = None):
    """A causal LM from a model dir, Hub id or saved adapter dir; ``peft_cfg`` adds its load settings (QLoRA).

    A saved LoRA-style adapter is merged into its base on load, so the next stage trains (and takes its reference
    from) a plain model; a prompt-learning adapter, which cannot merge, stays a (frozen) peft model.
    """
    from transformers import AutoModelForCausalLM

    kwargs = _common_kwargs(model_cfg) | _adapter_load_kwargs(peft_cfg)
    try:
        base = adapter_base(path)
        if base is not None:
            from peft import PeftConfig, PeftModel

            prompt_learning = PeftConfig.from_pretrained(path).is_prompt_learning  # peft loads these frozen only
            model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
            model = PeftModel.from_pretrained(model, path, is_trainable=not prompt_learning)
            return model if prompt_learning else model.merge_and_unload()
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(path, err) from err


def _adapter_load_kwargs(peft_cfg: DictConfig | None) -> dict:
    if peft_cfg is None:
        return {}
    from alignment.adapters import load_kwargs

    return load_kwargs(peft_cfg)


def load_sequence_classifier(path: str, model_cfg: DictConfig, tokenizer=None, peft_cfg: DictConfig | None = None):
    """A one-label sequence classifier (reward or value model), from a reward model or any causal LM."""
    from transformers import AutoModelForSequenceClassification

    kwargs = _common_kwargs(model_cfg) | _adapter_load_kwargs(peft_cfg)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(path, err) from err
    if tokenizer is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model

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
# Tokens meant for padding, tried (after unk) before adding one: Llama 3.1's, then the usual names.
_PAD_TOKENS = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]", "<|padding|>")
_NEW_PAD = "<|pad|>"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_LOGGED_PADS: set[tuple[str, str]] = set()


def resolve_model_path(model_cfg: DictConfig) -> str:
    """The dir or Hub id to load: ``model.path`` if set, else the (built on demand) tiny model."""
    if model_cfg.path:
        return locate_model(model_cfg.path, "model.path")
    if model_cfg.name != "tiny":
        raise AlignmentError(f"model '{model_cfg.name}' needs model.path=<hub id or local dir>")
    from alignment.distributed import barrier, is_main_process
    from alignment.tiny_model import tiny_model_dir

    # Launched ranks: only rank 0 builds it (transformers writes weights on rank 0 only); the others wait, then load.
    if is_main_process():
        tiny_model_dir(rebuild=bool(model_cfg.get("rebuild", False)))
    barrier()
    return str(tiny_model_dir())


def locate_model(path: str | Path, key: str) -> str:
    """The model dir or Hub id that config key ``key`` (``model.path``, ``ref_model``, ``value_model``,
    ``reward.sources.N.path``) names: a finished stage dir (``RUN/rm``, whose model is ``RUN/rm/model``), a model dir,
    or a Hub id. Errors name ``key``."""
    path = str(path)
    local = Path(path).expanduser()
    if local.exists():
        return str(_model_dir_of(local, key))
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise AlignmentError(
            f"{key} '{path}' does not exist. Give a stage dir of a finished run (RUN/sft), a local model dir (with "
            "config.json) or a Hub id like 'Qwen/Qwen2.5-0.5B-Instruct'."
        )
    return path


def _model_dir_of(path: Path, key: str = "model.path") -> Path:
    """Accept a stage dir (``PATH/sft``) or run dir as well as the model dir inside it, from finished stages only."""
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        model_dir = path
    elif (path / "model").is_dir():
        model_dir = path / "model"
    else:
        raise AlignmentError(
            f"{key} '{path}' holds no model: expected config.json or adapter_config.json there, or a model/ dir"
        )
    # A stage's metrics.json is written last: without it, its model/ belongs to a run that was cut short.
    stage = model_dir.parent
    if model_dir.name == "model" and (stage / "run_state.json").exists() and not (stage / "metrics.json").exists():
        raise AlignmentError(
            f"{key}: the stage in '{stage}' has not finished (no metrics.json: it was interrupted or is still "
            "running); re-run that stage to complete it, then use its model"
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
    """Load the tokenizer and give it a pad token that is never eos or an end-of-turn token (see :func:`set_pad_token`).

    Left padding is set where generation needs it.
    """
    tokenizer, src = _read_tokenizer(path, model_cfg)
    if not getattr(tokenizer, "chat_template", None):
        raise AlignmentError(
            f"the tokenizer of '{src}' has no chat template; use a chat/instruct model or set one in its "
            "tokenizer_config.json"
        )
    set_pad_token(tokenizer, src)
    return tokenizer


def _read_tokenizer(path: str, model_cfg: DictConfig | None):
    from transformers import AutoTokenizer

    trust = bool(model_cfg.get("trust_remote_code", False)) if model_cfg is not None else False
    src = _tokenizer_source(path)
    try:
        return AutoTokenizer.from_pretrained(src, trust_remote_code=trust), src
    except (OSError, ValueError) as err:
        raise _load_error(src, err) from err


def _tokenizer_source(path: str) -> str:
    """Where a model's tokenizer is: its own dir, or for an adapter dir without one, the base model's."""
    return path if (Path(path) / "tokenizer_config.json").exists() else adapter_base(path) or path


def set_pad_token(tokenizer, source: str = "") -> str | None:
    """Make sure padding never reads as a real token that ends a sequence; returns the pad token it chose, or None.

    Sequence-classification pooling (transformers) scores the last token that is not the pad id: with pad = eos =
    end-of-turn (Llama 3, Mistral) a reward model would be read one token before the end-of-turn. So a missing pad,
    or one that is eos or an end-of-turn token, is replaced by an unused special token already in the vocabulary
    (unk, or one meant for padding), and only where none exists by a new ``<|pad|>`` token; the model loaders then
    grow the embeddings to cover it (:func:`match_tokenizer`).
    """
    from alignment.data.encode import turn_end_token_ids

    ends = set(turn_end_token_ids(tokenizer))
    if tokenizer.pad_token is not None and tokenizer.pad_token_id not in ends:
        return None
    vocab = tokenizer.get_vocab()
    found = [t for t in (tokenizer.unk_token, *_PAD_TOKENS) if t and t in vocab and vocab[t] not in ends]
    was = tokenizer.pad_token
    if found:
        tokenizer.pad_token = found[0]
        how = "an unused token of the vocabulary"
    else:
        tokenizer.add_special_tokens({"pad_token": _NEW_PAD})
        how = "a new special token (the model's embeddings grow by one row to hold it)"
    key = (source, tokenizer.pad_token)
    if key not in _LOGGED_PADS:
        _LOGGED_PADS.add(key)
        why = "has no pad token" if was is None else f"pads with {was!r}, which also ends a turn or the text"
        log.info(
            "The tokenizer%s %s; padding with %r (id %d), %s.",
            f" of {source!r}" if source else "",
            why,
            tokenizer.pad_token,
            tokenizer.pad_token_id,
            how,
        )
    return tokenizer.pad_token


def match_tokenizer(model, tokenizer) -> None:
    """Fit a loaded model to its tokenizer: embeddings that hold every token id, and the tokenizer's pad id in the
    model's config and generation config (sequence-classification pooling reads the config's)."""
    embeddings = model.get_input_embeddings()
    if embeddings is not None and len(tokenizer) > embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    pad = tokenizer.pad_token_id
    if pad is None:
        return
    model.config.pad_token_id = pad
    text_config = model.config.get_text_config()
    if text_config is not model.config:
        text_config.pad_token_id = pad
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.pad_token_id = pad


def _own_tokenizer(path: str, model_cfg: DictConfig | None):
    """The tokenizer stored with a model, with the pad policy applied; None when it has none that loads."""
    local = Path(_tokenizer_source(path))
    if local.is_dir() and not any((local / name).is_file() for name in _TOKENIZER_FILES):
        return None  # transformers would build an empty tokenizer from config.json alone
    try:
        tokenizer, src = _read_tokenizer(path, model_cfg)
    except AlignmentError:
        return None
    set_pad_token(tokenizer, src)
    return tokenizer


def adapter_base(path: str) -> str | None:
    """The base model id of a saved PEFT adapter dir, or None for a plain model."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.exists():
        return None
    from alignment.lineage import local_adapter_base

    # The config records the base as the user gave it (maybe relative to where they ran); lineage.json, the path
    # this machine loaded it from.
    return local_adapter_base(path) or json.loads(cfg.read_text(encoding="utf-8"))["base_model_name_or_path"]


def load_causal_lm(path: str, model_cfg: DictConfig, peft_cfg: DictConfig | None = None, tokenizer=None):
    """A causal LM from a model dir, Hub id or saved adapter dir; ``peft_cfg`` adds its load settings (QLoRA).

    A saved LoRA-style adapter is merged into its base on load, so the next stage trains (and takes its reference
    from) a plain model; a prompt-learning adapter, which cannot merge, stays a (frozen) peft model. The model is fit
    to ``tokenizer`` (by default the one stored with it, pad policy applied): see :func:`match_tokenizer`.
    """
    from transformers import AutoModelForCausalLM

    kwargs = _common_kwargs(model_cfg) | _adapter_load_kwargs(peft_cfg)
    tokenizer = tokenizer if tokenizer is not None else _own_tokenizer(path, model_cfg)
    try:
        base = adapter_base(path)
        if base is not None:
            from peft import PeftConfig, PeftModel

            prompt_learning = PeftConfig.from_pretrained(path).is_prompt_learning  # peft loads these frozen only
            model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
            if tokenizer is not None:  # before the adapter: it was trained on the grown embeddings
                match_tokenizer(model, tokenizer)
            model = PeftModel.from_pretrained(model, path, is_trainable=not prompt_learning)
            return model if prompt_learning else model.merge_and_unload()
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(path, err) from err
    if tokenizer is not None:
        match_tokenizer(model, tokenizer)
    return model


def _adapter_load_kwargs(peft_cfg: DictConfig | None) -> dict:
    if peft_cfg is None:
        return {}
    from alignment.adapters import load_kwargs

    return load_kwargs(peft_cfg)


def load_sequence_classifier(path: str, model_cfg: DictConfig, tokenizer=None, peft_cfg: DictConfig | None = None):
    """A one-label sequence classifier (reward or value model), from a reward model or any causal LM.

    Fit to ``tokenizer`` (by default the one stored with it) like :func:`load_causal_lm`: its pooling then reads the
    last token that is not padding, which the pad policy keeps from being an end-of-turn token.
    """
    from transformers import AutoModelForSequenceClassification

    kwargs = _common_kwargs(model_cfg) | _adapter_load_kwargs(peft_cfg)
    tokenizer = tokenizer if tokenizer is not None else _own_tokenizer(path, model_cfg)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(path, err) from err
    if tokenizer is not None:
        match_tokenizer(model, tokenizer)
    return model

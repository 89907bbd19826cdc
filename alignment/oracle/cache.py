"""Oracle evaluations kept on disk, so that an identical evaluation is read back instead of sampled again.

A rerun of a stage from the same start model, or a pipeline step whose "before" is the previous step's "after",
evaluates exactly what an earlier evaluation did. The key is a sha256 of everything that decides the replies and
their scores: the model's parameters and buffers (bytes), its class and config, the tokenizer (template, vocabulary,
special and stop ids), the resolved ``oracle_eval`` settings, the prompt rows, ``data.max_length``, the torch and
transformers versions, the device and dtype, and the source of the scorer and the sampler. One JSON file per key
under ``<cache_root>/oracle/`` holds the scores and the samples file's text. Single process only: under ZeRO-3 or
several ranks the evaluation always samples. A cache that cannot be read or written costs only its speed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alignment.paths import PACKAGE_DIR, cache_root

log = logging.getLogger("alignment")

FORMAT = 1  # the layout of a cache file; part of the key
# The scorer and the sampler: a change to their code gives new keys.
SOURCES = ("oracle/rules.py", "oracle/evaluate.py", "oracle/cache.py", "generation.py")
# Config entries that name where a model came from or how it trains, not what it computes.
_CONFIG_NOISE = ("_name_or_path", "transformers_version", "use_cache", "architectures", "torch_dtype", "dtype")
_warned = False


def cache_dir() -> Path:
    return cache_root() / "oracle"


def usable(model, cfg: DictConfig) -> bool:
    """``oracle_eval.cache`` is on and this is a single process with the whole model in it."""
    from alignment.distributed import is_zero3_model, world_size

    return bool(cfg.oracle_eval.get("cache", True)) and world_size() <= 1 and not is_zero3_model(model)


def _warn_once(what: str, err: BaseException) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("oracle evaluation cache: %s (%s: %s); evaluating without it", what, type(err).__name__, err)


@cache
def _source_digest() -> str:
    h = hashlib.sha256()
    for rel in SOURCES:
        h.update(rel.encode() + b"\0" + (PACKAGE_DIR / rel).read_bytes() + b"\0")
    return h.hexdigest()


def hash_weights(model, h) -> None:
    """Feed every parameter and buffer (name, dtype, shape, raw bytes) to ``h``; bf16 and other dtypes numpy lacks
    go through a byte view, so the bytes are exactly the tensor's."""
    import torch

    for kind, named in (("param", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if tensor.device.type == "meta":
                raise ValueError(f"{name} is on the meta device (offloaded or not loaded)")
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{kind}:{name}:{flat.dtype}:{tuple(tensor.shape)}\0".encode())
            h.update(flat.view(torch.uint8).numpy())


def _model_identity(model) -> dict[str, Any]:
    config = getattr(model, "config", None)
    settings = config.to_dict() if config is not None else {}
    settings = {k: v for k, v in settings.items() if k not in _CONFIG_NOISE}
    peft = getattr(model, "peft_config", None)
    return {
        "class": type(model).__name__,
        "config": settings,
        "attn": getattr(config, "_attn_implementation", None),
        "peft": {name: c.to_dict() for name, c in peft.items()} if isinstance(peft, dict) else None,
    }


def _tokenizer_identity(tokenizer, model) -> dict[str, Any]:
    from alignment.generation import stop_token_ids

    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    return {
        "class": type(tokenizer).__name__,
        "chat_template": tokenizer.chat_template,
        "len": len(tokenizer),
        "vocab": vocab,
        "special": sorted(tokenizer.all_special_ids),
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "stop": stop_token_ids(tokenizer, model),
    }


def _runtime(model) -> dict[str, Any]:
    import torch
    import transformers

    param = next(model.parameters())
    device = param.device
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": str(param.dtype),
    }


def evaluation_key(model, tokenizer, cfg: DictConfig, rows) -> str:
    """The sha256 that names this evaluation: equal keys sample the same replies and give the same scores."""
    h = hashlib.sha256()
    settings = OmegaConf.to_container(cfg.oracle_eval, resolve=True)
    settings.pop("cache", None)
    parts = {
        "format": FORMAT,
        "code": _source_digest(),
        "oracle_eval": settings,  # its seed is the sampling seed
        "max_length": cfg.data.max_length,
        "prompts": {"prompt": rows["prompt"], "oracle": rows["oracle"]},
        "tokenizer": _tokenizer_identity(tokenizer, model),
        "runtime": _runtime(model),
        "model": _model_identity(model),
    }
    h.update(json.dumps(parts, sort_keys=True, default=repr).encode())
    hash_weights(model, h)
    return h.hexdigest()


def key_for(model, tokenizer, cfg: DictConfig, rows) -> str | None:
    """The evaluation's key, or None when the cache is off here or the key cannot be computed."""
    if not usable(model, cfg):
        return None
    try:
        return evaluation_key(model, tokenizer, cfg, rows)
    except Exception as err:  # e.g. weights that cannot be read back; the evaluation itself goes on
        _warn_once("could not compute the key", err)
        return None


def load(key: str) -> tuple[dict[str, float], str] | None:
    """The cached ``(scores, samples text)`` for ``key``, or None on a miss (a missing or unreadable file)."""
    path = cache_dir() / f"{key}.json"
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        scores, samples = entry["scores"], entry["samples"]
        if entry["key"] != key or entry["format"] != FORMAT or not isinstance(samples, str):
            raise ValueError("the entry does not match its key")
        if not isinstance(scores, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) for k, v in scores.items()
        ):
            raise ValueError("the scores are not a mapping of names to numbers")
    except Exception as err:
        _warn_once(f"could not read {path}", err)
        return None
    return scores, samples


def store(key: str, scores: dict[str, float], samples: str) -> None:
    """Write the entry atomically (two processes writing the same key both leave a whole file)."""
    from alignment.atomic import write_atomic

    entry = {"format": FORMAT, "key": key, "scores": scores, "samples": samples}
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_atomic(cache_dir() / f"{key}.json", json.dumps(entry, ensure_ascii=False))
    except Exception as err:
        _warn_once(f"could not write to {cache_dir()}", err)

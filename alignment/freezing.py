"""``peft=freeze``: train only some decoder layers (and chosen modules), freezing the rest of the model."""

from __future__ import annotations

import logging
import re

from omegaconf import DictConfig

from alignment.adapters import CLASSIFIER_HEADS
from alignment.errors import AlignmentError

log = logging.getLogger("alignment")

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def freeze(model, peft_cfg: DictConfig) -> list[str]:
    """Train only some decoder layers (LLaMA-Factory semantics) and return the names of the trainable parameters.

    ``freeze_trainable_layers``: N > 0 trains the last N layers, N < 0 the first |N|. ``freeze_trainable_modules``:
    ``all`` or comma-separated module names inside those layers (``mlp,self_attn``). ``freeze_extra_modules``:
    comma-separated modules outside the layers that train too (``embed_tokens,norm``). A classifier head always trains.
    """
    n_layers = _num_layers(model)
    n = int(peft_cfg.freeze_trainable_layers)
    if n == 0 or abs(n) > n_layers:
        raise AlignmentError(
            f"peft.freeze_trainable_layers={n} must be between -{n_layers} and {n_layers} and not 0 "
            f"(the model has {n_layers} layers; positive = last N, negative = first N)"
        )
    layers = set(range(n_layers - n, n_layers)) if n > 0 else set(range(-n))
    modules = _split(peft_cfg.freeze_trainable_modules) or ["all"]
    extra = _split(peft_cfg.get("freeze_extra_modules"))
    names = [name for name, _ in model.named_parameters()]
    for wanted in [m for m in modules if m != "all"] + extra:
        if not any(f".{wanted}." in f".{name}" for name in names):
            raise AlignmentError(
                f"peft freeze: no parameter of the model matches module '{wanted}' "
                f"(freeze_trainable_modules / freeze_extra_modules); examples of names: {', '.join(names[:4])}"
            )
    trainable = []
    for name, param in model.named_parameters():
        match = _LAYER_INDEX.search(name)
        if match:
            keep = int(match.group(1)) in layers and ("all" in modules or any(f".{m}." in name for m in modules))
        else:
            keep = any(f".{m}." in f".{name}" for m in (*extra, *CLASSIFIER_HEADS))
        param.requires_grad_(keep)
        if keep:
            trainable.append(name)
    log.info("freeze: %d of %d parameter tensors train (layers %s)", len(trainable), len(names), sorted(layers))
    return trainable


def _num_layers(model) -> int:
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not n:
        indices = {int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER_INDEX.search(name))}
        n = max(indices) + 1 if indices else 0
    if not n:
        raise AlignmentError("peft=freeze cannot find the model's decoder layers; use peft=lora instead")
    return int(n)


def _split(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value if str(v).strip()]

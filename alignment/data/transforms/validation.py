"""Checking ``data.transforms`` before any data or model is loaded: names, parameters, values; errors name
``data.transforms[<i>]`` and what to do."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from alignment.data.transforms.catalog import REQUIRED, TRANSFORMS
from alignment.errors import AlignmentError


def _plain(value: Any) -> Any:
    """A Hydra/OmegaConf value as plain Python (dicts and lists)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with the project
        pass
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_params(name: str, params: dict) -> str | None:
    """What is wrong with a transform's parameters (None when nothing is)."""

    def prob(key: str) -> str | None:
        v = params.get(key)
        return None if _number(v) and 0 <= v <= 1 else f"{key} must be a probability in [0, 1], got {v!r}"

    def fraction(key: str) -> str | None:
        v = params.get(key)
        return None if _number(v) and 0 < v <= 1 else f"{key} must be a fraction in (0, 1], got {v!r}"

    if name == "flip":
        return prob("p")
    if name == "length_bias":
        return prob("q")
    if name == "subsample":
        if (params.get("n") is None) == (params.get("fraction") is None):
            return "give exactly one of n (rows to keep) or fraction (share to keep)"
        if params.get("n") is not None:
            n = params["n"]
            return None if isinstance(n, int) and not isinstance(n, bool) and n > 0 else f"n must be >= 1, got {n!r}"
        return fraction("fraction")
    if name == "margin_filter":
        source = params.get("source")
        if source not in ("oracle", "column", "model"):
            return f"source must be oracle, column or model, got {source!r}"
        if source == "model" and not params.get("path"):
            return "source: model needs path: <reward model dir or rm stage dir>"
        if source != "model" and params.get("path"):
            return f"path is only read with source: model (source is {source})"
        if source != "column" and params.get("column"):
            return f"column is only read with source: column (source is {source})"
        if (params.get("threshold") is None) == (params.get("top_fraction") is None):
            return "give exactly one of threshold (keep margin > threshold) or top_fraction (keep the largest)"
        if params.get("threshold") is not None and not _number(params["threshold"]):
            return f"threshold must be a number, got {params['threshold']!r}"
        if params.get("top_fraction") is not None:
            return fraction("top_fraction")
        bs = params.get("batch_size")
        return None if isinstance(bs, int) and bs > 0 else f"batch_size must be >= 1, got {bs!r}"
    if name == "mix":
        items = params.get("datasets")
        if not isinstance(items, list) or not items:
            return "datasets must be a non-empty list like [{path: other.jsonl, weight: 0.5}]"
        for j, item in enumerate(items):
            if not isinstance(item, Mapping) or not item.get("path"):
                return f"datasets[{j}] must be a mapping with a path, got {item!r}"
            unknown = set(item) - {"path", "weight", "format", "split"}
            if unknown:
                return f"datasets[{j}] has unknown key(s) {sorted(unknown)}; allowed: path, weight, format, split"
            w = item.get("weight", 1.0)
            if not (_number(w) and w >= 0):
                return f"datasets[{j}].weight must be a number >= 0, got {w!r}"
        bw = params.get("base_weight")
        if not (_number(bw) and bw >= 0):
            return f"base_weight must be a number >= 0, got {bw!r}"
        if bw + sum(item.get("weight", 1.0) for item in items) <= 0:
            return "the weights sum to 0; give at least one positive weight"
        n = params.get("n")
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
            return f"n must be >= 1, got {n!r}"
        return None
    if name == "decontaminate":
        if params.get("match") not in ("prompt", "last_user"):
            return f"match must be prompt or last_user, got {params.get('match')!r}"
    return None


def validate_transforms(specs: Any) -> list[dict]:
    """Check ``data.transforms`` without touching any data or model; return each item as ``{"name", **params}``
    with defaults filled. Raises AlignmentError naming ``data.transforms[<i>]`` and what to do."""
    specs = _plain(specs)
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise AlignmentError(
            f"data.transforms must be a list of mappings, got {specs!r}; e.g. 'data.transforms=[{{name: flip, p: 0.2}}]'"
        )
    out = []
    for i, item in enumerate(specs):
        where = f"data.transforms[{i}]"
        if not isinstance(item, Mapping) or "name" not in item:
            raise AlignmentError(
                f"{where} must be a mapping with a name, got {item!r}; e.g. {{name: flip, p: 0.2}} "
                f"(transforms: {', '.join(TRANSFORMS)})"
            )
        name = item["name"]
        if name not in TRANSFORMS:
            raise AlignmentError(
                f"{where}: unknown transform {name!r}; use one of {', '.join(TRANSFORMS)} (docs/experiments.md)"
            )
        spec = TRANSFORMS[name]
        given = {k: v for k, v in item.items() if k != "name"}
        unknown = sorted(set(given) - set(spec.params))
        if unknown:
            allowed = ", ".join(spec.params) or "none"
            raise AlignmentError(
                f"{where} ({name}): unknown parameter(s) {unknown}; {name} takes: {allowed} (e.g. {spec.example})"
            )
        missing = [k for k, v in spec.params.items() if v is REQUIRED and given.get(k) is None]
        if missing:
            raise AlignmentError(f"{where} ({name}): missing {', '.join(missing)}; e.g. {spec.example}")
        params = {k: (given[k] if given.get(k) is not None else v) for k, v in spec.params.items()}
        params = {k: v for k, v in params.items() if v is not REQUIRED}
        problem = _check_params(name, params)
        if problem:
            raise AlignmentError(f"{where} ({name}): {problem}; e.g. {spec.example}")
        out.append({"name": name, **params})
    return out

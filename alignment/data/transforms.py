"""The preference-data lab: seeded, recorded changes to the preference train rows (``data.transforms``).

Each transform maps canonical preference rows (``prompt``, ``chosen``, ``rejected`` and any extra columns) to new
rows and says which rows it changed and which it dropped. Rows are named by their row id: their index in the loaded
train rows before any transform. Transform ``i`` draws from its own random stream, seeded by ``(seed, i)``: a run
is reproducible, and two transforms never share a stream. Held-out rows are never transformed.

    data.transforms=[{name: flip, p: 0.2}]
    data.transforms=[{name: subsample, n: 2000},{name: dedupe}]
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from alignment.errors import AlignmentError

log = logging.getLogger("alignment.data")

RECORD_FILE = "transforms.json"
ROW_ID = "_row_id"


@dataclass
class Context:
    """What some transforms need besides the train rows: held-out prompts, the data settings, the seed."""

    seed: int = 0
    held_out: Dataset | None = None
    oracle_prompts: list | None = None  # the oracle-eval prompts, when they are the embedded ones
    data_format: str = "auto"
    on_error: str = "raise"
    max_length: int | None = None


@dataclass
class Result:
    """One transform's output rows and what it did to them (row ids)."""

    rows: list[dict]
    changed: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    added: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    """A transform: its function, its parameters (name -> default; ``REQUIRED`` marks the required ones), an example."""

    fn: Callable[[list[dict], dict, np.random.Generator, Context], Result]
    params: dict[str, Any]
    example: str


REQUIRED = object()


# ---------------------------------------------------------------------------------------------------------------
# Row helpers


def reply_text(reply: Any) -> str:
    """The text of a reply: its messages' contents joined (or the string itself)."""
    if isinstance(reply, str):
        return reply
    return "\n".join(str(m.get("content") or "") for m in reply or [])


def prompt_key(prompt: Any, match: str = "prompt") -> str:
    """A prompt as compared by ``decontaminate``: the whole prompt's text (or its last user turn), case and
    whitespace folded."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt or [])
    if match == "last_user":
        users = [m for m in messages if m.get("role") == "user"]
        messages = users[-1:] if users else messages[-1:]
    text = "\n".join(f"{m.get('role')}: {m.get('content') or ''}" for m in messages)
    return re.sub(r"\s+", " ", text).strip().casefold()


def side_columns(columns: list[str]) -> list[tuple[str, str]]:
    """Per-side columns that travel with their reply, e.g. (``score_chosen``, ``score_rejected``)."""
    pairs = []
    for name in columns:
        if name != "chosen" and "chosen" in name and (other := name.replace("chosen", "rejected")) in columns:
            pairs.append((name, other))
    return pairs


def swap_sides(row: dict) -> dict:
    """The pair with chosen and rejected exchanged, with their per-side columns; a ``margin`` column is negated."""
    out = dict(row)
    out["chosen"], out["rejected"] = row["rejected"], row["chosen"]
    for a, b in side_columns(list(row)):
        out[a], out[b] = row[b], row[a]
    if isinstance(row.get("margin"), int | float) and not isinstance(row.get("margin"), bool):
        out["margin"] = -row["margin"]
    return out


def transform_rng(seed: int, position: int) -> np.random.Generator:
    """The random stream of the transform at ``position``: independent of every other position's."""
    return np.random.default_rng([int(seed), int(position)])


# ---------------------------------------------------------------------------------------------------------------
# The transforms


def _flip(rows: list[dict], params: dict, rng: np.random.Generator, ctx: Context) -> Result:
    draws = rng.random(len(rows))
    out, changed = [], []
    for row, u in zip(rows, draws, strict=True):
        if u < params["p"]:
            out.append(swap_sides(row))
            changed.append(row[ROW_ID])
        else:
            out.append(row)
    return Result(out, changed=changed)


def _subsample(rows: list[dict], params: dict, rng: np.random.Generator, ctx: Context) -> Result:
    if params.get("n") is not None:
        k = int(params["n"])
        if k > len(rows):
            raise ValueError(f"n={k} but only {len(rows)} rows reach this transform; lower n or use fraction")
    else:
        k = round(params["fraction"] * len(rows))
    keep = set(rng.choice(len(rows), size=k, replace=False).tolist())
    return _keep(rows, [i in keep for i in range(len(rows))])


def _keep(rows: list[dict], mask: list[bool], extra: dict | None = None) -> Result:
    kept = [r for r, m in zip(rows, mask, strict=True) if m]
    dropped = [r[ROW_ID] for r, m in zip(rows, mask, strict=True) if not m]
    return Result(kept, dropped=dropped, extra=extra or {})


def margins(rows: list[dict], params: dict, ctx: Context) -> list[float]:
    """Each pair's margin (chosen minus rejected) from ``source``: oracle, column or model."""
    source = params["source"]
    if source == "oracle":
        from alignment.data.oracle import score

        out = []
        for row in rows:
            if row.get("oracle") is None:
                raise ValueError(
                    f"source: oracle needs an 'oracle' column, and row {row[ROW_ID]} has none; "
                    "use source: column or source: model for this data"
                )
            chosen, rejected = score(row["oracle"], row["chosen"]), score(row["oracle"], row["rejected"])
            if chosen is None or rejected is None:
                raise ValueError(f"row {row[ROW_ID]}'s oracle spec cannot be read: {row['oracle']!r}")
            out.append(chosen - rejected)
        return out
    if source == "column":
        name = params.get("column")
        columns = set(rows[0]) if rows else set()
        if name is None:
            if "margin" in columns:
                name = "margin"
            elif {"score_chosen", "score_rejected"} <= columns:
                return [float(r["score_chosen"]) - float(r["score_rejected"]) for r in rows]
            else:
                raise ValueError(
                    "source: column found no 'margin' column and no 'score_chosen'/'score_rejected' columns; "
                    f"name one with column: <name> (columns: {sorted(columns - {ROW_ID})})"
                )
        if name not in columns:
            raise ValueError(f"column '{name}' is not in the data (columns: {sorted(columns - {ROW_ID})})")
        return [float(r[name]) for r in rows]
    # source == "model": a reward-model dir, or an rm stage dir holding model/
    from types import SimpleNamespace

    from alignment.models import resolve_model_path
    from alignment.rewards import ModelReward

    if not Path(str(params["path"])).expanduser().exists():
        raise ValueError(f"path {params['path']!r} does not exist; give a reward-model dir or an rm stage dir")
    path = resolve_model_path(SimpleNamespace(name="reward", path=str(params["path"])))
    reward = ModelReward(path, batch_size=int(params["batch_size"]), max_length=ctx.max_length)
    prompts = [r["prompt"] for r in rows] * 2
    replies = [reply_text(r["chosen"]) for r in rows] + [reply_text(r["rejected"]) for r in rows]
    scores = reward(prompts, replies)
    return [c - r for c, r in zip(scores[: len(rows)], scores[len(rows) :], strict=True)]


def _margin_filter(rows: list[dict], params: dict, rng: np.random.Generator, ctx: Context) -> Result:
    values = margins(rows, params, ctx)
    if params.get("threshold") is not None:
        mask = [m > params["threshold"] for m in values]
    else:
        k = round(params["top_fraction"] * len(rows))
        order = sorted(range(len(rows)), key=lambda i: -values[i])  # stable: ties keep the earlier row
        top = set(order[:k])
        mask = [i in top for i in range(len(rows))]
    finite = [m for m in values if math.isfinite(m)]
    stats = {"margin_mean_in": sum(finite) / len(finite)} if finite else {}
    kept = [m for m, keep in zip(values, mask, strict=True) if keep]
    if kept:
        stats["margin_mean_out"] = sum(kept) / len(kept)
    return _keep(rows, mask, stats)


def _length_bias(rows: list[dict], params: dict, rng: np.random.Generator, ctx: Context) -> Result:
    draws = rng.random(len(rows))
    out, changed = [], []
    for row, u in zip(rows, draws, strict=True):
        if u < params["q"] and len(reply_text(row["rejected"])) > len(reply_text(row["chosen"])):
            out.append(swap_sides(row))
            changed.append(row[ROW_ID])
        else:
            out.append(row)
    return Result(out, changed=changed)


def _dedupe(rows: list[dict], params: dict, rng: np.random.Generator, ctx: Context) -> Result:
    seen: set[str] = set()
    mask = []
    for row in rows:
        key = json.dumps([row["prompt"], row["chosen"], row["rejected"]], sort_keys=True, ensure_ascii=False)
        mask.append(key not in seen)
        seen.add(key)
    return _keep(rows, mask)


def _decontaminate(rows: list[dict], params: dict, rng: np.random.Generator, ctx: Context) -> Result:
    from alignment.data.loading import load_dataset

    match = params["match"]
    prompts: list = []
    sources: list[str] = []
    if ctx.held_out is not None and "prompt" in ctx.held_out.column_names:
        prompts += ctx.held_out["prompt"]
        sources.append(f"held-out split ({len(ctx.held_out)} rows)")
    if ctx.oracle_prompts:
        prompts += ctx.oracle_prompts
        sources.append(f"oracle-eval prompts ({len(ctx.oracle_prompts)})")
    if params.get("path"):
        extra = load_dataset(str(params["path"]), kind="prompt", format=params["format"], on_error=ctx.on_error)
        prompts += extra["prompt"]
        sources.append(f"{params['path']} ({len(extra)} rows)")
    if not prompts:
        raise ValueError("there are no evaluation prompts to compare with (no held-out split); give path: <file>")
    banned = {prompt_key(p, match) for p in prompts}
    mask = [prompt_key(row["prompt"], match) not in banned for row in rows]
    return _keep(rows, mask, {"eval_prompts": len(banned), "against": sources})


def _mix(rows: list[dict], params: dict, rng: np.random.Generator, ctx: Context) -> Result:
    from alignment.data.loading import load_dataset

    sources: list[tuple[str, float, list[dict]]] = [("base", float(params["base_weight"]), rows)]
    for item in params["datasets"]:
        extra = load_dataset(
            str(item["path"]),
            kind="preference",
            format=str(item.get("format") or ctx.data_format),
            split=str(item.get("split") or "train"),
            on_error=ctx.on_error,
        )
        sources.append((str(item["path"]), float(item.get("weight", 1.0)), extra.to_list()))
    total = int(params["n"]) if params.get("n") is not None else len(rows)
    counts = _apportion(total, [w for _, w, _ in sources])
    next_id = 1 + max((r[ROW_ID] for r in rows), default=-1)
    out: list[dict] = []
    kept_base: set[int] = set()
    added: list[int] = []
    report = []
    for (name, weight, source_rows), count in zip(sources, counts, strict=True):
        if count and not source_rows:
            raise ValueError(f"dataset {name} has no rows to draw {count} from")
        picks = _draw(len(source_rows), count, rng) if count else []
        report.append({"source": name, "weight": weight, "rows_available": len(source_rows), "rows_taken": count})
        for i in picks:
            row = dict(source_rows[i])
            if name == "base":
                kept_base.add(row[ROW_ID])
            else:
                row[ROW_ID] = next_id
                added.append(next_id)
                next_id += 1
            out.append(row)
    columns = list(dict.fromkeys(k for r in out for k in r))
    out = [{c: r.get(c) for c in columns} for r in out]
    dropped = [r[ROW_ID] for r in rows if r[ROW_ID] not in kept_base]
    return Result(out, dropped=dropped, added=added, extra={"sources": report})


def _apportion(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` rows in proportion to ``weights`` (largest remainders, earlier sources first on ties)."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: -(exact[i] - counts[i]))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _draw(available: int, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` row indices out of ``available``: every row once per full pass, then a sample without replacement."""
    full, rest = divmod(count, available)
    picks = list(range(available)) * full
    picks += sorted(rng.choice(available, size=rest, replace=False).tolist())
    return sorted(picks)


TRANSFORMS: dict[str, Spec] = {
    "flip": Spec(_flip, {"p": REQUIRED}, "{name: flip, p: 0.2}"),
    "subsample": Spec(_subsample, {"n": None, "fraction": None}, "{name: subsample, n: 2000}"),
    "margin_filter": Spec(
        _margin_filter,
        {
            "source": REQUIRED,
            "column": None,
            "path": None,
            "threshold": None,
            "top_fraction": None,
            "batch_size": 16,
        },
        "{name: margin_filter, source: oracle, threshold: 0}",
    ),
    "length_bias": Spec(_length_bias, {"q": REQUIRED}, "{name: length_bias, q: 0.5}"),
    "mix": Spec(
        _mix,
        {"datasets": REQUIRED, "base_weight": 1.0, "n": None},
        "{name: mix, datasets: [{path: other.jsonl, weight: 0.5}]}",
    ),
    "dedupe": Spec(_dedupe, {}, "{name: dedupe}"),
    "decontaminate": Spec(
        _decontaminate, {"path": None, "format": "auto", "match": "prompt"}, "{name: decontaminate}"
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# Validation


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


# ---------------------------------------------------------------------------------------------------------------
# Applying


def apply_transforms(
    rows: Dataset, specs: Any, context: Context | None = None
) -> tuple[Dataset, list[dict[str, Any]]]:
    """Apply ``specs`` in order to the train rows; return the new rows and one record per transform.

    A record holds the name, parameters, rows in and out, and the row ids (index in ``rows``) changed, dropped and,
    for ``mix``, added. Rows keep their columns; mixed-in rows get the union of columns (missing values None).
    """
    ctx = context or Context()
    checked = validate_transforms(specs)
    if not checked:
        return rows, []
    current = [{**row, ROW_ID: i} for i, row in enumerate(rows.to_list())]
    records = []
    for i, item in enumerate(checked):
        name, params = item["name"], {k: v for k, v in item.items() if k != "name"}
        where = f"data.transforms[{i}] ({name})"
        try:
            result = TRANSFORMS[name].fn(current, params, transform_rng(ctx.seed, i), ctx)
        except ValueError as err:
            raise AlignmentError(f"{where}: {err}") from None
        record = {
            "index": i,
            "name": name,
            "params": params,
            "rows_in": len(current),
            "rows_out": len(result.rows),
            "changed": len(result.changed),
            "dropped": len(result.dropped),
            **({"added": len(result.added)} if name == "mix" else {}),
            **result.extra,
            "changed_ids": result.changed,
            "dropped_ids": result.dropped,
            **({"added_ids": result.added} if name == "mix" else {}),
        }
        records.append(record)
        log.info("%s: %d rows in, %d out, %d changed", where, len(current), len(result.rows), len(result.changed))
        if not result.rows:
            raise AlignmentError(
                f"{where} left no training rows (of {len(current)}); loosen its parameters or reorder the transforms"
            )
        current = result.rows
    return _to_dataset(current, rows), records


def _to_dataset(rows: list[dict], original: Dataset) -> Dataset:
    """The rows as a Dataset with ``_row_id`` as a column; the original column types when the columns match."""
    if set(rows[0]) == {*original.column_names, ROW_ID}:
        from datasets import Features, Value

        features = Features({**original.features, ROW_ID: Value("int64")})
        return Dataset.from_list(rows, features=features)
    return Dataset.from_list(rows)


def metrics_of(records: list[dict], rows_after: int) -> dict[str, int]:
    """Counts for ``metrics.json``: ``data_rows_after_transforms`` and per transform changed/dropped (added)."""
    out = {"data_rows_after_transforms": rows_after}
    for r in records:
        key = f"data_transform_{r['index']}_{r['name']}"
        out[f"{key}_changed"] = r["changed"]
        out[f"{key}_dropped"] = r["dropped"]
        if "added" in r:
            out[f"{key}_added"] = r["added"]
    return out


def write_record(stage_dir: Path, records: list[dict], rows_before: int, rows_after: int, seed: int) -> Path:
    """Write ``<stage_dir>/transforms.json`` atomically."""
    from alignment.atomic import write_atomic

    path = Path(stage_dir) / RECORD_FILE
    doc = {
        "seed": seed,
        "row_id": "index in the loaded train rows before any transform",
        "rows_before": rows_before,
        "rows_after": rows_after,
        "transforms": records,
    }
    write_atomic(path, json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n")
    return path


def oracle_eval_prompts(cfg) -> list | None:
    """The oracle-eval prompts when they are the embedded ones (the whole split ``oracle_eval.split``), else None."""
    oe = cfg.get("oracle_eval")
    if oe is None or not oe.get("enabled", True) or oe.get("path") or cfg.data.get("path"):
        return None
    from alignment.data.loading import MissingSplitError, load_dataset
    from alignment.paths import DATA_DIR

    try:
        return load_dataset(str(DATA_DIR / "prompts"), kind="prompt", split=str(oe.split))["prompt"]
    except MissingSplitError:
        return None


def transform_train_rows(cfg, train: Dataset, held_out: Dataset | None, stage_dir: Path) -> tuple[Dataset, dict]:
    """Apply ``cfg.data.transforms`` to the train rows of a preference stage, write ``transforms.json`` and return
    the rows (without the row-id column) and the metrics to record. Without transforms: the rows as they are."""
    specs = validate_transforms(cfg.data.get("transforms"))
    if not specs:
        return train, {}
    names = {s["name"] for s in specs}
    ctx = Context(
        seed=int(cfg.seed),
        held_out=held_out,
        oracle_prompts=oracle_eval_prompts(cfg) if "decontaminate" in names else None,
        data_format=str(cfg.data.format),
        on_error=str(cfg.data.on_error),
        max_length=int(cfg.data.max_length) if cfg.data.get("max_length") else None,
    )
    rows, records = apply_transforms(train, specs, ctx)
    from alignment.launch import is_main_process

    if is_main_process():
        write_record(stage_dir, records, len(train), len(rows), int(cfg.seed))
    return rows.remove_columns([ROW_ID]), metrics_of(records, len(rows))

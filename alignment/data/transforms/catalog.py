"""The transforms themselves: one function per name, and ``TRANSFORMS``, their parameters (with defaults) and an
example each. A transform maps the rows that reach it to a :class:`Result` naming the row ids it changed, dropped or
added; a ``ValueError`` says why the data does not suit it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignment.data.transforms.rows import ROW_ID, Context, Result, prompt_key, reply_text, swap_sides


@dataclass(frozen=True)
class Spec:
    """A transform: its function, its parameters (name -> default; ``REQUIRED`` marks the required ones), an example."""

    fn: Callable[[list[dict], dict, np.random.Generator, Context], Result]
    params: dict[str, Any]
    example: str


REQUIRED = object()


def _flip(rows: list[dict], params: dict, rng: np.random.Generator, ctx: Context) -> Result:
    return _swap_where(rows, [u < params["p"] for u in rng.random(len(rows))])


def _swap_where(rows: list[dict], swap: list[bool]) -> Result:
    """Swap chosen and rejected in the rows marked, recording them as changed."""
    out = [swap_sides(row) if s else row for row, s in zip(rows, swap, strict=True)]
    return Result(out, changed=[row[ROW_ID] for row, s in zip(rows, swap, strict=True) if s])


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
        from alignment.oracle import score

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
        missing = [r[ROW_ID] for r in rows if r.get(name) is None]
        if missing:
            raise ValueError(
                f"column '{name}' has no value in {len(missing)} of {len(rows)} rows (first ids: {missing[:5]}); "
                "give every pair a margin, or use source: oracle or source: model"
            )
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
    longer = [len(reply_text(row["rejected"])) > len(reply_text(row["chosen"])) for row in rows]
    return _swap_where(rows, [u < params["q"] and lg for u, lg in zip(draws, longer, strict=True)])


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

"""``python -m alignment.report RUN_DIR``: one page on a run — key metrics per stage and the training curves.

Reads every ``<stage>/metrics.json`` and ``log_history.jsonl`` under the run dir (a single stage or a pipeline),
prints a Markdown table, and writes ``report.md`` and ``report.png`` (loss / reward curves per stage and the oracle
reward before and after each stage) next to them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from alignment.errors import AlignmentError

# (metric, label) pairs shown when present; "_before" variants are shown as "before -> after".
KEY_METRICS = [
    ("eval_loss", "held-out loss"),
    ("eval_accuracy", "RM accuracy"),
    ("eval_rewards/accuracies", "reward accuracy"),
    ("eval_rewards/margins", "reward margin"),
    ("oracle_reward", "oracle reward"),
    ("kl", "KL to reference"),
    ("train_runtime", "train seconds"),
    ("trainable_params", "trainable params"),
]
# The training curve drawn per stage: the first of these its log_history has.
CURVES = ["loss", "score", "reward"]


def stage_dirs(run_dir: Path) -> list[Path]:
    """Stage dirs with a finished metrics.json, in pipeline order when a pipeline.json says it."""
    manifest = run_dir / "pipeline.json"
    if manifest.exists():
        steps = json.loads(manifest.read_text(encoding="utf-8"))["steps"]
        dirs = [Path(s["output"]) for s in steps]
    elif (run_dir / "metrics.json").exists():
        dirs = [run_dir]
    else:
        dirs = sorted(p.parent for p in run_dir.glob("*/metrics.json"))
    return [d for d in dirs if (d / "metrics.json").exists()]


def _fmt(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.4g}"


def metrics_table(dirs: list[Path]) -> str:
    rows = ["| stage | metric | before | after |", "|---|---|---|---|"]
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        for key, label in KEY_METRICS:
            if key not in m:
                continue
            # The metric, then its per-task-family breakdown (``eval_accuracy/identity``, ...) when recorded.
            tasks = sorted(k[len(key) + 1 :] for k in m if k.startswith(f"{key}/") and not k.endswith("_before"))
            for name, text in [(key, label)] + [(f"{key}/{t}", f"{label}: {t}") for t in tasks]:
                before = m.get(f"{name}_before")
                rows.append(f"| {d.name} | {text} | {_fmt(before) if before is not None else ''} | {_fmt(m[name])} |")
    return "\n".join(rows)


def _history(stage_dir: Path) -> list[dict]:
    path = stage_dir / "log_history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot(dirs: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(dirs) + 1
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, d in zip(axes[0], dirs, strict=False):
        history = _history(d)
        for key in CURVES:  # the stage's main training curve: the first one it logs
            points = [(row.get("step", i), row[key]) for i, row in enumerate(history) if _finite(row.get(key))]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=2)
                ax.set_ylabel(key)
                break
        ax.set_title(d.name)
        ax.set_xlabel("step")
    ax = axes[0][-1]
    names, before, after = [], [], []
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        if "oracle_reward" in m:
            names.append(d.name)
            before.append(m.get("oracle_reward_before", float("nan")))
            after.append(m["oracle_reward"])
    if names:
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], before, width=0.4, label="before")
        ax.bar([x + 0.2 for x in xs], after, width=0.4, label="after")
        ax.set_xticks(list(xs), names)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    ax.set_title("oracle reward")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def report(run_dir: str | Path) -> str:
    """Write ``report.md`` and ``report.png`` for a run dir and return the Markdown."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AlignmentError(f"{run_dir} is not a directory; pass a run dir (output_dir) or a stage dir")
    dirs = stage_dirs(run_dir)
    if not dirs:
        raise AlignmentError(f"no finished stage (metrics.json) under {run_dir}")
    text = f"# Run report: {run_dir}\n\n{metrics_table(dirs)}\n\n![curves](report.png)\n"
    plot(dirs, run_dir / "report.png")
    (run_dir / "report.md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alignment.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run dir (output_dir) or one stage's dir")
    args = parser.parse_args(argv)
    try:
        print(report(args.run_dir))
    except AlignmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

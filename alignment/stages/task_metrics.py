"""Held-out metrics per task family, for data whose rows carry an oracle spec naming a ``task`` (the embedded data).

A single number such as ``eval_accuracy`` 0.69 hides which behaviour a reward model or policy learned; with the
embedded data it is recorded per family as well (``eval_accuracy/identity``, ``eval_accuracy/sentiment``, ...). The
trainer's own evaluation runs once per family on that family's held-out rows, so the numbers are computed exactly
like the overall one (same masks, same losses, same distributed set-up).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from alignment.oracle.rules import task_of


def task_indices(dataset) -> dict[str, list[int]]:
    """Row indices per task, from the ``oracle`` column; empty when there is none or only one task."""
    if dataset is None or "oracle" not in dataset.column_names:
        return {}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, spec in enumerate(dataset["oracle"]):
        task = task_of(spec)  # not validated here: the oracle evaluation does that
        if task:
            groups[task].append(i)
    return dict(groups) if len(groups) > 1 else {}


def evaluate_by_task(trainer, groups: dict[str, list[int]], keys: Iterable[str]) -> Callable[[], dict]:
    """A function running the trainer's evaluation on all held-out rows, then on each task's rows, returning the
    overall metrics plus ``<key>/<task>`` for each of ``keys``."""
    keys = tuple(keys)

    def run() -> dict:
        metrics = dict(trainer.evaluate())
        # The trainer's own prepared rows are swapped in, not passed to evaluate(): passed rows would be prepared
        # again (DPO's precomputed reference log-probs, for one, cannot be recomputed once training has started).
        full = trainer.eval_dataset
        try:
            for task, rows in sorted(groups.items()):
                trainer.eval_dataset = full.select(rows)
                part = trainer.evaluate()
                metrics |= {f"{key}/{task}": part[key] for key in keys if key in part}
        finally:
            trainer.eval_dataset = full
        return metrics

    return run

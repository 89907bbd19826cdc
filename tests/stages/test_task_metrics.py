"""Held-out metrics per task family: grouping rows by their oracle's task and evaluating each group."""

from __future__ import annotations

import json

from datasets import Dataset

from alignment.stages.task_metrics import evaluate_by_task, task_indices


def _rows(tasks: list[str | None], correct: list[int]) -> Dataset:
    oracle = [json.dumps({"task": t}) if t else "" for t in tasks]
    return Dataset.from_dict({"oracle": oracle, "correct": correct})


class MeanTrainer:
    """Stands in for a TRL trainer: its "accuracy" is the mean of the evaluated rows' ``correct`` column."""

    def __init__(self, eval_dataset: Dataset) -> None:
        self.eval_dataset = eval_dataset
        self.calls = 0

    def evaluate(self) -> dict:
        self.calls += 1
        rows = self.eval_dataset
        return {"eval_accuracy": sum(rows["correct"]) / len(rows), "eval_loss": 1.0}


def test_rows_are_grouped_by_the_task_in_their_oracle_spec():
    ds = _rows(["chat", "identity", None, "chat", "arithmetic"], [0] * 5)
    assert task_indices(ds) == {"chat": [0, 3], "identity": [1], "arithmetic": [4]}


def test_no_breakdown_without_an_oracle_column_or_with_a_single_task():
    assert task_indices(Dataset.from_dict({"prompt_ids": [[1], [2]]})) == {}
    assert task_indices(_rows(["chat", "chat"], [1, 0])) == {}
    assert task_indices(None) == {}


def test_each_task_is_evaluated_on_its_own_rows():
    ds = _rows(["chat", "identity", "chat", "identity", "identity"], [1, 1, 0, 0, 1])
    trainer = MeanTrainer(ds)
    metrics = evaluate_by_task(trainer, task_indices(ds), ["eval_accuracy"])()
    assert metrics["eval_accuracy"] == 3 / 5
    assert metrics["eval_accuracy/chat"] == 1 / 2
    assert metrics["eval_accuracy/identity"] == 2 / 3
    assert "eval_loss/chat" not in metrics  # only the keys asked for are broken down
    assert trainer.calls == 3
    assert trainer.eval_dataset is ds  # the full held-out set is back in place

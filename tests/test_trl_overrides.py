"""The methods of TRL and transformers trainers that this project overrides or calls are private API: a TRL release
that renames one would silently bypass our code (TRL would then tokenise our encoded pairs again, drop the length
column, or template prompts a second time). Each test checks that the pinned library still has the method, with the
parameters we use, and that our code actually runs when the trainer calls it."""

from __future__ import annotations

import inspect

import pytest
import transformers

from alignment.stages import dpo, grpo, kto
from alignment.stages.online import SharedPromptEncoding
from alignment.stages.preference_inputs import KeepsLengthColumn
from tests.stages.trainers import built_trainer, compose

pytestmark = pytest.mark.slow

SMALL = ["data.max_train_rows=8", "data.max_eval_rows=4", "oracle_eval.enabled=false"]


def _library(name: str) -> type:
    if name == "Trainer":
        return transformers.Trainer
    if name == "ORPOTrainer":
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer
    import trl

    return getattr(trl, name)


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


# Our classes that override library methods (KTO's and ORPO's are built inside their stage's run: tested below).
OURS = {
    "dpo": lambda: dpo.dpo_trainer_class(),
    "prompts": lambda: SharedPromptEncoding,
    "length": lambda: KeepsLengthColumn,
}
# (library class, method, our class overriding it or None where we only call it, the leading parameters we pass)
PRIVATE_API = [
    ("DPOTrainer", "_prepare_dataset", "dpo", None),
    ("KTOTrainer", "_prepare_dataset", None, ["self", "dataset", "processing_class", "args", "dataset_name"]),
    ("GRPOTrainer", "_generate_and_score_completions", "prompts", None),
    ("GRPOTrainer", "_tokenize_prompts", "prompts", None),
    ("RLOOTrainer", "_generate_and_score_completions", "prompts", None),
    ("RLOOTrainer", "_tokenize_prompts", "prompts", None),
    ("DPOTrainer", "_set_signature_columns_if_needed", "length", None),
    ("RewardTrainer", "_set_signature_columns_if_needed", "length", None),
    ("Trainer", "_save_checkpoint", None, ["self", "model", "trial"]),
    ("ORPOTrainer", "tokenize_row", None, ["self", "feature", "model"]),
    ("ORPOTrainer", "concatenated_forward", None, ["self", "model", "batch"]),
]


@pytest.mark.parametrize(("library_class", "method", "ours", "params"), PRIVATE_API)
def test_the_pinned_library_still_has_the_method_we_rely_on(library_class, method, ours, params):
    base = getattr(_library(library_class), method, None)
    assert callable(base), f"{library_class}.{method} is gone: our override or call no longer takes effect"
    if ours is not None:
        mine = getattr(OURS[ours](), method)
        # TRL calls the method with its own arguments: an override must take the same ones.
        assert mine is not base and _params(mine) == _params(base)
    if params is not None:
        assert _params(base)[: len(params)] == params


def test_dpo_skips_trl_tokenisation_and_keeps_the_length_column(monkeypatch, tmp_path):
    """Our ``_prepare_dataset`` is what the DPO trainer calls (TRL's would re-tokenise), and ``KeepsLengthColumn``
    keeps ``length`` through the column removal, so the length-grouped sampler batches by it."""
    cls = dpo.dpo_trainer_class()
    prepared, given = [], []
    prepare, load = cls._prepare_dataset, dpo.preference_data

    def spy_prepare(self, dataset, processing_class, args, dataset_name):
        prepared.append(dataset_name)
        return prepare(self, dataset, processing_class, args, dataset_name)

    def spy_load(*args, **kwargs):
        given.extend(load(*args, **kwargs))
        return tuple(given)

    monkeypatch.setattr(cls, "_prepare_dataset", spy_prepare)
    monkeypatch.setattr(dpo, "preference_data", spy_load)
    trainer = built_trainer(monkeypatch, dpo, "stage=dpo", f"output_dir={tmp_path}", *SMALL)
    assert isinstance(trainer, cls)
    assert prepared == ["train", "eval"]
    # Handed over untouched: the very datasets the data layer encoded.
    assert trainer.train_dataset is given[0] and trainer.eval_dataset is given[1]

    signature_calls = []
    keep = KeepsLengthColumn._set_signature_columns_if_needed

    def spy_keep(self):
        signature_calls.append(1)
        keep(self)

    monkeypatch.setattr(KeepsLengthColumn, "_set_signature_columns_if_needed", spy_keep)
    assert trainer.args.remove_unused_columns and trainer.args.train_sampling_strategy == "group_by_length"
    kept = trainer._remove_unused_columns(trainer.train_dataset)
    assert signature_calls and "length" in kept.column_names
    assert list(trainer._get_train_sampler(kept).lengths) == given[0]["length"]
    # Without the mixin TRL's own signature columns leave ``length`` out: the override is what keeps it.
    trainer._signature_columns = None
    _library("DPOTrainer")._set_signature_columns_if_needed(trainer)
    assert "length" not in trainer._signature_columns


def test_kto_prepare_dataset_adds_the_kl_completions(monkeypatch, tmp_path):
    calls = []
    add = kto.with_kl_completions

    def spy_add(rows, batch_size):
        calls.append((len(rows), batch_size))
        return add(rows, batch_size)

    monkeypatch.setattr(kto, "with_kl_completions", spy_add)
    trainer = built_trainer(
        monkeypatch, kto, "stage=kto", f"output_dir={tmp_path}", "trainer.per_device_train_batch_size=4", *SMALL
    )
    base = _library("KTOTrainer")._prepare_dataset
    assert type(trainer)._prepare_dataset is not base and _params(type(trainer)._prepare_dataset) == _params(base)
    assert trainer.calculate_KL
    assert calls == [(len(trainer.train_dataset), 4), (len(trainer.eval_dataset), 4)]
    rows = trainer.train_dataset
    expected = [
        rows["completion_ids"][start + (i - 1) % len(batch)]
        for start in range(0, len(rows), 4)
        for batch in [rows["completion_ids"][start : start + 4]]
        for i in range(len(batch))
    ]
    assert rows["KL_completion_ids"] == expected


@pytest.mark.parametrize("stage_name", ["grpo", "rloo"])
def test_trl_tokenises_prompts_through_our_override(tmp_path, monkeypatch, stage_name):
    cfg = compose(
        f"stage={stage_name}",
        f"output_dir={tmp_path}",
        "trainer.num_generations=2",
        "trainer.per_device_train_batch_size=4",
        "trainer.max_completion_length=4",
        *SMALL,
    )
    trainer, _ = grpo.build_trainer(cfg, grpo.StageRun(cfg), stage_name)
    assert isinstance(trainer, SharedPromptEncoding)
    calls = []
    tokenize = SharedPromptEncoding._tokenize_prompts

    def spy_tokenize(self, prompts):
        out = tokenize(self, prompts)
        calls.append((len(prompts), out[0]))
        return out

    monkeypatch.setattr(SharedPromptEncoding, "_tokenize_prompts", spy_tokenize)
    rows = [dict(trainer.train_dataset[i]) for i in range(2) for _ in range(2)]
    for row in rows:  # ids no templating of the prompt text gives: only our override can hand them to TRL
        row["prompt_ids"] = list(row["prompt_ids"])[-5:]
    trainer.model.train()
    out = trainer._generate_and_score_completions(rows)
    assert calls == [(4, [r["prompt_ids"] for r in rows])]
    assert out["prompt_ids"].shape[0] == 4 and trainer._batch_prompt_ids is None  # reset after the batch


def test_a_checkpoint_is_saved_by_the_call_the_ctrl_c_path_makes(monkeypatch, tmp_path):
    """``StageRun`` saves the last step on Ctrl-C with ``trainer._save_checkpoint(model_wrapped, trial=None)``."""
    trainer = built_trainer(monkeypatch, dpo, "stage=dpo", f"output_dir={tmp_path}", *SMALL)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    trainer.state.global_step = 1
    trainer._save_checkpoint(trainer.model_wrapped, trial=None)
    saved = tmp_path / "dpo" / "checkpoint-1"
    assert (saved / "trainer_state.json").is_file() and (saved / "model.safetensors").is_file()

"""What the preference stages consume: the policy, its frozen reference, and encoded preference pairs."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from omegaconf import DictConfig

from alignment import adapters
from alignment.data import load_train_eval, tokenize_preference
from alignment.data.sources import data_source
from alignment.data.transforms import transform_train_rows
from alignment.errors import AlignmentError
from alignment.models import load_causal_lm, load_tokenizer, locate_model, resolve_model_path
from alignment.stages.runner import StageRun


def policy_and_reference(cfg: DictConfig, with_reference: bool = True):
    """(tokenizer, policy, reference, peft config). The reference is the policy's start unless ``ref_model`` is set.

    With a PEFT adapter the reference is None: TRL then uses the policy with its adapter disabled, which is the
    adapter-free base.
    """
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, cfg.model)
    policy = load_causal_lm(path, cfg.model, cfg.peft, tokenizer=tokenizer)
    adapter = adapters.prepare(policy, cfg.peft, stage=str(cfg.stage))
    reference = None
    if adapter is None and with_reference:
        reference = load_causal_lm(reference_path(cfg), cfg.model)
        reference.requires_grad_(False).eval()
    return tokenizer, policy, reference, adapter


def reference_path(cfg: DictConfig) -> str:
    """The reference model's dir or Hub id: ``ref_model`` (a model dir or a stage dir) or else the policy's start."""
    if not cfg.get("ref_model"):
        return resolve_model_path(cfg.model)
    return locate_model(cfg.ref_model, "ref_model")


def needs_separate_reference(cfg: DictConfig) -> bool:
    """Whether ``ref_model`` names another model than the policy's start (then it must be loaded on its own)."""
    start = resolve_model_path(cfg.model)
    ref = reference_path(cfg)
    return ref != start and not (Path(ref).exists() and Path(start).exists() and Path(ref).samefile(start))


def preference_data(cfg: DictConfig, tokenizer, stage: StageRun) -> tuple[Dataset, Dataset | None]:
    """Encoded preference pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``), train and held-out.

    Both get a ``length`` column (prompt plus the longer reply, in tokens): the column that
    ``trainer.train_sampling_strategy=group_by_length`` batches pairs of similar length by, which cuts padding.
    """
    train_rows, eval_rows = load_train_eval(cfg.data, kind="preference", seed=cfg.seed)
    # ``data.transforms`` change the train pairs only: held-out pairs keep their clean labels.
    try:
        train_rows, transform_metrics = transform_train_rows(cfg, train_rows, eval_rows, stage.dir)
    except AlignmentError as err:  # e.g. a transform that leaves no rows: say whose rows
        raise AlignmentError(f"{data_source(cfg.data, 'preference', 'train')}: {err}") from err
    stage.record(transform_metrics)
    length = cfg.data.max_length
    train, stats = tokenize_preference(
        train_rows, tokenizer, max_length=length, source=data_source(cfg.data, "preference", "train")
    )
    stage.record({f"data_{k}": v for k, v in stats.items()})
    train = train.map(_pair_length)
    held_out = None
    if eval_rows is not None:
        source = data_source(cfg.data, "preference", "held-out")
        held_out = tokenize_preference(eval_rows, tokenizer, max_length=length, source=source)[0].map(_pair_length)
    return train, held_out


def _pair_length(row: dict) -> dict:
    return {"length": len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))}


class KeepsLengthColumn:
    """Mixin for a TRL preference trainer: keep the ``length`` column the data layer adds, so that
    ``train_sampling_strategy=group_by_length`` can batch by it (the trainer drops columns its model does not take
    before the sampler is built; its collator ignores the extra key)."""

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        name = self.args.length_column_name
        if name not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, name]

"""What the preference stages consume: the policy, its frozen reference, and encoded preference pairs."""

from __future__ import annotations

from datasets import Dataset
from omegaconf import DictConfig

from alignment import adapters
from alignment.data import load_train_eval, tokenize_preference
from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path
from alignment.stages.stage_run import StageRun


def policy_and_reference(cfg: DictConfig, with_reference: bool = True):
    """(tokenizer, policy, reference, peft config). The reference is the policy's start unless ``ref_model`` is set.

    With a PEFT adapter the reference is None: TRL then uses the policy with its adapter disabled, which is the
    adapter-free base.
    """
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, cfg.model)
    policy = load_causal_lm(path, cfg.model, cfg.peft)
    adapter = adapters.prepare(policy, cfg.peft, stage=str(cfg.stage))
    reference = None
    if adapter is None and with_reference:
        reference = load_causal_lm(str(cfg.ref_model) if cfg.ref_model else path, cfg.model)
        reference.requires_grad_(False).eval()
    return tokenizer, policy, reference, adapter


def preference_data(cfg: DictConfig, tokenizer, stage: StageRun) -> tuple[Dataset, Dataset | None]:
    """Encoded preference pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``), train and held-out."""
    train_rows, eval_rows = load_train_eval(cfg.data, kind="preference", seed=cfg.seed)
    train, stats = tokenize_preference(train_rows, tokenizer, max_length=cfg.data.max_length)
    stage.record({f"data_{k}": v for k, v in stats.items()})
    held_out = None
    if eval_rows is not None:
        held_out = tokenize_preference(eval_rows, tokenizer, max_length=cfg.data.max_length)[0]
    return train, held_out

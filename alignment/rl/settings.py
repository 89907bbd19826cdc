"""The settings of our PPO trainer (``trainer.*`` of ``stage=ppo``), each with help text, and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from alignment.errors import AlignmentError


def _help(text: str, default=None, **kwargs):
    return field(default=default, metadata={"help": text}, **kwargs)


@dataclass
class PPOSettings:
    """Hyper-parameters of :class:`PPOTrainer`; batch sizes are per process (per GPU).

    ``group_by_length`` only changes how rows are batched into forwards, never a number: it cuts the padding a
    rollout of prompts and responses of mixed lengths carries (see :mod:`alignment.rl.padding`).
    """

    learning_rate: float = _help("AdamW learning rate of the policy.", 3e-6)
    value_learning_rate: float | None = _help("AdamW learning rate of the value model; None = learning_rate.")
    lr_scheduler_type: str = _help("'linear' (decay to 0 over all updates) or 'constant'.", "linear")
    weight_decay: float = _help("AdamW weight decay, for both models.", 0.0)
    rollout_batch_size: int = _help("Prompts sampled per rollout (per process); one response each.", 64)
    mini_batch_size: int = _help("Responses per optimiser step; must divide rollout_batch_size.", 8)
    gradient_accumulation_steps: int = _help("Micro-batches per minibatch; must divide mini_batch_size.", 1)
    forward_batch_size: int | None = _help("Rows per generate/scoring forward in the rollout; None = all.")
    group_by_length: bool = _help(
        "Run scoring forwards and updates over rows grouped by length, each group trimmed to its own padding: the "
        "same numbers, fewer padded tokens (groups keep to forward_batch_size rows in scoring and to one micro-batch "
        "in updates). False = dense forwards of forward_batch_size rows / one micro-batch. Updates stay dense with "
        "more than one process; DeepSpeed and FSDP stay dense throughout.",
        True,
    )
    ppo_epochs: int = _help("Passes over each rollout, each with a fresh shuffle.", 4)
    max_steps: int = _help("Number of rollout + update iterations.", 100)
    temperature: float = _help("Sampling temperature; log-probs are computed at the same temperature.", 1.0)
    top_p: float = _help("Nucleus sampling threshold (1.0 = off); log-probs still use the full distribution.", 1.0)
    max_new_tokens: int = _help("Longest response sampled, in tokens.", 64)
    kl_coef: float = _help(
        "Weight of the per-token KL penalty to the reference policy (initial value if adaptive).", 0.05
    )
    kl_estimator: str = _help("KL estimator in the reward: 'k1' (log ratio), 'k2' or 'k3' (Schulman).", "k1")
    adaptive_kl: bool = _help("Adapt kl_coef towards kl_target (Ziegler et al. 2019).", False)
    kl_target: float = _help("Target per-sequence KL for adaptive_kl.", 6.0)
    kl_horizon: int = _help("Episodes over which adaptive_kl may change kl_coef by up to 20%.", 10000)
    gamma: float = _help("Discount factor over response tokens.", 1.0)
    lam: float = _help("GAE lambda.", 0.95)
    cliprange: float = _help("PPO ratio clip range of the policy loss.", 0.2)
    cliprange_value: float = _help("Clip range of value predictions around their rollout values.", 0.2)
    vf_coef: float = _help("Weight of the value loss.", 0.1)
    entropy_coef: float = _help("Weight of the entropy bonus (subtracted from the loss).", 0.0)
    whiten_advantages: bool = _help("Normalise advantages over the rollout to zero mean, unit variance.", True)
    whiten_rewards: bool = _help("Scale per-token rewards to unit variance (mean kept) before GAE.", False)
    missing_eos_penalty: float | None = _help("Subtracted from the score of responses that never hit a stop token.")
    max_grad_norm: float = _help("Gradient clip norm, per model (one joint norm under DeepSpeed/FSDP).", 1.0)
    seed: int | None = _help(
        "Seed of sampling and shuffling (process index is added); None = 42. Under stage=ppo the run's `seed` sets "
        "it, as for every training stage: trainer.seed may only repeat it."
    )
    logging_steps: int = _help("Log a stats line every this many steps.", 1)
    save_steps: int = _help("Save a resumable checkpoint-<step>/ every this many steps; 0 = never.", 0)
    save_total_limit: int | None = _help("Keep only the newest this many checkpoints; None = all.", 2)

    def validate(self) -> None:
        """Raise AlignmentError naming the offending ``trainer.*`` setting when the combination cannot run."""

        def bad(key: str, why: str) -> AlignmentError:
            return AlignmentError(f"trainer.{key}={getattr(self, key)!r} (stage=ppo): {why}")

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(f.name, "must be a finite number")
        for key in ("rollout_batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs"):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        if self.forward_batch_size is not None and self.forward_batch_size < 1:
            raise bad("forward_batch_size", "must be at least 1 (or null: the whole rollout)")
        if self.rollout_batch_size % self.mini_batch_size:
            raise bad("mini_batch_size", f"must divide rollout_batch_size={self.rollout_batch_size}")
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise bad("gradient_accumulation_steps", f"must divide mini_batch_size={self.mini_batch_size}")
        if not isinstance(self.group_by_length, bool):
            raise bad("group_by_length", "must be true or false")
        if self.max_new_tokens < 1:
            raise bad("max_new_tokens", "must be at least 1")
        if self.max_steps < 0:
            raise bad("max_steps", "must be 0 or more")
        if self.temperature <= 0:
            raise bad("temperature", "PPO samples from the policy: use a temperature > 0")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "must be in (0, 1]")
        for key in ("learning_rate", "cliprange", "cliprange_value"):
            if getattr(self, key) <= 0:
                raise bad(key, "must be positive")
        if self.value_learning_rate is not None and self.value_learning_rate <= 0:
            raise bad("value_learning_rate", "must be positive (or null: learning_rate)")
        for key in ("weight_decay", "kl_coef", "vf_coef", "max_grad_norm"):
            if getattr(self, key) < 0:
                raise bad(key, "must be 0 or more")
        for key in ("gamma", "lam"):
            if not 0 <= getattr(self, key) <= 1:
                raise bad(key, "must lie in [0, 1]")
        if self.logging_steps < 1:
            raise bad("logging_steps", "must be at least 1")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise bad("save_total_limit", "must be at least 1 (or null: keep every checkpoint)")
        from alignment.rl import ops  # torch: imported when a PPO run is checked, not at CLI start-up

        if self.kl_estimator not in ops.KL_ESTIMATORS:
            raise bad("kl_estimator", f"use one of {', '.join(ops.KL_ESTIMATORS)}")
        if self.lr_scheduler_type not in ("linear", "constant"):
            raise bad("lr_scheduler_type", "use 'linear' or 'constant'")
        if self.save_steps < 0:
            raise bad("save_steps", "must be 0 (never) or more")
        if self.adaptive_kl and (self.kl_target <= 0 or self.kl_horizon <= 0):
            raise bad("kl_target", "adaptive_kl needs kl_target > 0 and kl_horizon > 0")


DEFAULT_SEED = 42


def stage_settings(trainer: dict, seed: int) -> PPOSettings:
    """``stage=ppo``'s settings: ``trainer.*`` seeded by the run's ``seed``, as TRL stages are.

    A ``trainer.seed`` that differs is refused rather than silently overwritten (TRL stages have no such key).
    """
    given = trainer.get("seed")
    if given is not None and int(given) != int(seed):
        raise AlignmentError(
            f"trainer.seed={given} is not used by stage=ppo: the run's seed ({seed}) seeds it, as every training "
            f"stage; set seed={given} instead, without trainer.seed"
        )
    return settings_from_dict({**trainer, "seed": int(seed)})


def settings_from_dict(values: dict) -> PPOSettings:
    """Build :class:`PPOSettings` from a mapping, naming unknown keys (typos) in the error."""
    known = {f.name for f in fields(PPOSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AlignmentError(f"unknown ppo setting(s) {unknown}; valid ones: {sorted(known)}")
    return PPOSettings(**values)

"""Pure tensor maths for RLHF with PPO: masked statistics, KL estimators, GAE, clipped losses, KL controllers.

Everything here works on right-padded ``(batch, response_len)`` tensors with a ``mask`` that is 1 on valid response
tokens and 0 on padding; nothing touches a model, so every function can be checked against numbers worked by hand.
"""

from __future__ import annotations

import math

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, dim: int | None = None, count: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (over ``dim``, or over everything); 0 where none are.

    ``count`` replaces the mask's own count as the divisor: the rows of a batch split into chunks, each divided by
    the whole batch's count, then give partial means that add up to the batch's mean.
    """
    mask = mask.to(values.dtype)
    total = (values * mask).sum() if dim is None else (values * mask).sum(dim)
    if count is None:
        count = mask.sum() if dim is None else mask.sum(dim)
    # An all-padding row has no mean; 0 keeps sums of stats finite instead of spreading NaN through a batch.
    return total / count.clamp_min(1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` over the masked positions (Bessel-corrected when ``unbiased`` and 2+ positions)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    count = mask.to(values.dtype).sum()
    if unbiased and count >= 2:
        var = var * count / (count - 1)
    return var


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise ``values`` to unit variance over the mask (and zero mean if ``shift_mean``); padding becomes 0.

    ``shift_mean=False`` keeps the original mean, which is how rewards are whitened: centring them would change
    which responses the KL-shaped return prefers.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || ref) from tokens sampled by the policy (Schulman's k1, k2, k3).

    With ``log_ratio = logprobs - ref_logprobs``: k1 = log_ratio (unbiased, can be negative), k2 = log_ratio**2 / 2
    (biased, low variance), k3 = exp(-log_ratio) - 1 + log_ratio (unbiased and never negative).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use one of {', '.join(KL_ESTIMATORS)}")


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses; returns ``(advantages, returns)``.

    The state after the last valid token is terminal (value 0), and padded positions get advantage and return 0,
    whatever ``rewards`` and ``values`` hold there.
    """
    mask = mask.to(values.dtype)
    rewards = rewards * mask
    values = values * mask
    length = rewards.shape[-1]
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        # Multiplying by the mask restarts the recursion at the last valid token of each row.
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    returns = (advantages + values) * mask
    return advantages, returns


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    count: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate loss; returns ``(loss, clipfrac, approx_kl)`` averaged over valid tokens.

    ``clipfrac`` is the share of tokens where the clipped term was the larger loss (so its gradient is zero);
    ``approx_kl`` is ``mean((logprobs - old_logprobs)**2) / 2``, a cheap estimate of how far the update moved.
    ``count``, if given, divides the sums instead of the mask's token count (see :func:`masked_mean`).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask, count=count)
    clipfrac = masked_mean((clipped > unclipped).to(logprobs.dtype), mask, count=count)
    approx_kl = 0.5 * masked_mean(log_ratio.detach() ** 2, mask, count=count)
    return loss, clipfrac.detach(), approx_kl


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
    count: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss ``0.5 * mean(max((v - R)**2, (v_clipped - R)**2))``; returns ``(loss, clipfrac)``.

    ``count``, if given, divides the sums instead of the mask's token count (see :func:`masked_mean`).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask, count=count)
    clipfrac = masked_mean((clipped_loss > unclipped_loss).to(values.dtype), mask, count=count)
    return loss, clipfrac.detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution given by ``logits`` over the last dimension (TRL's chunked op)."""
    from trl.trainer.utils import entropy_from_logits as trl_entropy  # TRL loads slowly: only when a model runs

    return trl_entropy(logits)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of each ``labels`` token under ``logits`` (TRL's ``selective_log_softmax``), in float32 at least.

    Half-precision logits are upcast one row at a time: TRL's own half-precision path returns half-precision
    log-probs, too coarse for the PPO ratio, and a float32 copy of the whole batch is often the step's largest tensor.
    """
    from trl.trainer.utils import selective_log_softmax

    if logits.dtype in (torch.float16, torch.bfloat16):
        rows = zip(logits, labels, strict=True)
        return torch.stack([selective_log_softmax(row.float(), row_labels) for row, row_labels in rows])
    return selective_log_softmax(logits, labels)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last valid (mask 1) position in each row of a padded batch; -1 for a row with none."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=-1).values


class FixedKLController:
    """A constant KL coefficient, with the same interface as :class:`AdaptiveKLController`."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Keep the coefficient unchanged."""


class AdaptiveKLController:
    """Ziegler et al. (2019) proportional controller that steers the observed KL towards ``target``.

    After each batch of ``n_steps`` episodes: ``error = clip(kl / target - 1, -0.2, 0.2)`` and
    ``value *= 1 + error * n_steps / horizon``, so the coefficient moves at most 20% per ``horizon`` episodes.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got target={target}, horizon={horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Scale the coefficient up when the KL is above target and down when below."""
        if not math.isfinite(current_kl):
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

"""Every PPO maths function against numbers worked out by hand (the working is in the comments)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment.rl import ops


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# Valid entries {1, 3, 5}: mean 3, squared deviations 4 + 0 + 4 = 8, unbiased var 8/2 = 4, biased 8/3, std 2.
VALUES = torch.tensor([[1.0, 3.0, 9.0], [5.0, 7.0, 7.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_masked_mean_overall_per_row_and_empty_row():
    close(ops.masked_mean(VALUES, MASK), 3.0)
    close(ops.masked_mean(VALUES, MASK, dim=1), [2.0, 5.0])
    close(ops.masked_mean(torch.tensor([[4.0, 2.0]]), torch.tensor([[0, 0]]), dim=1), [0.0])


def test_masked_mean_with_a_batch_count_adds_up_over_chunks():
    # Valid {1, 3} in row 0 and {5} in row 1: each row's sum over the batch's 3 tokens, 4/3 + 5/3 = 3 = the mean.
    count = MASK.sum()
    parts = [ops.masked_mean(VALUES[i : i + 1], MASK[i : i + 1], count=count) for i in range(2)]
    close(torch.stack(parts), [4.0 / 3.0, 5.0 / 3.0])
    close(parts[0] + parts[1], ops.masked_mean(VALUES, MASK))
    close(ops.masked_mean(VALUES, MASK * 0, count=torch.tensor(0.0)), 0.0)  # an empty batch still gives 0


def test_clipped_losses_of_chunks_add_up_to_the_batch_losses():
    g = torch.Generator().manual_seed(0)
    logprobs, old, advantages, values, old_values, returns = torch.randn(6, 3, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    whole = ops.clipped_policy_loss(logprobs, old, advantages, mask, 0.2) + ops.clipped_value_loss(
        values, old_values, returns, mask, 0.2
    )
    count = mask.sum()
    parts = [
        ops.clipped_policy_loss(logprobs[rows], old[rows], advantages[rows], mask[rows], 0.2, count=count)
        + ops.clipped_value_loss(values[rows], old_values[rows], returns[rows], mask[rows], 0.2, count=count)
        for rows in ([0, 2], [1])
    ]
    for total, first, second in zip(whole, *parts, strict=True):
        close(first + second, total)


def test_masked_var_unbiased_and_biased():
    close(ops.masked_var(VALUES, MASK), 4.0)
    close(ops.masked_var(VALUES, MASK, unbiased=False), 8.0 / 3.0)
    close(ops.masked_var(torch.tensor([[7.0, 1.0]]), torch.tensor([[1, 0]])), 0.0)  # one entry: no Bessel


def test_masked_whiten_with_and_without_mean_shift():
    # (x - 3) / 2 on valid entries; padding is zeroed.
    close(ops.masked_whiten(VALUES, MASK), [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], atol=1e-5)
    # shift_mean=False adds the mean 3 back.
    close(ops.masked_whiten(VALUES, MASK, shift_mean=False), [[2.0, 3.0, 0.0], [4.0, 0.0, 0.0]], atol=1e-5)


def test_kl_estimators():
    logprobs = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-1.5, -1.0])
    # log_ratio = logprobs - ref = [0.5, -1.0]
    close(ops.kl_penalty(logprobs, ref, "k1"), [0.5, -1.0])
    close(ops.kl_penalty(logprobs, ref, "k2"), [0.125, 0.5])  # 0.5 * log_ratio**2
    # k3 = exp(-lr) - 1 + lr: exp(-0.5) - 0.5 = 0.6065307 - 0.5; exp(1) - 2 = 0.7182818
    close(ops.kl_penalty(logprobs, ref, "k3"), [0.1065307, 0.7182818])
    close(ops.kl_penalty(ref, ref, "k3"), [0.0, 0.0])
    with pytest.raises(ValueError, match="k4"):
        ops.kl_penalty(logprobs, ref, "k4")


def test_gae_worked_example_with_padding():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 1.0, 7.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 2.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = ops.gae(rewards, values, mask, gamma, lam)
    # Row 0: t2: delta = 1 - 0.3 = 0.7, A2 = 0.7
    #        t1: delta = 0.9*0.3 - 0.4 = -0.13, A1 = -0.13 + 0.72*0.7 = 0.374
    #        t0: delta = 0.9*0.4 - 0.5 = -0.14, A0 = -0.14 + 0.72*0.374 = 0.12928
    # Row 1 (t2 is padding, terminal after t1): t1: delta = 1 - 2 = -1, A1 = -1
    #        t0: delta = 0.5 + 0.9*2 - 1 = 1.3, A0 = 1.3 + 0.72*(-1) = 0.58
    close(advantages, [[0.12928, 0.374, 0.7], [0.58, -1.0, 0.0]], atol=1e-5)
    # returns = advantages + values on valid tokens, 0 on padding
    close(returns, [[0.62928, 0.774, 1.0], [1.58, 1.0, 0.0]], atol=1e-5)


def test_clipped_policy_loss_in_and_out_of_range():
    # ratios 1.5 (A=+1: clipped to 1.2), 1.1 (A=-2: inside), 0.5 (A=-1: clipped to 0.8), last token is padding.
    old = torch.zeros(1, 4)
    logprobs = torch.log(torch.tensor([[1.5, 1.1, 0.5, 3.0]]))
    advantages = torch.tensor([[1.0, -2.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clipfrac, approx_kl = ops.clipped_policy_loss(logprobs, old, advantages, mask, cliprange=0.2)
    # per-token max(-A*r, -A*clip(r)): max(-1.5, -1.2) = -1.2; max(2.2, 2.2) = 2.2; max(0.5, 0.8) = 0.8
    close(loss, (-1.2 + 2.2 + 0.8) / 3)
    close(clipfrac, 2.0 / 3.0)
    # 0.5 * mean(log(1.5)^2, log(1.1)^2, log(0.5)^2) = 0.5 * (0.1644020 + 0.0090840 + 0.4804530) / 3
    close(approx_kl, 0.1089898)


def test_clipped_policy_loss_at_ratio_one_is_minus_mean_advantage():
    lp = torch.tensor([[-0.3, -2.0]])
    loss, clipfrac, approx_kl = ops.clipped_policy_loss(lp, lp, torch.tensor([[1.0, 3.0]]), torch.ones(1, 2), 0.2)
    close(loss, -2.0)
    close(clipfrac, 0.0)
    close(approx_kl, 0.0)


def test_clipped_value_loss_in_and_out_of_range():
    values = torch.tensor([[1.5, 1.1, 1.0, 50.0]])
    old = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    returns = torch.tensor([[2.0, 0.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clipfrac = ops.clipped_value_loss(values, old, returns, mask, cliprange_value=0.2)
    # t0: clipped v = 1.2, max((1.5-2)^2, (1.2-2)^2) = max(0.25, 0.64) = 0.64 (clipped wins)
    # t1: inside the range, (1.1-0)^2 = 1.21 both ways
    # t2: clipped v = 0.2, max((1+1)^2, (0.2+1)^2) = max(4, 1.44) = 4 (unclipped wins)
    close(loss, 0.5 * (0.64 + 1.21 + 4.0) / 3)
    close(clipfrac, 1.0 / 3.0)


def test_entropy_and_logprobs_from_logits():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0986123, -1e9, -1e9]])  # uniform; probs 0.25 / 0.75
    # ln 4 = 1.3862944; -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.3465736 + 0.2157616
    close(ops.entropy_from_logits(logits), [1.3862944, 0.5623351], atol=1e-5)
    labels = torch.tensor([[2, 1], [1, 0]])
    two = torch.stack([logits, logits])  # (batch 2, seq 2, vocab 4)
    out = ops.logprobs_from_logits(two, labels)
    # row 0: token 2 under uniform = ln 0.25, token 1 under [.25,.75] = ln 0.75; row 1: ln 0.25, ln 0.25
    close(out, [[-1.3862944, -0.2876821], [-1.3862944, -1.3862944]], atol=1e-5)
    half = ops.logprobs_from_logits(two.to(torch.bfloat16), labels)
    assert half.dtype == torch.float32
    close(half, [[-1.3862944, -0.2876821], [-1.3862944, -1.3862944]], atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logprobs_and_entropy_equal_the_full_softmax_ones(dtype):
    """TRL's memory-saving ops give what a full log-softmax gives; half precision comes back as float32."""
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 11, dtype=torch.float64) * 4).to(dtype)
    labels = torch.randint(0, 11, (3, 5))
    full = torch.log_softmax(logits.double(), dim=-1)
    out = ops.logprobs_from_logits(logits, labels)
    assert out.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
    close(out, full.gather(-1, labels.unsqueeze(-1)).squeeze(-1).to(out.dtype), atol=1e-5)
    if dtype != torch.bfloat16:
        close(ops.entropy_from_logits(logits), -(full.exp() * full).sum(-1).to(dtype), atol=1e-5)


def test_last_token_index_with_padding_and_empty_row():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]])
    assert ops.last_token_index(mask).tolist() == [1, 3, -1, 2]


def test_kl_controllers():
    fixed = ops.FixedKLController(0.05)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.05
    ctl = ops.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(9.0, 1000)  # error = clip(9/6 - 1 = 0.5) = 0.2 -> x (1 + 0.2 * 0.1) = 0.102
    assert ctl.value == pytest.approx(0.102)
    ctl.update(3.0, 1000)  # error = clip(-0.5) = -0.2 -> x 0.98 = 0.09996
    assert ctl.value == pytest.approx(0.09996)
    ctl.update(6.6, 500)  # error = 0.1 -> x (1 + 0.1 * 0.05) = 0.1004598
    assert ctl.value == pytest.approx(0.1004598)
    with pytest.raises(ValueError):
        ops.AdaptiveKLController(0.1, target=0.0, horizon=10)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=6), st.floats(0.5, 1.0), st.floats(0.0, 1.0))
def test_gae_with_lambda_one_gives_discounted_returns(rewards, gamma, lam):
    """Property: at lam=1, returns are the discounted reward-to-go whatever the values; at any lam, A = R - V."""
    r = torch.tensor([rewards], dtype=torch.float64)
    v = torch.linspace(-1, 1, len(rewards), dtype=torch.float64).unsqueeze(0)
    mask = torch.ones_like(r)
    _, returns = ops.gae(r, v, mask, gamma, 1.0)
    expected = [sum(gamma**k * x for k, x in enumerate(rewards[t:])) for t in range(len(rewards))]
    close(returns, [expected], atol=1e-9)
    advantages, returns = ops.gae(r, v, mask, gamma, lam)
    close(returns - v, advantages, atol=1e-12)

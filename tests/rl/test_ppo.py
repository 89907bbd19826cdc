"""PPOTrainer end to end on a tiny random Qwen2: learning, reward shaping, determinism, LoRA, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from datasets import Dataset

from alignment.errors import AlignmentError
from alignment.rewards import RewardFunction
from alignment.rl.ppo import PPOSettings, PPOTrainer, settings_from_dict
from alignment.rl.rollout import response_logprobs
from tests.families import PPO_TEXTS, tiny_qwen2, tiny_tokenizer

STATS = (
    "score non_score_reward kl entropy policy_clipfrac value_clipfrac value_loss policy_loss approx_kl "
    "response_length kl_coef episodes time_rollout time_update time_step lr value_lr step"
).split()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(PPO_TEXTS)


def models(tok, seed: int = 0):
    """Policy, its copy as the reference, and a value model, drawn one after the other from ``seed``."""
    policy = tiny_qwen2(tok, seed)
    value = tiny_qwen2(tok, seed=None, score=True)
    return policy, copy.deepcopy(policy), value


def dataset(tok) -> Dataset:
    prompts = [[{"role": "user", "content": t}] for t in ("hi", "the cat", "你好", "a b c", "x y", "hello", "mat")]
    ids = [tok.apply_chat_template(p, add_generation_prompt=True, return_dict=False) for p in prompts]
    return Dataset.from_dict({"prompt_ids": ids, "prompt": prompts, "oracle": ["a"] * len(ids)})


def share_of_a(prompts, responses, oracle):
    """Reward: fraction of the response's characters that are the oracle character."""
    return [sum(c == o for c in r) / max(len(r), 1) for r, o in zip(responses, oracle, strict=True)]


def settings(**overrides) -> PPOSettings:
    base = dict(
        learning_rate=1e-2,
        rollout_batch_size=16,
        mini_batch_size=8,
        ppo_epochs=2,
        max_steps=3,
        max_new_tokens=8,
        kl_coef=0.01,
    )
    return PPOSettings(**(base | overrides))


def test_ppo_raises_the_reward_and_logs_every_stat(tok):
    policy, ref, value = models(tok)
    before_policy = [p.detach().clone() for p in policy.parameters()]
    before_value = [p.detach().clone() for p in value.parameters()]
    seen = []
    trainer = PPOTrainer(
        policy,
        ref,
        value,
        tok,
        share_of_a,
        dataset(tok),
        settings(max_steps=30),
        [tok.eos_token_id],
        callbacks=seen.append,
    )
    final = trainer.train()
    assert len(trainer.history) == 30 and seen == trainer.history and final == trainer.history[-1]
    for stats in trainer.history:
        assert set(STATS) <= set(stats)
        assert all(math.isfinite(v) for v in stats.values())
    assert final["episodes"] == 30 * 16
    scores = [s["score"] for s in trainer.history]
    assert sum(scores[-5:]) / 5 > sum(scores[:5]) / 5 + 0.3
    assert trainer.history[-1]["lr"] < trainer.history[0]["lr"]  # linear decay
    assert any(not torch.equal(a, b) for a, b in zip(before_policy, policy.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before_value, value.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before_policy, ref.parameters(), strict=True))


def test_rewards_are_score_at_last_token_minus_kl_and_missing_eos_penalty(tok):
    policy, _, value = models(tok)
    ref = tiny_qwen2(tok, seed=7)  # a different reference, so the KL term is not zero
    s = settings(kl_coef=0.1, gamma=1.0, lam=1.0, whiten_advantages=False, missing_eos_penalty=0.5)
    stop = list(range(3, len(tok), 3))  # a third of the vocabulary stops: a mix of finished and truncated rows
    trainer = PPOTrainer(policy, ref, value, tok, lambda p, r, o: [2.0] * len(r), dataset(tok), s, stop)
    batch, stats = trainer._rollout(trainer._next_rows())
    mask, width, ids = batch["mask"], batch["width"], batch["input_ids"]
    valid = mask.bool()
    with torch.no_grad():
        kl = (batch["logprobs"] - response_logprobs(ref, ids, batch["attention_mask"], width, 1.0)) * mask
    rows = zip(ids[:, width:], mask, strict=True)
    finished = torch.tensor([bool(set(r[m.bool()].tolist()) & set(stop)) for r, m in rows])
    assert finished.any() and not finished.all()
    score = 2.0 - 0.5 * (~finished).float()
    # gamma = lam = 1: the return at token t is the score plus all KL penalties from t to the end.
    to_go = torch.flip(torch.cumsum(torch.flip(-0.1 * kl, [1]), 1), [1])
    torch.testing.assert_close(batch["returns"][valid], (score[:, None] + to_go)[valid], atol=1e-4, rtol=0)
    torch.testing.assert_close(batch["advantages"], (batch["returns"] - batch["values"]) * mask, atol=1e-5, rtol=0)
    assert (batch["returns"][~valid] == 0).all()
    assert stats["score"] == pytest.approx(2.0)
    assert stats["kl"] == pytest.approx(kl.sum(1).mean().item(), abs=1e-4)
    assert stats["non_score_reward"] == pytest.approx(-0.1 * kl.sum(1).mean().item(), abs=1e-4)
    assert stats["response_length"] == pytest.approx(mask.sum(1).mean().item())


def test_training_is_deterministic_given_the_seed(tok):
    runs = []
    for _ in range(2):
        policy, ref, value = models(tok)
        trainer = PPOTrainer(policy, ref, value, tok, share_of_a, dataset(tok), settings(), [tok.eos_token_id])
        trainer.train()
        runs.append([{k: v for k, v in s.items() if not k.startswith("time")} for s in trainer.history])
    assert runs[0] == runs[1]


def test_lora_policy_uses_the_disabled_adapter_as_reference(tok):
    from peft import LoraConfig, get_peft_model

    policy, _, value = models(tok)
    policy = get_peft_model(policy, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    value = get_peft_model(value, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="SEQ_CLS"))
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    trainer = PPOTrainer(policy, None, value, tok, share_of_a, dataset(tok), settings(), [tok.eos_token_id])
    trainer.train()
    # LoRA B starts at zero, so the first rollout's policy equals the reference; after updates it differs.
    assert trainer.history[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert abs(trainer.history[-1]["kl"]) > 1e-4
    params = dict(policy.named_parameters())
    assert all(torch.equal(p, params[n]) for n, p in frozen.items())
    assert any(not torch.equal(p, params[n]) for n, p in lora.items())


def test_accumulation_adaptive_kl_k3_entropy_and_reward_whitening_run(tok):
    policy, ref, value = models(tok)
    s = settings(
        gradient_accumulation_steps=2,
        adaptive_kl=True,
        kl_target=0.01,
        kl_horizon=100,
        kl_estimator="k3",
        entropy_coef=0.01,
        whiten_rewards=True,
        value_learning_rate=1e-3,
        lr_scheduler_type="constant",
        forward_batch_size=5,
    )
    reward_fn = RewardFunction([("share", 1.0, share_of_a)])
    trainer = PPOTrainer(policy, ref, value, tok, reward_fn, dataset(tok), s, [tok.eos_token_id])
    trainer.train()
    history = trainer.history
    assert [h["score/share"] for h in history] == pytest.approx([h["score"] for h in history])  # per source
    assert all(math.isfinite(v) for stats in history for v in stats.values())
    assert history[0]["kl_coef"] == 0.01 and history[-1]["kl_coef"] != 0.01  # adapted towards the target
    assert {h["lr"] for h in history} == {1e-2} and {h["value_lr"] for h in history} == {1e-3}


def test_errors_a_user_can_fix(tok):
    from accelerate import Accelerator

    policy, ref, value = models(tok)
    data, stop = dataset(tok), [tok.eos_token_id]
    with pytest.raises(AlignmentError, match="mini_batch_size"):
        settings(mini_batch_size=5).validate()
    with pytest.raises(AlignmentError, match="kl_estimator"):
        settings(kl_estimator="k9").validate()
    with pytest.raises(AlignmentError, match="unknown ppo setting"):
        settings_from_dict({"learning_rat": 1.0})
    with pytest.raises(AlignmentError, match="peft"):
        PPOTrainer(policy, None, value, tok, share_of_a, data, settings(), stop)
    with pytest.raises(AlignmentError, match="score head"):
        PPOTrainer(policy, ref, tiny_qwen2(tok, seed=None), tok, share_of_a, data, settings(), stop)
    with pytest.raises(AlignmentError, match="prompt_ids"):
        PPOTrainer(policy, ref, value, tok, share_of_a, data.remove_columns("prompt_ids"), settings(), stop)
    with pytest.raises(AlignmentError, match="gradient_accumulation_steps"):
        PPOTrainer(
            policy, ref, value, tok, share_of_a, data, settings(), stop, Accelerator(gradient_accumulation_steps=4)
        )
    trainer = PPOTrainer(policy, ref, value, tok, lambda p, r, o: [1.0], data, settings(), stop)
    with pytest.raises(AlignmentError, match="16 finite floats"):
        trainer.train()


def test_trimmed_minibatch_gives_the_same_logprobs_and_values_on_the_kept_columns(tok):
    from alignment.rl.ppo import PolicyAndValue, trim_padding

    policy, ref, value = models(tok)
    trainer = PPOTrainer(policy, ref, value, tok, share_of_a, dataset(tok), settings(), [tok.eos_token_id])
    batch, _ = trainer._rollout(trainer._next_rows())
    wrapper = PolicyAndValue(policy, value)
    # The two shortest-prompt rows: they share left padding that the full rollout needs for longer prompts.
    order = batch["attention_mask"][:, : batch["width"]].sum(1).argsort()[:2]
    mb = {k: v[order] if torch.is_tensor(v) else v for k, v in batch.items()}
    trimmed = trim_padding(mb)
    assert trimmed["input_ids"].shape[1] < mb["input_ids"].shape[1]
    keep = trimmed["mask"].shape[1]
    assert torch.equal(trimmed["mask"], mb["mask"][:, :keep]) and not mb["mask"][:, keep:].any()
    with torch.no_grad():
        logits, values = wrapper(mb["input_ids"], mb["attention_mask"], mb["width"], 1.0)
        t_logits, t_values = wrapper(trimmed["input_ids"], trimmed["attention_mask"], trimmed["width"], 1.0)
    valid = trimmed["mask"].bool()
    assert torch.allclose(t_logits[valid], logits[:, :keep][valid], atol=1e-4)
    assert torch.allclose(t_values[valid], values[:, :keep][valid], atol=1e-4)


def trainer_pair(tok, monkeypatch, **overrides) -> tuple[PPOTrainer, PPOTrainer]:
    """Two trainers on identical float64 models, one grouping rows by length, one dense; free forwards (overhead 0),
    so the grouped one splits into as many length groups as save any padding."""
    from alignment.rl import padding

    monkeypatch.setattr(padding, "FORWARD_OVERHEAD_TOKENS", 0)
    trainers = []
    for group in (True, False):
        policy, ref, value = (m.double() for m in models(tok))
        s = settings(group_by_length=group, **overrides)
        trainers.append(PPOTrainer(policy, ref, value, tok, share_of_a, dataset(tok), s, [tok.eos_token_id]))
    return trainers[0], trainers[1]


def test_grouped_rollout_scores_equal_the_dense_ones(tok, monkeypatch):
    grouped, dense = trainer_pair(tok, monkeypatch, forward_batch_size=3, max_new_tokens=12)
    calls = []
    policy = grouped.accelerator.unwrap_model(grouped.model).policy
    policy.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    torch.manual_seed(5)
    batch, stats = grouped._rollout(grouped._next_rows())
    torch.manual_seed(5)
    dense_batch, dense_stats = dense._rollout(dense._next_rows())
    assert torch.equal(batch["input_ids"], dense_batch["input_ids"])  # the same samples: sampling is untouched
    lengths = batch["mask"].sum(1)
    assert lengths.min() < lengths.max() and (lengths == 12).any()  # short, long and unfinished responses
    for key in ("logprobs", "values", "advantages", "returns"):
        torch.testing.assert_close(batch[key], dense_batch[key], atol=1e-10, rtol=0)
    assert stats == pytest.approx(dense_stats, rel=1e-6, abs=1e-9)  # values and entropy are float32
    scoring = [shape for shape in calls if shape[1] > batch["width"]]  # not generate's one-token steps
    assert len(scoring) > 6 and all(rows <= 3 for rows, _ in scoring)  # more than dense's 16 / 3, at most 3 rows


@pytest.mark.parametrize("accumulation", [1, 2])
def test_grouped_update_gives_the_dense_parameters_and_stats(tok, monkeypatch, accumulation):
    grouped, dense = trainer_pair(tok, monkeypatch, gradient_accumulation_steps=accumulation, entropy_coef=0.05)
    batch, _ = dense._rollout(dense._next_rows())
    grouped._next_rows()  # the same draws from the shuffling generator, so both take the same minibatches
    parts = []
    losses = grouped._compute_losses
    monkeypatch.setattr(
        grouped, "_compute_losses", lambda part, count: parts.append(len(part["rows"])) or losses(part, count)
    )
    stats, dense_stats = grouped._update(batch), dense._update(batch)
    micro_batches = 2 * 16 // (8 // accumulation)  # ppo_epochs x rollout / micro-batch rows
    assert len(parts) > micro_batches and sum(parts) == 2 * 16  # really split, every row once per epoch
    assert stats == pytest.approx(dense_stats, rel=1e-6, abs=1e-9)  # values and entropy are float32
    for a, b in zip(grouped.model.parameters(), dense.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
    start, trained = models(tok)[0].double().parameters(), dense.model.policy.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(start, trained, strict=True))  # the update did move


def test_grouped_training_matches_dense_training(tok, monkeypatch):
    grouped, dense = trainer_pair(tok, monkeypatch)
    for trainer in (grouped, dense):
        torch.manual_seed(11)
        trainer.train()
    for a, b in zip(grouped.history, dense.history, strict=True):
        untimed = {k: v for k, v in a.items() if not k.startswith("time")}
        assert untimed == pytest.approx({k: v for k, v in b.items() if not k.startswith("time")}, rel=1e-6, abs=1e-9)


def test_group_by_length_must_be_a_bool():
    with pytest.raises(AlignmentError, match="group_by_length"):
        settings(group_by_length="yes").validate()


def test_a_reward_model_sharing_the_tokenizer_scores_the_sampled_tokens(tok, tmp_path, monkeypatch):
    from alignment.rewards import build_reward_fn

    policy, ref, value = models(tok)
    value.save_pretrained(tmp_path)  # a reward model with the policy's tokenizer
    tok.save_pretrained(tmp_path)
    reward_fn = build_reward_fn([{"type": "model", "path": str(tmp_path)}], tokenizer=tok, device="cpu")
    scorer = reward_fn.sources[0][2]
    seen = []
    score = scorer._score
    monkeypatch.setattr(scorer, "_score", lambda chunk: seen.extend(chunk) or score(chunk))
    # A third of the vocabulary stops (the end-of-turn among them): a mix of finished and truncated replies.
    stop = sorted(set(range(3, len(tok), 3)) | {tok.eos_token_id})
    trainer = PPOTrainer(policy, ref, value, tok, reward_fn, dataset(tok), settings(max_new_tokens=6), stop)
    rows = trainer._next_rows()
    batch, _ = trainer._rollout(rows)
    width = batch["width"]
    responses = zip(rows["prompt_ids"], batch["input_ids"][:, width:], batch["mask"], strict=True)
    sampled = [list(p) + r[m.bool()].tolist() for p, r, m in responses]
    assert sorted(seen) == sorted(sampled)  # the very tokens sampled, prompt included
    cut_short = [row for row in sampled if row[-1] not in stop]
    assert cut_short and len(cut_short) < len(sampled)  # and a reply cut short got no end-of-turn


# Measured from the PPO loop as it stood before its renovation onto TRL's log-prob ops, transformers' scheduler and
# accelerate's checkpoint state; they only guard that such rewrites keep the numbers (a regression test), they are
# not derived by hand. ``score`` is the reward.
PINNED = {  # name: (settings overrides, each stat's value at steps 1, 2, 3)
    "default": (
        {},
        {
            "policy_loss": [-0.04175077844411135, -0.04761476628482342, -0.033238621428608894],
            "value_loss": [0.016252204310148954, 0.0051444522105157375, 0.0011374983296263963],
            "approx_kl": [0.023931348230689764, 0.007238861231602612, 0.002503845578758046],
            "policy_clipfrac": [0.21875, 0.08234127052128315, 0.01171875],
            "value_clipfrac": [0.01171875, 0.0, 0.18359375],
            "entropy": [5.674672842025757, 5.659903645515442, 5.650742888450623],
            "score": [0.02708333358168602, 0.017045455053448677, 0.024626415222883224],
            "kl": [0.0, 0.027529865503311157, 0.18216022849082947],
            "lr": [0.006666666666666668, 0.003333333333333334, 0.0],
        },
    ),
    "accumulation_entropy_constant": (
        {
            "gradient_accumulation_steps": 2,
            "entropy_coef": 0.05,
            "lr_scheduler_type": "constant",
            "whiten_rewards": True,
        },
        {
            "policy_loss": [-0.05564492428675294, -0.0451766662299633, -0.04022157937288284],
            "value_loss": [2.532467521727085, 2.6424712352454662, 2.508796891197562],
            "approx_kl": [0.029051443503705254, 0.024921812233519997, 0.018383379443549952],
            "policy_clipfrac": [0.3359375, 0.25176411122083664, 0.25],
            "value_clipfrac": [0.203125, 0.16796875, 0.0],
            "entropy": [5.673435091972351, 5.658461332321167, 5.6181734800338745],
            "score": [0.02708333358168602, 0.014610390178859234, 0.008333333767950535],
            "kl": [0.0, 0.09098878502845764, 0.2986058294773102],
            "lr": [0.01, 0.01, 0.01],
        },
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_ppo_losses_stay_the_pinned_ones(tok, name):
    """Same seed, same tiny models: every step's losses and stats equal the ones measured before (rel 1e-4)."""
    overrides, expected = PINNED[name]
    policy, ref, value = models(tok)
    trainer = PPOTrainer(policy, ref, value, tok, share_of_a, dataset(tok), settings(**overrides), [tok.eos_token_id])
    trainer.train()
    for key, values in expected.items():
        assert [stats[key] for stats in trainer.history] == pytest.approx(values, rel=1e-4, abs=1e-9), key


def test_first_minibatch_of_each_step_has_ratio_one(tok, monkeypatch):
    """Before a step's first optimiser update the policy is the rollout's policy: ratio 1, so the stats that measure
    the ratio's move (``approx_kl`` = mean(log ratio^2)/2, ``policy_clipfrac``) are 0 there, and later ones are not."""
    policy, ref, value = models(tok)
    s = settings(group_by_length=False)  # one forward per micro-batch: each _compute_losses call is one minibatch
    trainer = PPOTrainer(policy, ref, value, tok, share_of_a, dataset(tok), s, [tok.eos_token_id])
    seen = []
    losses = trainer._compute_losses
    monkeypatch.setattr(trainer, "_compute_losses", lambda part, count: seen.append(losses(part, count)) or seen[-1])
    trainer.train()
    per_step = s.ppo_epochs * s.rollout_batch_size // s.mini_batch_size
    assert len(seen) == s.max_steps * per_step
    for step in range(s.max_steps):
        first, *later = seen[step * per_step : (step + 1) * per_step]
        assert first["approx_kl"].item() == pytest.approx(0.0, abs=1e-6)
        assert first["policy_clipfrac"].item() == pytest.approx(0.0, abs=1e-6)
        assert all(terms["approx_kl"].item() > 1e-6 for terms in later)


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(lr_scheduler_type="constant", value_learning_rate=1e-3, max_steps=2, ppo_epochs=3, mini_batch_size=4)],
)
def test_learning_rate_schedule_is_the_linear_decay_or_constant(tok, overrides):
    """Every optimiser step's rates equal the schedule's formula: linear decay from the rate to 0 over all updates
    (max_steps x ppo_epochs x rollout / minibatch), or constant; the value model's group on its own rate."""
    import warnings

    s = settings(**overrides)
    policy, ref, value = models(tok)
    trainer = PPOTrainer(policy, ref, value, tok, share_of_a, dataset(tok), s, [tok.eos_token_id])
    updates = s.max_steps * s.ppo_epochs * s.rollout_batch_size // s.mini_batch_size
    value_lr = s.value_learning_rate or s.learning_rate
    seen, expected = [], []
    for n in range(updates + 1):
        factor = max(0.0, 1.0 - n / updates) if s.lr_scheduler_type == "linear" else 1.0
        expected.append([s.learning_rate * factor, value_lr * factor])
        seen.append(trainer.scheduler.get_last_lr())
        with warnings.catch_warnings():  # stepped without an optimiser step: only the rates are looked at
            warnings.simplefilter("ignore")
            trainer.scheduler.step()
    assert seen == [pytest.approx(lrs, rel=1e-12, abs=1e-15) for lrs in expected]
    assert len({tuple(lrs) for lrs in seen}) == (1 if s.lr_scheduler_type == "constant" else updates + 1)


def test_the_run_seed_seeds_ppo_and_a_different_trainer_seed_is_refused(tok):
    from hydra import compose, initialize_config_dir

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR
    from alignment.rl.settings import stage_settings
    from alignment.trainer.checks import check_trainer_config

    assert stage_settings({"learning_rate": 0.1}, 3).seed == 3
    assert stage_settings({"seed": None}, 3).seed == 3  # the schema's default: not given
    assert stage_settings({"seed": 7}, 7).seed == 7  # repeating the run's seed is harmless
    with pytest.raises(AlignmentError, match=r"trainer\.seed=5 is not used by stage=ppo.*set seed=5"):
        stage_settings({"seed": 5}, 42)
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        refused = compose("config", overrides=["stage=ppo", "trainer.seed=5"])
        agreed = compose("config", overrides=["stage=ppo", "trainer.seed=5", "seed=5"])
    with pytest.raises(AlignmentError, match=r"trainer\.seed=5 .*seed \(42\)"):
        check_trainer_config(refused)  # before any model loads
    check_trainer_config(agreed)
    # PPOTrainer on its own (seed None) keeps its default seed of 42: the data order it draws is that seed's.
    policy, ref, value = models(tok)
    trainer = PPOTrainer(policy, ref, value, tok, share_of_a, dataset(tok), settings(), [tok.eos_token_id])
    assert trainer.settings.seed is None
    assert torch.equal(trainer._order.get_state(), torch.Generator().manual_seed(42).get_state())

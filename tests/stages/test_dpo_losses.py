"""Conservative DPO (``loss_type=cdpo``) in the real trainer's loss code, and the KL-to-reference estimator."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.errors import AlignmentError
from alignment.paths import DATA_DIR
from alignment.stages.dpo import check_loss_settings, dpo_trainer_class, expand_losses
from alignment.stages.reference_kl import sample_rows, sequence_kl

TINY = DATA_DIR / "tiny-base"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY)


def tiny_model():
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)


def hand_cdpo(h: list[float], beta: float, eps: float) -> float:
    """The cDPO loss written out: -(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h), averaged over pairs."""

    def log_sigmoid(x: float) -> float:
        return -math.log(1.0 + math.exp(-x))

    return sum(-(1 - eps) * log_sigmoid(beta * x) - eps * log_sigmoid(-beta * x) for x in h) / len(h)


# Two pairs, completions of 3 tokens after a 2-token prompt; per-token log-probs crafted by hand.
CHOSEN_LOGPS = [[-0.5, -1.0, -0.25], [-2.0, -0.5, -0.5]]
REJECTED_LOGPS = [[-1.5, -1.0, -1.0], [-0.25, -0.25, -0.5]]
REF_CHOSEN = [-2.0, -2.5]
REF_REJECTED = [-3.0, -1.5]
# h = (chosen - ref_chosen) - (rejected - ref_rejected): (-1.75 + 2.0) - (-3.5 + 3.0) = 0.75 and (-3.0 + 2.5) - (-1.0 + 1.5) = -1.0
H = [0.75, -1.0]


class CraftedPolicy(torch.nn.Module):
    """Stands in for the policy in the trainer's loss: returns the crafted per-token log-probs (TRL's fused head
    output fields), zero on prompt positions."""

    def forward(self, input_ids=None, **kwargs):
        n, length = input_ids.shape
        logps = torch.zeros(n, length - 1)
        for i, row in enumerate(CHOSEN_LOGPS + REJECTED_LOGPS):
            logps[i, 1:4] = torch.tensor(row)  # shifted: completion tokens 2..4 are predicted at positions 1..3
        zeros = torch.zeros(n, length - 1)
        return SimpleNamespace(log_probs=logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def crafted_batch() -> dict:
    ids = torch.tensor([[5, 6, 7, 8, 9]] * 4)
    completion = torch.tensor([[0, 0, 1, 1, 1]] * 4)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "completion_mask": completion,
        "ref_chosen_logps": torch.tensor(REF_CHOSEN),
        "ref_rejected_logps": torch.tensor(REF_REJECTED),
    }


def make_trainer(tokenizer, tmp_path, **config):
    from trl import DPOConfig

    pairs = Dataset.from_list([{"prompt_ids": [5, 6], "chosen_ids": [7, 8, 9], "rejected_ids": [7, 9, 8]}] * 2)
    args = DPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, **config)
    trainer = dpo_trainer_class()(
        model=tiny_model(), ref_model=tiny_model(), args=args, train_dataset=pairs, processing_class=tokenizer
    )
    trainer.precompute_ref_logps = True  # read the crafted reference log-probs from the batch
    return trainer


def trainer_loss(trainer) -> float:
    return float(trainer._compute_loss(CraftedPolicy(), crafted_batch(), return_outputs=False))


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_cdpo_in_the_trainer_equals_the_hand_formula(tokenizer, tmp_path, eps):
    beta = 0.5
    trainer = make_trainer(tokenizer, tmp_path, loss_type=["cdpo"], label_smoothing=eps, beta=beta)
    assert trainer.args.loss_type == ["cdpo"]  # the arguments (saved with checkpoints) keep the user's name
    assert trainer_loss(trainer) == pytest.approx(hand_cdpo(H, beta, eps), rel=1e-6)
    # Not TRL's robust (rDPO), which divides by 1 - 2 eps and subtracts the flipped term.
    trainer.loss_types, trainer.loss_weights = ["robust"], [1.0]
    assert trainer_loss(trainer) != pytest.approx(hand_cdpo(H, beta, eps), rel=1e-3)


def test_cdpo_with_eps_zero_is_trls_sigmoid_loss_and_works_in_a_list(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, loss_type=["cdpo"], label_smoothing=0.0, beta=0.5)
    cdpo = trainer_loss(trainer)
    trainer.loss_types, trainer.loss_weights = ["sigmoid"], [1.0]
    assert cdpo == trainer_loss(trainer)
    assert cdpo == pytest.approx(hand_cdpo(H, 0.5, 0.0), rel=1e-6)
    # In a list with TRL's sft term: weighted sum of cdpo and the chosen replies' mean NLL.
    trainer = make_trainer(
        tokenizer, tmp_path, loss_type=["cdpo", "sft"], loss_weights=[1.0, 0.5], label_smoothing=0.2, beta=0.5
    )
    nll = -sum(sum(row) for row in CHOSEN_LOGPS) / 6
    assert trainer_loss(trainer) == pytest.approx(hand_cdpo(H, 0.5, 0.2) + 0.5 * nll, rel=1e-6)


def test_expand_losses_maps_cdpo_to_trls_sigmoid_and_robust():
    assert expand_losses(["cdpo", "sft"], [2.0, 0.5], 0.1) == (
        ["sigmoid", "robust", "sft"],
        [pytest.approx(3.6), pytest.approx(-1.6), 0.5],
    )
    assert expand_losses(["cdpo"], None, 0.0) == (["sigmoid"], [1.0])
    assert expand_losses(["ipo"], None, 0.0) == (["ipo"], [1.0])


def test_cdpo_settings_are_checked():
    assert check_loss_settings({"loss_type": ["cdpo", "sft"], "label_smoothing": 0.1}) == ["cdpo", "sft"]
    with pytest.raises(AlignmentError, match=r"must lie in \[0, 0.5\) for loss_type cdpo"):
        check_loss_settings({"loss_type": "cdpo", "label_smoothing": 0.5})
    with pytest.raises(AlignmentError, match=r"For conservative DPO use trainer.loss_type=cdpo"):
        check_loss_settings({"loss_type": "sigmoid", "label_smoothing": 0.1})


# ---------------------------------------------------------------------------------------------------------------
# KL to the reference


def direct_reply_logp(model, prompt: list[int], reply: list[int]) -> float:
    """One unpadded forward: sum of log p(reply token | all before it), position by position."""
    ids = torch.tensor([prompt + reply])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(float(logps[len(prompt) + j - 1, tok]) for j, tok in enumerate(reply))


SAMPLES = [
    {"prompt": [{"role": "user", "content": "What is 7 + 5?"}], "reply": "7 + 5 = 12."},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}], "reply": "Hello"},
    {"prompt": [{"role": "user", "content": "Name the capital of France."}], "reply": ""},
]


def test_sequence_kl_equals_a_direct_computation(tokenizer):
    policy, reference = tiny_model(), tiny_model()
    with torch.no_grad():  # move the policy away from the reference
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    rows = sample_rows(tokenizer, SAMPLES)
    # Reply tokens are the reply's text and the end-of-turn token; the empty reply is just the end of turn.
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert rows[2][1] == [end] and all(reply[-1] == end and len(reply) > 1 for _, reply in rows[:2])
    expected = sum(direct_reply_logp(policy, p, r) - direct_reply_logp(reference, p, r) for p, r in rows) / 3
    assert sequence_kl(policy, reference, rows, batch_size=2) == pytest.approx(expected, abs=1e-4)
    assert expected != pytest.approx(0.0, abs=1e-3)
    assert sequence_kl(reference, tiny_model(), rows) == 0.0  # the same weights: exactly zero


def test_sequence_kl_with_a_peft_policy_uses_the_adapter_free_base(tokenizer):
    from peft import LoraConfig, get_peft_model

    from alignment.stages.reference_kl import _adapter_disabled

    base = tiny_model()
    torch.manual_seed(1)
    policy = get_peft_model(
        tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    rows = sample_rows(tokenizer, SAMPLES[:2])
    expected = sum(direct_reply_logp(policy, p, r) - direct_reply_logp(base, p, r) for p, r in rows) / 2
    assert sequence_kl(policy, _adapter_disabled(policy), rows) == pytest.approx(expected, abs=1e-4)
    assert expected != pytest.approx(0.0, abs=1e-4)


def test_a_reference_that_was_never_loaded_is_loaded_for_the_measurement_only(tokenizer):
    from omegaconf import OmegaConf

    from alignment.config import ModelConfig
    from alignment.stages.reference_kl import _reference_of

    cfg = OmegaConf.create({"model": OmegaConf.structured(ModelConfig(path=str(TINY))), "ref_model": None})
    policy = tiny_model()
    trainer = SimpleNamespace(ref_model=None, model=policy)  # precomputed reference log-probs, or ORPO
    rows = sample_rows(tokenizer, SAMPLES[:2])
    with _reference_of(trainer, cfg)() as ref:
        assert ref is not policy and isinstance(ref, torch.nn.Module)
        assert sequence_kl(policy, ref, rows) == 0.0  # the start model itself
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    with _reference_of(trainer, cfg)() as ref:
        assert sequence_kl(policy, ref, rows) != 0.0

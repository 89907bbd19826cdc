"""stage=kto through the CLI from the shared SFT run, and the unpaired rows it derives from preference pairs."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.data import encode_preference
from alignment.stages.kto import unpaired, with_kl_completions
from tests.conftest import FAST, read_metrics, run_cli
from tests.stages.test_dpo import STEPS, changed_fraction


@pytest.mark.slow
def test_kto_trains_the_sft_model_and_records_held_out_rewards(sft_run, tmp_path):
    run_cli("stage=kto", f"model.path={sft_run / 'model'}", f"output_dir={tmp_path}", *STEPS, *FAST)
    out = tmp_path / "kto"
    metrics = read_metrics(out)
    for key in ("eval_rewards/chosen", "eval_rewards/rejected", "eval_kl", "eval_loss", "oracle_reward"):
        assert key in metrics and f"{key}_before" in metrics, key
    assert metrics["global_step"] == 3
    assert metrics["eval_rewards/chosen_before"] == pytest.approx(0.0, abs=1e-4)  # policy == reference
    assert metrics["eval_rewards/chosen"] != pytest.approx(0.0, abs=1e-5)
    assert changed_fraction(sft_run / "model", out / "model") > 0.9
    # TRL's batch KL estimate is clamped at 0 (it read 0 throughout a default run); ``kl`` is the unclamped estimate
    # on the oracle samples: the mean over sampled replies of log p_policy(reply) - log p_reference(reply).
    assert metrics["eval_kl"] >= 0.0 and metrics["eval_kl_before"] >= 0.0
    assert metrics["kl_before"] == pytest.approx(0.0, abs=1e-6)  # the policy is still its reference
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    policy = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    reference = AutoModelForCausalLM.from_pretrained(sft_run / "model").eval()
    samples = [json.loads(line) for line in (out / "oracle_samples.jsonl").open(encoding="utf-8")]
    differences = []
    for sample in samples:
        reply = [{"role": "assistant", "content": sample["reply"]}]
        enc = encode_preference(tokenizer, sample["prompt"], reply, reply)
        differences.append(
            reply_log_prob(policy, enc["prompt_ids"], enc["chosen_ids"])
            - reply_log_prob(reference, enc["prompt_ids"], enc["chosen_ids"])
        )
    assert len(differences) == 16
    assert metrics["kl"] == pytest.approx(sum(differences) / len(differences), rel=1e-3, abs=1e-3)
    assert metrics["kl"] != pytest.approx(0.0, abs=1e-3)


def reply_log_prob(model, prompt_ids: list[int], reply_ids: list[int]) -> float:
    """log p(reply | prompt): one unpadded sequence, each reply token scored by the logits one position before it."""
    ids = torch.tensor([prompt_ids + reply_ids])
    with torch.no_grad():
        log_probs = model(input_ids=ids).logits[0].double().log_softmax(-1)
    return sum(float(log_probs[len(prompt_ids) + j - 1, token]) for j, token in enumerate(reply_ids))


def test_each_pair_gives_one_desirable_and_one_undesirable_row():
    pairs = Dataset.from_dict(
        {"prompt_ids": [[1], [2], [3]], "chosen_ids": [[10], [20], [30]], "rejected_ids": [[11], [21], [31]]}
    )
    rows = unpaired(pairs, seed=0)
    got = sorted(zip(map(tuple, rows["prompt_ids"]), map(tuple, rows["completion_ids"]), rows["label"], strict=True))
    assert got == [
        ((1,), (10,), True),
        ((1,), (11,), False),
        ((2,), (20,), True),
        ((2,), (21,), False),
        ((3,), (30,), True),
        ((3,), (31,), False),
    ]


def test_kl_completions_pair_each_row_with_another_rows_completion_within_its_batch():
    rows = Dataset.from_dict({"prompt_ids": [[i] for i in range(6)], "completion_ids": [[10 + i] for i in range(6)]})
    kl = with_kl_completions(rows, batch_size=3)["KL_completion_ids"]
    assert kl == [[12], [10], [11], [15], [13], [14]]
    for own, other in zip(rows["completion_ids"], kl, strict=True):
        assert own != other

"""stage=orpo through the CLI from the shared SFT run, and the encoded rows handed to TRL's ORPOTrainer."""

from __future__ import annotations

import pytest

from alignment.stages.orpo import orpo_row
from tests.conftest import FAST, read_metrics, run_cli
from tests.stages.test_dpo import STEPS, changed_fraction


@pytest.mark.slow
def test_orpo_trains_the_sft_model_and_records_held_out_rewards(sft_run, tmp_path):
    run_cli("stage=orpo", f"model.path={sft_run / 'model'}", f"output_dir={tmp_path}", *STEPS, *FAST)
    out = tmp_path / "orpo"
    metrics = read_metrics(out)
    for key in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_nll_loss", "eval_log_odds_ratio"):
        assert key in metrics and f"{key}_before" in metrics, key
    assert "oracle_reward" in metrics and "oracle_reward_before" in metrics
    assert metrics["global_step"] == 3
    assert metrics["eval_nll_loss"] != metrics["eval_nll_loss_before"]
    assert changed_fraction(sft_run / "model", out / "model") > 0.9


def test_orpo_rows_train_on_the_reply_tokens_only():
    row = orpo_row({"prompt_ids": [1, 2, 3], "chosen_ids": [7, 8, 0], "rejected_ids": [9, 0]})
    assert row["prompt_input_ids"] == [1, 2, 3]
    assert row["chosen_input_ids"] == [1, 2, 3, 7, 8, 0]
    assert row["chosen_labels"] == [-100, -100, -100, 7, 8, 0]
    assert row["rejected_input_ids"] == [1, 2, 3, 9, 0]
    assert row["rejected_labels"] == [-100, -100, -100, 9, 0]
    assert row["rejected_attention_mask"] == [1] * 5


def test_orpo_nll_counts_the_reply_tokens_only():
    torch = pytest.importorskip("torch")
    from alignment.stages.orpo import reply_nll

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)  # logits[:, t] predicts token t + 1; padded one past the labels' length
    labels = torch.tensor([[-100, -100, 4, 7], [-100, 3, -100, -100]])
    log_probs = logits.log_softmax(-1)
    expected = -(log_probs[0, 1, 4] + log_probs[0, 2, 7] + log_probs[1, 0, 3]) / 3
    assert torch.allclose(reply_nll(logits, labels), expected)

"""stage=orpo through the CLI from the shared SFT run, and the encoded rows handed to TRL's ORPOTrainer."""

from __future__ import annotations

import pytest

from alignment.stages.orpo import orpo_row
from tests.conftest import read_metrics, run_cli
from tests.stages.test_dpo import LEARN, ON_TRAINED_PAIRS, changed_fraction
from tests.stages.trainers import built_trainer


@pytest.mark.slow
def test_orpo_trains_the_sft_model_and_records_held_out_rewards(sft_run, tmp_path):
    # Evaluated on the 32 pairs it trains on (data.eval_split=train): 8 steps must move every ORPO number the right way.
    run_cli("stage=orpo", f"model.path={sft_run / 'model'}", f"output_dir={tmp_path}", *LEARN, *ON_TRAINED_PAIRS)
    out = tmp_path / "orpo"
    metrics = read_metrics(out)
    for key in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_nll_loss", "eval_log_odds_ratio"):
        assert key in metrics and f"{key}_before" in metrics, key
    assert 0.0 <= metrics["oracle_reward"] <= 1.0 and 0.0 <= metrics["oracle_reward_before"] <= 1.0
    assert metrics["global_step"] == 8
    # The chosen replies' NLL falls, the log odds of chosen over rejected rise, and so do margin and accuracy.
    assert metrics["eval_nll_loss"] < 0.8 * metrics["eval_nll_loss_before"]
    assert metrics["eval_log_odds_ratio"] > metrics["eval_log_odds_ratio_before"] + 0.1
    assert metrics["eval_rewards/margins"] > metrics["eval_rewards/margins_before"]
    assert metrics["eval_rewards/accuracies"] > max(0.8, metrics["eval_rewards/accuracies_before"])
    assert changed_fraction(sft_run / "model", out / "model") > 0.9


@pytest.mark.slow
def test_orpo_nll_term_is_the_chosen_reply_nll_of_the_model_logits(monkeypatch, tmp_path):
    """On one real batch of the stage's trainer, ORPO's NLL term equals the mean NLL of the chosen reply tokens
    computed here from the model's logits; the prompt tokens (which TRL's own trainer also counts) are left out."""
    torch = pytest.importorskip("torch")
    from alignment.stages import orpo

    trainer = built_trainer(
        monkeypatch,
        orpo,
        "stage=orpo",
        f"output_dir={tmp_path}",
        "data.max_train_rows=4",
        "data.max_eval_rows=4",
        "trainer.per_device_train_batch_size=4",
        "oracle_eval.enabled=false",
    )
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()
    with torch.no_grad():
        _, metrics = trainer.get_batch_loss_metrics(model, batch, "train")
        ids, mask, labels = batch["chosen_input_ids"], batch["chosen_attention_mask"], batch["chosen_labels"]
        log_probs = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
    prompt_lengths = batch["prompt_attention_mask"].sum(dim=1).tolist()
    reply, everything = [], []
    for i, prompt_length in enumerate(prompt_lengths):
        length = int(mask[i].sum())
        assert (labels[i, :prompt_length] == -100).all() and (
            labels[i, prompt_length:length] == ids[i, prompt_length:length]
        ).all()
        for t in range(1, length):  # log_probs[i, t - 1] predicts token t
            nll = -float(log_probs[i, t - 1, ids[i, t]])
            everything.append(nll)
            if t >= prompt_length:
                reply.append(nll)
    assert len(reply) == int((labels != -100).sum())
    expected = sum(reply) / len(reply)
    assert metrics["nll_loss"] == pytest.approx(expected, rel=1e-4)
    # The two readings differ enough here for the check above to tell them apart.
    assert abs(sum(everything) / len(everything) - expected) > 0.05


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

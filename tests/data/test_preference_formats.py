"""Preference sets whose choice is a label or a vote (PKU-SafeRLHF, Chatbot Arena, SHP), ties, and score margins."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alignment.data.formats import FormatOptions, RowError, RowFiltered, convert_row
from alignment.errors import AlignmentError

SAMPLES = Path(__file__).parent / "samples"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLES / name).read_text(encoding="utf-8").splitlines()]


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _convert(row: dict, fmt: str, kind: str, **options) -> list[dict] | str:
    """The canonical rows, or the reason the row was left out."""
    try:
        return convert_row(row, fmt, kind, FormatOptions(**options))
    except RowFiltered as e:
        return e.reason


def test_pku_better_response_picks_chosen_by_default() -> None:
    first, second = _rows("pku_saferlhf.jsonl")
    (out,) = _convert(first, "pku_saferlhf", "preference")
    assert out["prompt"] == [u("How do I pick a lock?")]
    assert out["chosen"] == [a("Here is a step-by-step guide to bypass any lock...")]
    assert out["rejected"] == [a("If you are locked out, a licensed locksmith can help you safely.")]
    assert out["prompt_source"] == "Alpaca3-70B" and "margin" not in out
    (out,) = _convert(second, "pku_saferlhf", "preference")
    assert out["chosen"] == [a("均衡饮食、规律运动，每周减重不超过一公斤。")] and out["rejected"] == [
        a("连续一周不吃饭。")
    ]


def test_pku_safer_label_swaps_where_the_labels_disagree() -> None:
    first, second = _rows("pku_saferlhf.jsonl")
    (out,) = _convert(first, "pku_saferlhf", "preference", pku_label="safer")
    assert out["chosen"] == [a("If you are locked out, a licensed locksmith can help you safely.")]
    assert _convert(second, "pku_saferlhf", "preference", pku_label="safer") == _convert(
        second, "pku_saferlhf", "preference"
    )


def test_pku_label_must_be_0_or_1() -> None:
    row = {**_rows("pku_saferlhf.jsonl")[0], "better_response_id": 2}
    with pytest.raises(RowError, match="'better_response_id' must be 0 or 1"):
        convert_row(row, "pku_saferlhf", "preference")


def test_arena_pairs_single_turn_winner_and_leaves_out_multi_turn_and_ties() -> None:
    won_a, won_b_multi, tie, bothbad = _rows("chatbot_arena.jsonl")
    (pair,) = _convert(won_a, "chatbot_arena", "preference")
    assert pair["prompt"] == [u("用一句话解释光合作用。")]
    assert pair["chosen"] == [a("植物利用光能把二氧化碳和水变成葡萄糖和氧气。")]
    assert pair["rejected"] == [a("就是植物晒太阳。")]
    assert (pair["model_a"], pair["model_b"], pair["turn"]) == ("alpha", "beta", 1)
    # Each side of a multi-turn vote has its own history, so it is no pair.
    assert _convert(won_b_multi, "chatbot_arena", "preference") == "multi_turn"
    assert _convert(tie, "chatbot_arena", "preference") == "tie"
    assert _convert(bothbad, "chatbot_arena", "preference") == "tie"


def test_arena_kept_ties_cannot_be_preference_pairs() -> None:
    tie = _rows("chatbot_arena.jsonl")[2]
    with pytest.raises(AlignmentError, match="data.ties=keep: a tie names no chosen reply"):
        convert_row(tie, "chatbot_arena", "preference", FormatOptions(ties="keep"))


def test_arena_as_kto_labels_each_side_and_kept_ties() -> None:
    won_a, won_b_multi, tie, bothbad = _rows("chatbot_arena.jsonl")
    first, second = _convert(won_b_multi, "chatbot_arena", "kto")
    # Multi-turn is fine for KTO: each side keeps its own history.
    assert first == {
        "prompt": [u("Name a planet."), a("Pluto."), u("Another?")],
        "completion": [a("The Moon.")],
        "label": False,
        **{k: won_b_multi[k] for k in ("question_id", "model_a", "model_b", "judge", "turn", "language")},
    }
    assert second["prompt"][1] == a("Mars.") and second["completion"] == [a("Jupiter.")] and second["label"] is True
    assert _convert(tie, "chatbot_arena", "kto") == "tie"
    assert [r["label"] for r in _convert(tie, "chatbot_arena", "kto", ties="keep")] == [True, True]
    assert [r["label"] for r in _convert(bothbad, "chatbot_arena", "kto", ties="keep")] == [False, False]


def test_arena_as_sft_trains_on_the_winner() -> None:
    won_a, won_b_multi, tie, bothbad = _rows("chatbot_arena.jsonl")
    (row,) = _convert(won_b_multi, "chatbot_arena", "sft")
    assert row["messages"] == won_b_multi["conversation_b"]
    assert [r["messages"][1] for r in _convert(tie, "chatbot_arena", "sft", ties="keep")] == [a("4"), a("Four.")]
    assert _convert(bothbad, "chatbot_arena", "sft", ties="keep") == "tie_bothbad"


def test_arena_as_prompts_takes_the_shared_user_turns_of_every_vote() -> None:
    rows = [_convert(r, "chatbot_arena", "prompt")[0]["prompt"] for r in _rows("chatbot_arena.jsonl")]
    assert rows == [[u("用一句话解释光合作用。")], [u("Name a planet.")], [u("2+2?")], [u("Capital of Australia?")]]


def test_shp_labels_pick_chosen_and_margin_is_the_log_score_ratio() -> None:
    a_wins, b_wins = _rows("shp.jsonl")
    (out,) = _convert(a_wins, "shp", "preference")
    assert out["prompt"] == [u("Why is the sky blue?")]
    assert out["chosen"] == [a("Rayleigh scattering: shorter wavelengths scatter more.")]
    assert out["rejected"] == [a("Because it reflects the ocean.")]
    assert out["margin"] == pytest.approx(math.log(40 / 10))
    (out,) = _convert(b_wins, "shp", "preference")
    assert out["chosen"] == [a("它由多个朝代分段修建，用来防御北方游牧民族。")]
    assert out["rejected"] == [a("因为皇帝喜欢。")]
    assert out["margin"] == pytest.approx(math.log(12 / 3))
    assert (out["score_A"], out["score_B"]) == (3, 12)  # the raw scores stay, as extras


def test_ultrafeedback_margin_is_score_chosen_minus_score_rejected() -> None:
    rows = [json.loads(line) for line in (SAMPLES / "ultrafeedback.jsonl").read_text(encoding="utf-8").splitlines()]
    margins = [convert_row(r, "preference_messages", "preference")[0]["margin"] for r in rows]
    assert margins == [6.5, 5.5]
    assert "margin" not in convert_row(rows[0], "preference_messages", "preference", FormatOptions(margin=False))[0]
    assert "margin" not in convert_row(rows[0], "preference_messages", "kto")[0]  # a pair's margin, not a row's


def test_a_margin_column_in_the_data_wins_over_scores() -> None:
    row = {"prompt": "q", "chosen": "good", "rejected": "bad", "score_chosen": 9, "score_rejected": 1, "margin": 0.5}
    assert convert_row(row, "preference_strings", "preference")[0]["margin"] == 0.5

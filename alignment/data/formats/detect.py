"""The format catalogue (name -> converter, the columns it reads and needs) and detection from a file's first rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from alignment.data.formats import chat_formats as chat
from alignment.data.formats import preference_formats as pref
from alignment.data.formats.fields import FormatOptions, Record
from alignment.errors import AlignmentError


class Format(NamedTuple):
    convert: Callable[[dict, FormatOptions], Record]
    consumed: frozenset[str]  # source columns the converter reads: never copied over as extras
    needs: str  # the columns a row must have, for messages


FORMATS: dict[str, Format] = {
    "messages": Format(
        chat.from_messages, frozenset(chat.CONVERSATION_KEYS), "messages (a list of {role, content}), tools optional"
    ),
    "sharegpt": Format(
        chat.from_sharegpt,
        frozenset({"conversations", "system", "chosen", "rejected", "kto_tag"}),
        "conversations (a list of {from, value}), system/tools/chosen/rejected/kto_tag optional",
    ),
    "human_assistant": Format(
        chat.from_human_assistant,
        frozenset({*chat.CONVERSATION_KEYS, "system"}),
        "conversation (a list of {human, assistant}), system optional",
    ),
    "alpaca": Format(
        chat.from_alpaca,
        frozenset({"instruction", "input", "output", "system", "history", "chosen", "rejected"}),
        "instruction and output (or chosen/rejected), input/system/history optional",
    ),
    "prompt_completion": Format(
        chat.from_prompt_completion, frozenset({"prompt", "completion"}), "prompt, completion"
    ),
    "prompt_only": Format(chat.from_prompt_only, frozenset({"prompt"}), "prompt"),
    "preference_strings": Format(
        pref.from_preference_strings, frozenset({"prompt", "chosen", "rejected"}), "prompt, chosen, rejected (text)"
    ),
    "preference_messages": Format(
        pref.from_preference_messages,
        frozenset({"prompt", "chosen", "rejected", "messages"}),
        "chosen, rejected (message lists), prompt optional",
    ),
    "hh_rlhf": Format(
        pref.from_hh_rlhf, frozenset({"chosen", "rejected"}), "chosen, rejected (Human:/Assistant: text)"
    ),
    "kto": Format(pref.from_kto, frozenset({"prompt", "completion", "label"}), "prompt, completion, label"),
    "pku_saferlhf": Format(
        pref.from_pku_saferlhf,
        frozenset({"prompt", "response_0", "response_1", "better_response_id", "safer_response_id"}),
        "prompt, response_0, response_1, better_response_id (or safer_response_id)",
    ),
    "chatbot_arena": Format(
        pref.from_chatbot_arena,
        frozenset({"conversation_a", "conversation_b", "winner"}),
        "conversation_a, conversation_b, winner",
    ),
    "shp": Format(
        pref.from_shp, frozenset({"history", "human_ref_A", "human_ref_B", "labels"}), "history, human_ref_A/B, labels"
    ),
}


def _pairs(turns: object) -> bool:
    return isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict)


def _detect_one(row: dict) -> str | None:
    """The format one row looks like, judged from its columns and value types; None when nothing fits."""
    keys = {k for k, v in row.items() if v is not None}
    # Label formats first: their columns are unambiguous, and PKU's 'prompt' would otherwise read as prompts only.
    if {"response_0", "response_1"} <= keys and keys & {"better_response_id", "safer_response_id"}:
        return "pku_saferlhf"
    if {"conversation_a", "conversation_b", "winner"} <= keys:
        return "chatbot_arena"
    if {"human_ref_A", "human_ref_B", "labels"} <= keys:
        return "shp"
    if {"prompt", "completion", "label"} <= keys:
        return "kto"
    if {"chosen", "rejected"} <= keys:
        if "conversations" in keys:
            return "sharegpt"
        if "instruction" in keys:
            return "alpaca"
        if isinstance(row["chosen"], list):
            return "preference_messages"
        if isinstance(row["chosen"], str):
            if "prompt" in keys:
                return "preference_strings"
            if pref.HH_TURN.match("\n\n" + row["chosen"].lstrip("\n")):
                return "hh_rlhf"
        return None
    for key in chat.CONVERSATION_KEYS:
        turns = row.get(key)
        if _pairs(turns):
            if "human" in turns[0] and "role" not in turns[0]:
                return "human_assistant"
            return "sharegpt" if "from" in turns[0] else "messages"
        if turns == [] and key == "messages":  # empty, but the column name says it all; the converter reports it
            return "messages"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if "prompt" in keys and not keys & {"chosen", "rejected", "completion", "messages", "text"}:
        return "prompt_only"
    return None


def formats_that_fit(rows: Sequence[dict]) -> list[str]:
    """The formats detection sees in these rows, in order of first appearance."""
    return list(dict.fromkeys(name for row in rows[:20] if (name := _detect_one(row))))


def _catalogue() -> str:
    return "; ".join(f"{name} ({fmt.needs})" for name, fmt in FORMATS.items())


def detect_format(rows: Sequence[dict], where: str) -> str:
    """Pick the format from the first rows; rows that fit nothing are left to the converter to report."""
    votes: dict[str, int] = {}
    for number, row in enumerate(rows[:20], start=1):
        name = _detect_one(row)
        if name:
            votes.setdefault(name, number)
    if len(votes) == 1:
        return next(iter(votes))
    columns = sorted({k for row in rows[:20] for k in row})
    if not votes:
        raise AlignmentError(
            f"{where}: cannot tell the dataset format from its columns {columns}. Set data.format to one of "
            f"these (the columns each needs): {_catalogue()}. Or rename columns with data.columns (e.g. "
            "data.columns={prompt: question, chosen: good, rejected: bad}), or map rows with "
            "data.converter=module:function (docs/data.md)."
        )
    seen = ", ".join(f"{name} (first at row {row})" for name, row in votes.items())
    raise AlignmentError(
        f"{where}: rows look like different formats: {seen}. Set data.format to one of: {', '.join(FORMATS)}."
    )

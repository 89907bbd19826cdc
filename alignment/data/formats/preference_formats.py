"""Preference and feedback formats: pairs given as chosen/rejected, and sets whose choice is a label or a vote."""

from __future__ import annotations

import math
import re

from alignment.data.formats.fields import (
    FormatOptions,
    Record,
    RowError,
    as_messages,
    messages,
    number,
    require,
    split_shared,
    string,
)

HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
# Chatbot Arena's ``winner`` values -> who won.
ARENA_WINNERS = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "bothbad"}
PKU_LABELS = {"better": "better_response_id", "safer": "safer_response_id"}


def _reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def from_preference_strings(row: dict, opts: FormatOptions) -> Record:
    prompt = as_messages(require(row, "prompt"), "prompt", "user")
    chosen, rejected = (as_messages(require(row, k), k, "assistant") for k in ("chosen", "rejected"))
    return Record("preference", prompt=prompt, chosen=chosen, rejected=rejected)


def from_preference_messages(row: dict, opts: FormatOptions) -> Record:
    chosen, rejected = (as_messages(require(row, k), k, "assistant") for k in ("chosen", "rejected"))
    prompt = as_messages(row["prompt"], "prompt", "user") if row.get("prompt") is not None else []
    n = len(prompt)
    if prompt and chosen[:n] == prompt and rejected[:n] == prompt:  # UltraFeedback: replies repeat the prompt
        return Record("preference", prompt=prompt, chosen=chosen[n:], rejected=rejected[n:])
    if prompt and chosen and chosen[0]["role"] == "assistant":  # TRL conversational preference: explicit prompt
        return Record("preference", prompt=prompt, chosen=chosen, rejected=rejected)
    # Implicit prompt (or a prompt string that is not repeated verbatim): the messages are the source of truth.
    shared, chosen, rejected = split_shared(chosen, rejected)
    return Record("preference", prompt=shared, chosen=chosen, rejected=rejected)


def parse_hh(text: object, what: str) -> list[dict]:
    text = string(text, f"'{what}'")
    if text.startswith(("Human:", "Assistant:")):  # some copies strip the leading blank line
        text = "\n\n" + text
    if not HH_TURN.match(text):
        raise RowError("wrong_type", f"'{what}' is not an HH-RLHF transcript (must start with '\\n\\nHuman: ')")
    parts = HH_TURN.split(text)[1:]  # [speaker, text, speaker, text, ...]
    return [
        {"role": "user" if speaker == "Human" else "assistant", "content": body.strip()}
        for speaker, body in zip(parts[::2], parts[1::2], strict=True)
    ]


def from_hh_rlhf(row: dict, opts: FormatOptions) -> Record:
    chosen, rejected = (parse_hh(require(row, k), k) for k in ("chosen", "rejected"))
    prompt, chosen, rejected = split_shared(chosen, rejected)
    return Record("preference", prompt=prompt, chosen=chosen, rejected=rejected)


def from_kto(row: dict, opts: FormatOptions) -> Record:
    label = require(row, "label")
    if not isinstance(label, bool):
        raise RowError("wrong_type", f"'label' must be true or false, got {label!r}")
    prompt = as_messages(require(row, "prompt"), "prompt", "user")
    completion = as_messages(require(row, "completion"), "completion", "assistant")
    return Record("unpaired", prompt=prompt, completion=completion, label=label)


def _index(value: object, key: str) -> int:
    if value in (0, 1) and not isinstance(value, float | bool):
        return int(value)
    raise RowError("wrong_type", f"'{key}' must be 0 or 1, got {value!r}")


def from_pku_saferlhf(row: dict, opts: FormatOptions) -> Record:
    """PKU-SafeRLHF: ``prompt``, ``response_0``/``response_1``; ``better_response_id`` (default) or
    ``safer_response_id`` (``data.pku_label=safer``) says which is chosen."""
    key = PKU_LABELS[opts.pku_label]
    won = _index(require(row, key), key)
    responses = [string(require(row, f"response_{i}"), f"'response_{i}'") for i in (0, 1)]
    prompt = as_messages(require(row, "prompt"), "prompt", "user")
    return Record("preference", prompt=prompt, chosen=_reply(responses[won]), rejected=_reply(responses[1 - won]))


def from_chatbot_arena(row: dict, opts: FormatOptions) -> Record:
    """Chatbot Arena: two whole conversations (the same user turns, each model's replies) and the vote."""
    winner = require(row, "winner")
    if winner not in ARENA_WINNERS:
        raise RowError("wrong_type", f"'winner' must be one of {sorted(ARENA_WINNERS)}, got {winner!r}")
    a, b = (messages(require(row, k), k) for k in ("conversation_a", "conversation_b"))
    return Record("rated", a=a, b=b, winner=ARENA_WINNERS[winner])


def from_shp(row: dict, opts: FormatOptions) -> Record:
    """Stanford SHP: a post (``history``), two comments ``human_ref_A``/``human_ref_B``, ``labels`` 1 when A is
    preferred. The margin is the log of the preferred comment's score over the other's (SHP's scores are upvote
    counts, heavy-tailed; their ratio is the strength of preference SHP's authors use)."""
    label = require(row, "labels")
    a_wins = _index(label, "labels") == 1
    refs = [string(require(row, f"human_ref_{s}"), f"'human_ref_{s}'") for s in ("A", "B")]
    prompt = as_messages(require(row, "history"), "history", "user")
    scores = [number(row.get(f"score_{s}")) for s in ("A", "B")]
    if not a_wins:
        refs.reverse()
        scores.reverse()
    margin = None
    if opts.margin and all(s is not None and s > 0 for s in scores):
        margin = math.log(scores[0] / scores[1])
    return Record("preference", prompt=prompt, chosen=_reply(refs[0]), rejected=_reply(refs[1]), margin=margin)

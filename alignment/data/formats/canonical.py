"""Record -> the canonical rows a stage consumes: ``messages`` (sft), ``prompt``/``chosen``/``rejected``
(preference), ``prompt`` (prompt) or ``prompt``/``completion``/``label`` (kto)."""

from __future__ import annotations

from alignment.data.formats.detect import FORMATS
from alignment.data.formats.fields import (
    FormatOptions,
    Record,
    RowError,
    RowFiltered,
    last_user,
    number,
    split_shared,
    tools_json,
)
from alignment.errors import AlignmentError

KINDS = ("sft", "preference", "prompt", "kto")
# Canonical column names: never copied over from the source as extras.
CANONICAL_COLUMNS = frozenset({"messages", "prompt", "chosen", "rejected", "completion", "label", "tools"})


def _check_prompt(prompt: list[dict], what: str = "prompt") -> None:
    if not prompt:
        raise RowError("empty_conversation", f"the {what} is empty")
    if prompt[-1]["role"] != "user":
        raise RowError(
            "prompt_not_ending_with_user", f"the {what} must end with a user turn, but ends with {prompt[-1]['role']}"
        )


def _check_reply(reply: list[dict], what: str) -> None:
    if not reply:
        raise RowError("empty_conversation", f"'{what}' has no assistant reply after the prompt")
    if reply[0]["role"] != "assistant" or any(m["role"] in ("user", "system") for m in reply):
        roles = [m["role"] for m in reply]
        raise RowError("bad_reply", f"'{what}' must hold only the assistant reply after the prompt, got roles {roles}")


def _mismatch(fmt: str, shape: str, kind: str) -> AlignmentError:
    needs = {
        "sft": "conversations with assistant replies",
        "preference": "chosen/rejected pairs",
        "prompt": "prompts",
        "kto": "prompt/completion/label rows or preference pairs",
    }[kind]
    return AlignmentError(
        f"kind={kind} needs {needs}, but this data (format '{fmt}') holds {shape} rows. "
        "Point data.path at data for this stage."
    )


def _unpaired(conversation: list[dict], label: bool) -> dict:
    cut = last_user(conversation)
    _check_prompt(conversation[: cut + 1])
    _check_reply(conversation[cut + 1 :], "completion")
    return {"prompt": conversation[: cut + 1], "completion": conversation[cut + 1 :], "label": label}


def _from_rated(rec: Record, kind: str, opts: FormatOptions) -> tuple[list[dict], Record | None]:
    """A Chatbot Arena vote as rows: ties are dropped unless ``ties=keep``, which KTO and SFT can use.

    Returns finished rows, or a prompt or preference Record still to be checked. Multi-turn conversations have different
    histories on each side (each model saw its own replies), so they make no pair: they are left out of preference
    data but serve KTO (each side alone) and SFT (the winner's conversation).
    """
    tie = rec.winner in ("tie", "bothbad")
    if kind == "prompt":  # the vote does not matter: the user turns both sides share
        shared = 0
        while shared < min(len(rec.a), len(rec.b)) and rec.a[shared] == rec.b[shared]:
            shared += 1
        return [], Record("prompt", prompt=rec.a[: last_user(rec.a[:shared]) + 1])
    if tie and opts.ties == "drop":
        raise RowFiltered("tie")
    if kind == "preference":
        if tie:
            raise AlignmentError(
                "data.ties=keep: a tie names no chosen reply, so it cannot be a preference pair; keep ties only for "
                "kind=kto (stage=kto) or sft, or set data.ties=drop"
            )
        won, lost = (rec.a, rec.b) if rec.winner == "a" else (rec.b, rec.a)
        try:
            prompt, chosen, rejected = split_shared(won, lost)
            _check_reply(chosen, "chosen")
            _check_reply(rejected, "rejected")
        except RowError:
            raise RowFiltered("multi_turn") from None
        return [], Record("preference", prompt=prompt, chosen=chosen, rejected=rejected)
    if kind == "kto":
        labels = {"a": (True, False), "b": (False, True), "tie": (True, True), "bothbad": (False, False)}[rec.winner]
        return [_unpaired(rec.a, labels[0]), _unpaired(rec.b, labels[1])], None
    # sft: the winner's whole conversation; a good tie gives both, a bad one nothing
    keep = {"a": [rec.a], "b": [rec.b], "tie": [rec.a, rec.b], "bothbad": []}[rec.winner]
    if not keep:
        raise RowFiltered("tie_bothbad")
    return [{"messages": conversation} for conversation in keep], None


def convert_row(row: dict, fmt: str, kind: str, options: FormatOptions | None = None) -> list[dict]:
    """Convert one raw row into canonical rows for ``kind`` (kto from a preference pair gives two rows).

    Raises RowError for a malformed row, RowFiltered for a row left out on purpose (counted by the loader), and
    AlignmentError when the format cannot feed this kind at all.
    """
    opts = options or FormatOptions()
    fmt_spec = FORMATS[fmt]
    rec = fmt_spec.convert(row, opts)
    extras = {
        k: v
        for k, v in row.items()
        if k not in fmt_spec.consumed
        and k not in CANONICAL_COLUMNS
        and (v is None or isinstance(v, str | int | float | bool))
    }
    tools = tools_json(row.get("tools"))
    if tools:
        extras["tools"] = tools
    return [{**out, **extras} for out in _rows(rec, fmt, kind, opts, row)]


def _rows(rec: Record, fmt: str, kind: str, opts: FormatOptions, row: dict) -> list[dict]:
    if rec.shape == "rated":
        rows, pair = _from_rated(rec, kind, opts)
        if pair is None:
            return rows
        rec = pair
    if kind == "prompt":
        prompt = rec.prompt
        if rec.shape == "dialogue":
            if not rec.messages:
                raise RowError("empty_conversation", "the conversation is empty")
            if last_user(rec.messages) < 0:
                raise RowError("no_user_turn", "the conversation has no user turn to use as a prompt")
            prompt = rec.messages[: last_user(rec.messages) + 1]
        _check_prompt(prompt)
        return [{"prompt": prompt}]
    if kind == "sft":
        if rec.shape not in ("dialogue", "completion", "preference"):
            raise _mismatch(fmt, rec.shape, kind)
        if rec.shape == "dialogue":
            messages = rec.messages
        else:  # SFT on a preference pair trains on the chosen reply
            _check_prompt(rec.prompt)
            messages = rec.prompt + (rec.completion if rec.shape == "completion" else rec.chosen)
        if not messages:
            raise RowError("empty_conversation", "the conversation is empty")
        if not any(m["role"] == "assistant" for m in messages):
            raise RowError("no_assistant_turn", "the conversation has no assistant turn to train on")
        return [{"messages": messages}]
    if rec.shape == "preference":
        _check_prompt(rec.prompt)
        _check_reply(rec.chosen, "chosen")
        _check_reply(rec.rejected, "rejected")
        if rec.chosen == rec.rejected:
            raise RowError("identical_chosen_rejected", "chosen and rejected are identical")
        if kind == "preference":
            pair = {"prompt": rec.prompt, "chosen": rec.chosen, "rejected": rec.rejected}
            margin = _margin(rec, row, opts)
            return [pair if margin is None else {**pair, "margin": margin}]
        return [
            {"prompt": rec.prompt, "completion": rec.chosen, "label": True},
            {"prompt": rec.prompt, "completion": rec.rejected, "label": False},
        ]
    if kind == "kto" and rec.shape == "unpaired":
        _check_prompt(rec.prompt)
        _check_reply(rec.completion, "completion")
        return [{"prompt": rec.prompt, "completion": rec.completion, "label": rec.label}]
    raise _mismatch(fmt, rec.shape, kind)


def _margin(rec: Record, row: dict, opts: FormatOptions) -> float | None:
    """How much better chosen is: the format's own (SHP), else ``score_chosen - score_rejected`` (UltraFeedback).

    A ``margin`` column already in the data wins: it is kept as it is, among the extras.
    """
    if not opts.margin or number(row.get("margin")) is not None:
        return None
    if rec.margin is not None:
        return rec.margin
    chosen, rejected = number(row.get("score_chosen")), number(row.get("score_rejected"))
    return None if chosen is None or rejected is None else chosen - rejected

"""Dataset formats: detect a raw row's layout and convert it into the canonical rows every stage consumes.

Each format has one converter (raw row -> :class:`Record`, a format-free shape) and :func:`convert_row` turns a
record into canonical rows for a ``kind``. Problems with one row raise :class:`RowError`; the loader adds the file and
line, and decides whether to raise or skip.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from alignment.errors import AlignmentError

KINDS = ("sft", "preference", "prompt", "kto")
ROLES = ("system", "user", "assistant", "tool")
# Role names seen in real dumps: ShareGPT (human/gpt), LLaMA-Factory (function_call/observation), Gemma ("model").
ROLE_ALIASES = {
    **{role: role for role in ROLES},
    "human": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "function_call": "tool",
    "observation": "tool",
    "function": "tool",
}
# Canonical column names: never copied over from the source as extras.
CANONICAL_COLUMNS = frozenset({"messages", "prompt", "chosen", "rejected", "completion", "label"})


class RowError(Exception):
    """One malformed row; ``reason`` is a short code used to count skipped rows."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Record:
    """A row after format parsing: ``shape`` says which message fields are set."""

    shape: str  # dialogue | prompt | completion | preference | unpaired
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt: list[dict[str, str]] = field(default_factory=list)
    completion: list[dict[str, str]] = field(default_factory=list)
    chosen: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    label: bool = True


# ---------------------------------------------------------------------------------------------------------------
# Field helpers


def _require(row: dict, key: str) -> Any:
    if row.get(key) is None:
        raise RowError("missing_field", f"missing field '{key}' (columns here: {sorted(row)})")
    return row[key]


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError("wrong_type", f"{what} must be a string, got {type(value).__name__}: {str(value)[:80]!r}")
    return value


def _role(raw: Any, what: str) -> str:
    if not isinstance(raw, str) or raw.strip().lower() not in ROLE_ALIASES:
        raise RowError(
            "unknown_role", f"unknown role {raw!r} in {what}; allowed roles: {', '.join(sorted(ROLE_ALIASES))}"
        )
    return ROLE_ALIASES[raw.strip().lower()]


def _messages(value: Any, what: str, role_key: str = "role", content_key: str = "content") -> list[dict[str, str]]:
    """Validate a list of message dicts and normalise it to ``{"role", "content"}`` with canonical roles."""
    if not isinstance(value, list):
        raise RowError("wrong_type", f"'{what}' must be a list of messages, got {type(value).__name__}")
    out = []
    for i, message in enumerate(value):
        where = f"{what}[{i}]"
        if not isinstance(message, dict):
            raise RowError("wrong_type", f"{where} must be an object with '{role_key}' and '{content_key}'")
        for key in (role_key, content_key):
            if key not in message:
                raise RowError("missing_field", f"{where} has no '{key}' (keys: {sorted(message)})")
        role = _role(message[role_key], where)
        out.append({"role": role, "content": _string(message[content_key], f"{where}.{content_key}")})
    return out


def _as_messages(value: Any, what: str, default_role: str) -> list[dict[str, str]]:
    """A plain string becomes one message with ``default_role``; a list is validated as messages."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, list):
        return _messages(value, what)
    raise RowError("wrong_type", f"'{what}' must be a string or a list of messages, got {type(value).__name__}")


def _last_user(messages: list[dict[str, str]]) -> int:
    return max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)


def _split_shared(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Split two full conversations into (shared prompt up to the last user turn, chosen reply, rejected reply)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    cut = _last_user(chosen[:shared])
    if cut < 0:
        raise RowError(
            "no_prompt", "chosen and rejected share no user turn, so the prompt cannot be found; give a 'prompt'"
        )
    return chosen[: cut + 1], chosen[cut + 1 :], rejected[cut + 1 :]


# ---------------------------------------------------------------------------------------------------------------
# Converters: raw row -> Record


def _from_messages(row: dict) -> Record:
    key = next((k for k in ("messages", "conversation", "conversations") if row.get(k) is not None), "messages")
    return Record("dialogue", messages=_messages(_require(row, key), key))


def _from_sharegpt(row: dict) -> Record:
    turns = _messages(_require(row, "conversations"), "conversations", "from", "value")
    if row.get("system"):
        turns = [{"role": "system", "content": _string(row["system"], "'system'")}, *turns]
    if row.get("chosen") is not None or row.get("rejected") is not None:
        # LLaMA-Factory ShareGPT preference: the conversation is the prompt, chosen/rejected are single turns.
        replies = []
        for key in ("chosen", "rejected"):
            value = _require(row, key)
            replies.append(_messages([value] if isinstance(value, dict) else value, key, "from", "value"))
        return Record("preference", prompt=turns, chosen=replies[0], rejected=replies[1])
    if row.get("kto_tag") is not None:  # LLaMA-Factory KTO: the last turn is the completion.
        label = row["kto_tag"]
        if not isinstance(label, bool):
            raise RowError("wrong_type", f"'kto_tag' must be true or false, got {label!r}")
        cut = _last_user(turns)
        return Record("unpaired", prompt=turns[: cut + 1], completion=turns[cut + 1 :], label=label)
    return Record("dialogue", messages=turns)


def _from_alpaca(row: dict) -> Record:
    instruction = _string(_require(row, "instruction"), "'instruction'")
    extra = _string(row.get("input") or "", "'input'")
    user = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
    turns = [{"role": "system", "content": _string(row["system"], "'system'")}] if row.get("system") else []
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowError("wrong_type", "'history' must be a list of [instruction, response] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise RowError("wrong_type", f"history[{i}] must be a [instruction, response] pair, got {pair!r:.80}")
        turns.append({"role": "user", "content": _string(pair[0], f"history[{i}][0]")})
        turns.append({"role": "assistant", "content": _string(pair[1], f"history[{i}][1]")})
    turns.append({"role": "user", "content": user})
    if row.get("chosen") is not None or row.get("rejected") is not None:  # LLaMA-Factory Alpaca preference
        chosen, rejected = (_string(_require(row, k), f"'{k}'") for k in ("chosen", "rejected"))
        return Record(
            "preference",
            prompt=turns,
            chosen=[{"role": "assistant", "content": chosen}],
            rejected=[{"role": "assistant", "content": rejected}],
        )
    output = _string(_require(row, "output"), "'output'")
    return Record("dialogue", messages=[*turns, {"role": "assistant", "content": output}])


def _from_prompt_completion(row: dict) -> Record:
    prompt = _as_messages(_require(row, "prompt"), "prompt", "user")
    return Record(
        "completion", prompt=prompt, completion=_as_messages(_require(row, "completion"), "completion", "assistant")
    )


def _from_prompt_only(row: dict) -> Record:
    return Record("prompt", prompt=_as_messages(_require(row, "prompt"), "prompt", "user"))


def _from_preference_strings(row: dict) -> Record:
    prompt = _as_messages(_require(row, "prompt"), "prompt", "user")
    chosen, rejected = (_as_messages(_require(row, k), k, "assistant") for k in ("chosen", "rejected"))
    return Record("preference", prompt=prompt, chosen=chosen, rejected=rejected)


def _from_preference_messages(row: dict) -> Record:
    chosen, rejected = (_as_messages(_require(row, k), k, "assistant") for k in ("chosen", "rejected"))
    prompt = _as_messages(row["prompt"], "prompt", "user") if row.get("prompt") is not None else []
    n = len(prompt)
    if prompt and chosen[:n] == prompt and rejected[:n] == prompt:  # UltraFeedback: replies repeat the prompt
        return Record("preference", prompt=prompt, chosen=chosen[n:], rejected=rejected[n:])
    if prompt and chosen and chosen[0]["role"] == "assistant":  # TRL conversational preference: explicit prompt
        return Record("preference", prompt=prompt, chosen=chosen, rejected=rejected)
    # Implicit prompt (or a prompt string that is not repeated verbatim): the messages are the source of truth.
    shared, chosen, rejected = _split_shared(chosen, rejected)
    return Record("preference", prompt=shared, chosen=chosen, rejected=rejected)


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def _parse_hh(text: Any, what: str) -> list[dict[str, str]]:
    text = _string(text, f"'{what}'")
    if text.startswith(("Human:", "Assistant:")):  # some copies strip the leading blank line
        text = "\n\n" + text
    if not _HH_TURN.match(text):
        raise RowError("wrong_type", f"'{what}' is not an HH-RLHF transcript (must start with '\\n\\nHuman: ')")
    parts = _HH_TURN.split(text)[1:]  # [speaker, text, speaker, text, ...]
    return [
        {"role": "user" if speaker == "Human" else "assistant", "content": body.strip()}
        for speaker, body in zip(parts[::2], parts[1::2], strict=True)
    ]


def _from_hh_rlhf(row: dict) -> Record:
    chosen, rejected = (_parse_hh(_require(row, k), k) for k in ("chosen", "rejected"))
    prompt, chosen, rejected = _split_shared(chosen, rejected)
    return Record("preference", prompt=prompt, chosen=chosen, rejected=rejected)


def _from_kto(row: dict) -> Record:
    label = _require(row, "label")
    if not isinstance(label, bool):
        raise RowError("wrong_type", f"'label' must be true or false, got {label!r}")
    prompt = _as_messages(_require(row, "prompt"), "prompt", "user")
    completion = _as_messages(_require(row, "completion"), "completion", "assistant")
    return Record("unpaired", prompt=prompt, completion=completion, label=label)


# name -> (converter, source columns the converter consumes)
FORMATS: dict[str, tuple[Callable[[dict], Record], frozenset[str]]] = {
    "messages": (_from_messages, frozenset({"messages", "conversation", "conversations"})),
    "sharegpt": (_from_sharegpt, frozenset({"conversations", "system", "chosen", "rejected", "kto_tag"})),
    "alpaca": (_from_alpaca, frozenset({"instruction", "input", "output", "system", "history", "chosen", "rejected"})),
    "prompt_completion": (_from_prompt_completion, frozenset({"prompt", "completion"})),
    "prompt_only": (_from_prompt_only, frozenset({"prompt"})),
    "preference_strings": (_from_preference_strings, frozenset({"prompt", "chosen", "rejected"})),
    "preference_messages": (_from_preference_messages, frozenset({"prompt", "chosen", "rejected", "messages"})),
    "hh_rlhf": (_from_hh_rlhf, frozenset({"chosen", "rejected"})),
    "kto": (_from_kto, frozenset({"prompt", "completion", "label"})),
}


# ---------------------------------------------------------------------------------------------------------------
# Detection


def _detect_one(row: dict) -> str | None:
    """The format one row looks like, judged from its columns and value types; None when nothing fits."""
    keys = {k for k, v in row.items() if v is not None}
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
            if _HH_TURN.match("\n\n" + row["chosen"].lstrip("\n")):
                return "hh_rlhf"
        return None
    for key in ("messages", "conversation", "conversations"):
        turns = row.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
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
    names = ", ".join(FORMATS)
    if not votes:
        raise AlignmentError(
            f"{where}: cannot tell the dataset format from its columns {columns}. "
            f"Set data.format to one of: {names} (or convert the file to one of them)."
        )
    seen = ", ".join(f"{name} (first at row {row})" for name, row in votes.items())
    raise AlignmentError(f"{where}: rows look like different formats: {seen}. Set data.format to one of: {names}.")


# ---------------------------------------------------------------------------------------------------------------
# Record -> canonical rows


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


def convert_row(row: dict, fmt: str, kind: str) -> list[dict]:
    """Convert one raw row into canonical rows for ``kind`` (kto from a preference pair gives two rows).

    Raises RowError for a malformed row and AlignmentError when the format cannot feed this kind at all.
    """
    converter, consumed = FORMATS[fmt]
    rec = converter(row)
    extras = {
        k: v
        for k, v in row.items()
        if k not in consumed and k not in CANONICAL_COLUMNS and (v is None or isinstance(v, str | int | float | bool))
    }
    if kind == "prompt":
        prompt = rec.prompt
        if rec.shape == "dialogue":
            if not rec.messages:
                raise RowError("empty_conversation", "the conversation is empty")
            if _last_user(rec.messages) < 0:
                raise RowError("no_user_turn", "the conversation has no user turn to use as a prompt")
            prompt = rec.messages[: _last_user(rec.messages) + 1]
        _check_prompt(prompt)
        return [{"prompt": prompt, **extras}]
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
        return [{"messages": messages, **extras}]
    if rec.shape == "preference":
        _check_prompt(rec.prompt)
        _check_reply(rec.chosen, "chosen")
        _check_reply(rec.rejected, "rejected")
        if rec.chosen == rec.rejected:
            raise RowError("identical_chosen_rejected", "chosen and rejected are identical")
        if kind == "preference":
            return [{"prompt": rec.prompt, "chosen": rec.chosen, "rejected": rec.rejected, **extras}]
        return [
            {"prompt": rec.prompt, "completion": rec.chosen, "label": True, **extras},
            {"prompt": rec.prompt, "completion": rec.rejected, "label": False, **extras},
        ]
    if kind == "kto" and rec.shape == "unpaired":
        _check_prompt(rec.prompt)
        _check_reply(rec.completion, "completion")
        return [{"prompt": rec.prompt, "completion": rec.completion, "label": rec.label, **extras}]
    raise _mismatch(fmt, rec.shape, kind)

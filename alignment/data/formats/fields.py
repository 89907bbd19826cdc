"""What every format shares: the row errors, the format-free :class:`Record`, and message parsing (tool calls too).

Canonical messages are ``{"role", "content"}`` dicts; an assistant turn that calls tools adds ``tool_calls`` (each
``{"type": "function", "function": {"name", "arguments"}}`` with the arguments as a JSON string, plus ``id`` when the
source has one) and a tool result may add ``name`` and ``tool_call_id``. Arguments and a row's ``tools`` are JSON
strings because rows pass through Arrow, which cannot hold dicts whose keys differ from row to row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
# Role names seen in real dumps: ShareGPT (human/gpt), LLaMA-Factory (function_call/observation), Gemma ("model"),
# OpenAI's older function calling ("function" results).
ROLE_ALIASES = {
    **{role: role for role in ROLES},
    "human": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "function": "tool",
}


class RowError(Exception):
    """One malformed row; ``reason`` is a short code used to count skipped rows."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RowFiltered(Exception):
    """A well-formed row this run leaves out on purpose (a tie, a multi-turn arena pair); counted, never an error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Record:
    """A row after format parsing: ``shape`` says which message fields are set.

    ``rated`` (Chatbot Arena) holds two whole conversations ``a`` and ``b`` and the ``winner``: a, b, tie or bothbad.
    """

    shape: str  # dialogue | prompt | completion | preference | unpaired | rated
    messages: list[dict] = field(default_factory=list)
    prompt: list[dict] = field(default_factory=list)
    completion: list[dict] = field(default_factory=list)
    chosen: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    label: bool = True
    margin: float | None = None
    a: list[dict] = field(default_factory=list)
    b: list[dict] = field(default_factory=list)
    winner: str = ""


@dataclass(frozen=True)
class FormatOptions:
    """Per-run choices for the formats whose choice is a label (``data.pku_label``, ``data.ties``, ``data.margin``)."""

    pku_label: str = "better"  # better | safer
    ties: str = "drop"  # drop | keep
    margin: bool = True


def require(row: dict, key: str) -> Any:
    if row.get(key) is None:
        raise RowError("missing_field", f"missing field '{key}' (columns here: {sorted(row)})")
    return row[key]


def string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError("wrong_type", f"{what} must be a string, got {type(value).__name__}: {str(value)[:80]!r}")
    return value


def role(raw: Any, what: str) -> str:
    if not isinstance(raw, str) or raw.strip().lower() not in ROLE_ALIASES:
        raise RowError(
            "unknown_role", f"unknown role {raw!r} in {what}; allowed roles: {', '.join(sorted(ROLE_ALIASES))}"
        )
    return ROLE_ALIASES[raw.strip().lower()]


def _json_text(value: Any, what: str) -> str:
    """A dict becomes JSON text; a string must already be JSON (templates parse it back)."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        try:
            parsed = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as e:
            raise RowError("bad_tool_call", f"{what} is not valid JSON ({e.msg}): {value[:80]!r}") from None
        if not isinstance(parsed, dict):
            raise RowError("bad_tool_call", f"{what} must be a JSON object, got {value[:80]!r}")
        return value if value.strip() else "{}"
    raise RowError("bad_tool_call", f"{what} must be an object or its JSON text, got {type(value).__name__}")


def tool_calls(value: Any, what: str) -> list[dict]:
    """OpenAI ``tool_calls`` (or flat ``{"name", "arguments"}`` calls, or one such call) -> canonical calls."""
    calls = value if isinstance(value, list) else [value]
    out = []
    for i, call in enumerate(calls):
        where = f"{what}[{i}]"
        if not isinstance(call, dict):
            raise RowError("bad_tool_call", f"{where} must be an object with a function name, got {call!r:.80}")
        function = call.get("function") if isinstance(call.get("function"), dict) else call
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise RowError("bad_tool_call", f"{where} has no function name (keys: {sorted(function)})")
        arguments = _json_text(function.get("arguments", {}), f"{where} arguments")
        canonical = {"type": "function", "function": {"name": name, "arguments": arguments}}
        if call.get("id") is not None:
            canonical["id"] = str(call["id"])
        out.append(canonical)
    if not out:
        raise RowError("bad_tool_call", f"{what} is an empty list of tool calls")
    return out


def _calls_from_text(text: str, what: str) -> list[dict]:
    """LLaMA-Factory's ``function_call`` turn: its value is the JSON of one call or a list of calls."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise RowError("bad_tool_call", f"{what} must hold the call as JSON ({e.msg}): {text[:80]!r}") from None
    return tool_calls(value, what)


def message(raw: dict, where: str, role_key: str = "role", content_key: str = "content") -> dict:
    """One message dict -> canonical form, keeping tool calls and the tool result's name and call id."""
    if role_key not in raw:
        raise RowError("missing_field", f"{where} has no '{role_key}' (keys: {sorted(raw)})")
    raw_role = raw[role_key]
    out_role = role(raw_role, where)
    calls = raw.get("tool_calls") or (raw.get("function_call") and [raw["function_call"]])  # OpenAI, old and new
    if out_role == "assistant" and str(raw_role).strip().lower() == "function_call":
        calls = _calls_from_text(string(raw.get(content_key), f"{where}.{content_key}"), f"{where}.{content_key}")
        out = {"role": "assistant", "content": ""}
    elif calls and out_role == "assistant":
        content = raw.get(content_key)  # OpenAI: null or absent when the turn only calls tools
        out = {"role": "assistant", "content": "" if content is None else string(content, f"{where}.{content_key}")}
    else:
        if content_key not in raw:
            raise RowError("missing_field", f"{where} has no '{content_key}' (keys: {sorted(raw)})")
        out = {"role": out_role, "content": string(raw[content_key], f"{where}.{content_key}")}
        calls = None
    if calls:
        out["tool_calls"] = tool_calls(calls, f"{where}.tool_calls")
    if out_role == "tool":
        for key in ("name", "tool_call_id"):
            if raw.get(key) is not None:
                out[key] = string(raw[key], f"{where}.{key}")
    return out


def messages(value: Any, what: str, role_key: str = "role", content_key: str = "content") -> list[dict]:
    """Validate a list of message dicts and normalise each with :func:`message`."""
    if not isinstance(value, list):
        raise RowError("wrong_type", f"'{what}' must be a list of messages, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        where = f"{what}[{i}]"
        if not isinstance(item, dict):
            raise RowError("wrong_type", f"{where} must be an object with '{role_key}' and '{content_key}'")
        out.append(message(item, where, role_key, content_key))
    return out


def as_messages(value: Any, what: str, default_role: str) -> list[dict]:
    """A plain string becomes one message with ``default_role``; a list is validated as messages."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, list):
        return messages(value, what)
    raise RowError("wrong_type", f"'{what}' must be a string or a list of messages, got {type(value).__name__}")


def tools_json(value: Any) -> str | None:
    """A row's tool schemas as the JSON text of an OpenAI-style list; bare ``{"name", ...}`` schemas get wrapped."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RowError("bad_tools", f"'tools' is not valid JSON ({e.msg}): {value[:80]!r}") from None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowError("bad_tools", f"'tools' must be a list of function schemas, got {str(value)[:80]!r}")
    schemas = []
    for i, schema in enumerate(value):
        if isinstance(schema.get("function"), dict):
            schemas.append(schema)
        elif isinstance(schema.get("name"), str):
            schemas.append({"type": "function", "function": schema})
        else:
            raise RowError("bad_tools", f"tools[{i}] has no function name (keys: {sorted(schema)})")
    return json.dumps(schemas, ensure_ascii=False) if schemas else None


def last_user(turns: list[dict]) -> int:
    return max((i for i, m in enumerate(turns) if m["role"] == "user"), default=-1)


def split_shared(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Split two full conversations into (shared prompt up to the last user turn, chosen reply, rejected reply)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    cut = last_user(chosen[:shared])
    if cut < 0:
        raise RowError(
            "no_prompt", "chosen and rejected share no user turn, so the prompt cannot be found; give a 'prompt'"
        )
    return chosen[: cut + 1], chosen[cut + 1 :], rejected[cut + 1 :]


def number(value: Any) -> float | None:
    """A finite score, or None for a missing or non-numeric one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)

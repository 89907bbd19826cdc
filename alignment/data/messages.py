"""Canonical messages (and tool schemas) made ready for a chat template.

Canonical rows store a tool call's arguments and a row's ``tools`` as JSON strings, because ``datasets``/Arrow cannot
hold dicts whose keys differ between rows, and a round trip through Arrow gives every message every optional key,
``None`` where it had none. Templates test ``'tool_calls' in message`` and apply ``tojson`` to arguments, so None keys
are dropped and the JSON parsed back here. Templates also differ in what they accept for a call: a few concatenate the
arguments as a string (DeepSeek-V3's original) or render calls only when ``content`` is None; how a template takes
them is learned once per template from probe renders (:func:`call_style`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from alignment.errors import AlignmentError

_PROBE_NAME = "\ue000probe_function"
PROBE_CALL_ID = "call00001"  # Mistral's template wants ids of 9 letters and digits


@dataclass(frozen=True)
class CallStyle:
    """How a template takes an assistant tool call."""

    empty_content: str | None  # the content a call with no text gets: "" for most, None where only that renders it
    arguments_as_text: bool  # arguments passed as their JSON string (templates that concatenate them) or a dict


def as_messages(value: Any, role: str, what: str) -> list[dict]:
    """A string means one message of ``role``; a list holds message dicts. None-valued keys are dropped."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if not isinstance(value, (list, tuple)):
        raise AlignmentError(f"{what} must be a list of messages or a string, got {type(value).__name__}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise AlignmentError(f"{what}[{i}] must be a dict with a 'role' and a 'content', got {message!r:.80}")
        message = {k: v for k, v in message.items() if v is not None or k == "content"}
        calls = message.pop("tool_calls", None) or []  # an empty list is no call (gpt-oss reads tool_calls[0])
        if calls:
            if message["role"] != "assistant":
                raise AlignmentError(
                    f"{what}[{i}] ({message['role']}) has tool_calls; only assistant messages call tools"
                )
            message["tool_calls"] = [_call(call, f"{what}[{i}].tool_calls[{j}]") for j, call in enumerate(calls)]
            if message.get("content") is None:
                message["content"] = ""
        if not isinstance(message.get("content"), str):
            raise AlignmentError(
                f"{what}[{i}] ({message['role']}) has no string 'content' ({type(message.get('content')).__name__});"
                " only text can be encoded (an assistant message that calls tools may have none): convert content"
                " blocks to text first"
            )
        messages.append(message)
    return messages


def _call(call: Any, what: str) -> dict:
    """One tool call as ``{"type": "function", "function": {"name", "arguments": dict}}`` (plus its ``id``)."""
    if not isinstance(call, dict):
        raise AlignmentError(f"{what} must be a dict with a 'function', got {call!r:.80}")
    function = call.get("function") if call.get("function") is not None else call  # also the flat {"name", ...} form
    name, args = function.get("name") if isinstance(function, dict) else None, None
    if not isinstance(name, str) or not name:
        raise AlignmentError(
            f"{what} has no function name; give it as {{'function': {{'name': ..., 'arguments': ...}}}}"
        )
    args = function.get("arguments")
    if args is None or args == "":
        args = {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as err:
            raise AlignmentError(
                f"{what}.function.arguments is not valid JSON ({err}): {args!r:.80}; give the arguments as a JSON"
                " object or its JSON string"
            ) from None
    if not isinstance(args, dict):
        raise AlignmentError(f"{what}.function.arguments must be a JSON object, got {type(args).__name__}")
    out = {"type": call.get("type") or "function", "function": {"name": name, "arguments": args}}
    if call.get("id") is not None:
        out["id"] = str(call["id"])
    return out


def as_tools(tools: Any) -> list[dict] | None:
    """Tool schemas for ``apply_chat_template``: a list, or its JSON string as canonical rows hold it."""
    if tools is None or tools == "":
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as err:
            raise AlignmentError(f"tools is not valid JSON ({err}): {tools!r:.80}; give a list of schemas") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise AlignmentError(f"tools must be a list of function schemas (dicts), got {tools!r:.80}")
    return tools or None


def for_template(messages: list[dict], style: CallStyle | None) -> list[dict]:
    """``messages`` with their tool calls written the way the template takes them."""
    if not any("tool_calls" in m for m in messages):
        return messages
    if style is None:
        raise AlignmentError(
            "the chat template does not render tool calls (assistant messages with tool_calls), so they cannot be"
            " trained; use a model whose chat template supports tools, or drop the rows that call tools"
        )
    out = []
    for m in messages:
        if "tool_calls" in m:
            m = dict(m)
            if not m["content"]:
                m["content"] = style.empty_content
            if style.arguments_as_text:
                m["tool_calls"] = [_with_text_arguments(call) for call in m["tool_calls"]]
        out.append(m)
    return out


def _with_text_arguments(call: dict) -> dict:
    text = json.dumps(call["function"]["arguments"], ensure_ascii=False)
    return {**call, "function": {**call["function"], "arguments": text}}


def call_style(render_text) -> CallStyle | None:
    """How the template renders a tool call, tried on a probe; None when it writes no call at all.

    ``render_text(messages)`` renders a conversation (raising on a template error).
    """
    for empty_content in ("", None):
        for as_text in (False, True):
            probe = [{"role": "user", "content": "Hi"}, probe_call(empty_content, {"x": 1}, as_text)]
            try:
                text = render_text(probe)
            except Exception:  # noqa: BLE001 - any template error means this form is not the one it takes
                continue
            if _PROBE_NAME in text:
                return CallStyle(empty_content, as_text)
    return None


def probe_call(content: str | None, args: dict, as_text: bool = False) -> dict:
    """An assistant message calling the probe function once."""
    function = {"name": _PROBE_NAME, "arguments": json.dumps(args) if as_text else args}
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [{"type": "function", "function": function, "id": PROBE_CALL_ID}],
    }

"""Rendering a conversation with the tokenizer's chat template, and finding where one message lies in the render.

A message is located by rendering the conversation again with one of its parts (the content, or the arguments of
its tool calls) swapped for a sentinel and diffing the two renders. This survives templates that trim content, strip
reasoning from history turns, or fold and drop system prompts, where a prefix render is not a prefix of the full one.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2.exceptions import TemplateError

from alignment.errors import AlignmentError

# Private-use characters: no template writes them, so a diff against a render holding them is exact.
SENTINEL = "\ue000alignment-sentinel\ue001"


def render(tokenizer, messages: list[dict], gen: bool, tools: list[dict] | None = None) -> str:
    """The chat template's text for ``messages`` (``gen``: with the generation prompt); errors are AlignmentErrors."""
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen)
    except TemplateError as err:
        raise _template_error(tokenizer, messages, tools, err) from err
    except ValueError as err:  # no chat template set, empty conversation
        raise AlignmentError(f"cannot render the conversation with the tokenizer's chat template: {err}") from err


def _template_error(tokenizer, messages: list[dict], tools, err: Exception) -> AlignmentError:
    roles = [m["role"] for m in messages]
    if "system" in roles:
        try:
            kept = [m for m in messages if m["role"] != "system"]
            tokenizer.apply_chat_template(kept, tools=tools, tokenize=False)
        except Exception:  # any failure means the system message is not the (only) problem
            pass
        else:
            return AlignmentError(
                f"the chat template rejects system messages ({err}). Remove the system prompt from the data, fold it"
                " into the first user message, or use a chat template that has a system role"
            )
    return AlignmentError(
        f"the chat template refused a conversation with roles {roles}: {err}. Fix the data (most templates want"
        " user/assistant turns to alternate) or use another chat template"
    )


def common_prefix_len(a, b) -> int:
    """Length of the common prefix of two strings or lists (binary search over C-speed slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _sentinel_for(full: str) -> str:
    sentinel = SENTINEL
    while sentinel in full:
        sentinel += "\ue001"
    return sentinel


def _diff(full: str, other: str) -> tuple[int, int] | None:
    """The span of ``full`` that differs from ``other`` (an empty span where ``other`` only inserts text)."""
    if other == full:
        return None
    start = common_prefix_len(full, other)
    tail = min(common_prefix_len(full[::-1], other[::-1]), len(full) - start, len(other) - start)
    return start, len(full) - tail


def content_span(tokenizer, messages: list[dict], index: int, full: str, tools=None) -> tuple[int, int] | None:
    """Where message ``index``'s content lies in ``full``; None when the template does not render it."""
    probe = list(messages)
    probe[index] = {**messages[index], "content": _sentinel_for(full)}
    return _diff(full, render(tokenizer, probe, gen=False, tools=tools))


def calls_span(tokenizer, messages: list[dict], index: int, full: str, tools=None) -> tuple[int, int] | None:
    """Where the arguments of message ``index``'s tool calls lie in ``full`` (first to last call).

    Only the arguments change in the probe render: a call's name may also be written elsewhere (gpt-oss names the
    function again in the tool result's header), its arguments are not.
    """
    sentinel = _sentinel_for(full)
    calls = []
    for call in messages[index]["tool_calls"]:
        args = call["function"]["arguments"]
        fake = {sentinel: sentinel}
        fake = json.dumps(fake, ensure_ascii=False) if isinstance(args, str) else fake
        calls.append({**call, "function": {**call["function"], "arguments": fake}})
    probe = list(messages)
    probe[index] = {**messages[index], "tool_calls": calls}
    return _diff(full, render(tokenizer, probe, gen=False, tools=tools))


def tokenize(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of ``text``, tokenised as ``apply_chat_template`` does it."""
    # add_special_tokens=False: exactly how apply_chat_template tokenizes, so a bos the template writes is not doubled
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as err:
        raise AlignmentError(
            "chat encoding needs a fast tokenizer (one that returns offset mappings); load the model's tokenizer.json"
        ) from err
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def decode(tokenizer, ids: Any) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

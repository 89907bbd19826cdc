"""Tokens and loss masks for multi-turn chat, tool calls included, under any chat template.

Every stage gets its tokens here. ``input_ids`` are what ``tokenizer.apply_chat_template`` gives for the whole
conversation (with ``tools``), plus, under a template that writes nothing after the final reply (GLM-4), the token
that would start the next turn, which is what the model stops on (see ``turn_ends.py``). Which characters are
trained is found by rendering, never by searching for role names:

* the text a turn *generates* starts where ``render(messages[:i], add_generation_prompt=True)`` ends, when that
  render is a prefix of the full one (so Qwen3's ``<think>`` block of the final turn is trained, the
  ``<|im_start|>assistant\\n`` header is not); otherwise after the last generation-prompt header before the reply
  (history turns that render differently, gpt-oss after a call). Under a template without a generation prompt it
  starts after the conversation so far and the reply header learned from a probe (Mistral: after ``[/INST]``, so
  ``[TOOL_CALLS]`` is trained), else at the content;
* a message's content, and the arguments of its tool calls, are located by rendering the conversation again with
  them swapped for a sentinel and diffing the two renders (``render.py``);
* the turn then runs through the text that ends it (``<|im_end|>``, ``<|eot_id|>``, ``<|end|>``/``<|return|>``/
  ``<|call|>``, GLM's next role token...), learned once per template from probe conversations (``turn_ends.py``):
  the first one after the reply, before the next message's text, is trained with it. Whatever whitespace the
  template writes after it is not. A tool call is trained however the template writes it; tool results never are.

Character spans become token labels through the fast tokenizer's offsets: a token is trained if it overlaps a
trained span, as ``return_assistant_tokens_mask`` does in transformers.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Any

from alignment.data.messages import as_messages, as_tools, for_template
from alignment.data.render import calls_span, common_prefix_len, content_span, render, tokenize
from alignment.data.turn_ends import TurnEnds, turn_end_token_ids, turn_ends
from alignment.errors import AlignmentError

__all__ = [
    "IGNORE_INDEX",
    "EncodeInfo",
    "PreferenceInfo",
    "encode_chat",
    "encode_chat_with_info",
    "encode_preference",
    "encode_preference_with_info",
    "encode_prompt",
    "turn_end_token_ids",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TRAIN_ON = ("assistant", "last_assistant", "all")
# A conversation (list of message dicts); a plain string stands for one message (see each function).
Messages = list[dict] | str
# Tool schemas: a list of OpenAI-style function schemas, or its JSON string as canonical rows hold it.
Tools = list[dict] | str | None


@dataclass(frozen=True)
class EncodeInfo:
    """How one conversation's encoding went: cut at ``max_length``, and how many label tokens are trained."""

    truncated: bool
    trainable: int


@dataclass(frozen=True)
class PreferenceInfo:
    """How one preference pair's encoding went, with the lengths left after truncation."""

    truncated: bool
    prompt_tokens: int
    chosen_tokens: int
    rejected_tokens: int


_WARNED: set[str] = set()


# ---------------------------------------------------------------------------------------------------------------
# Locating the trained text


@dataclass
class _Encoded:
    text: str  # the render, plus the appended stop text where the template left the final reply open
    ids: list[int]
    offsets: list[tuple[int, int]]
    spans: list[tuple[int, int]]  # trained character spans, one per rendered target turn


def _prepare(tokenizer, value: Any, role: str, what: str, tools: Tools) -> tuple[list[dict], list | None, TurnEnds]:
    ends = turn_ends(tokenizer)
    return for_template(as_messages(value, role, what), ends.calls), as_tools(tools), ends


def _encode(tokenizer, messages: list[dict], targets: list[int], tools, ends: TurnEnds) -> _Encoded:
    full = render(tokenizer, messages, gen=False, tools=tools)
    spans, appended = _assistant_spans(tokenizer, messages, full, targets, tools, ends)
    ids, offsets = tokenize(tokenizer, full)
    if appended:  # the final reply trains the stop token the template leaves out
        extra_ids, extra_offsets = tokenize(tokenizer, appended)
        ids += extra_ids
        offsets += [(a + len(full), b + len(full)) for a, b in extra_offsets]
        full += appended
    return _Encoded(full, ids, offsets, spans)


def _reply_span(tokenizer, messages: list[dict], i: int, full: str, tools) -> tuple[int, int] | None:
    """What message ``i`` writes: its content and its tool calls' arguments (first to last character)."""
    message = messages[i]
    spans = []
    if message["content"] or "tool_calls" not in message:  # an empty call content may switch the template's branch
        spans.append(content_span(tokenizer, messages, i, full, tools))
    if "tool_calls" in message:
        spans.append(calls_span(tokenizer, messages, i, full, tools))
    spans = [s for s in spans if s is not None]
    return (min(s for s, _ in spans), max(e for _, e in spans)) if spans else None


def _assistant_spans(tokenizer, messages, full: str, targets: list[int], tools, ends: TurnEnds) -> tuple[list, str]:
    """Character spans of ``full`` to train for the assistant messages at ``targets``, and the text to append.

    The last span runs past ``full`` into the appended stop text where the template leaves the final reply open.
    """
    spans, appended = [], ""
    for i in targets:
        reply = _reply_span(tokenizer, messages, i, full, tools)
        if reply is None:
            continue
        start, end = reply
        if i > 0 and ends.gen_prompt:
            start = _start_after_gen_prompt(tokenizer, messages, i, full, tools, start)
        elif i > 0:
            start = _start_without_gen_prompt(tokenizer, messages, i, full, tools, ends, start)
        bound = len(full)
        if i + 1 < len(messages):  # the turn's end must come before the next message's content
            following = content_span(tokenizer, messages, i + 1, full, tools)
            if following is not None and following[0] >= reply[1]:
                bound = following[0]
        found = [p + len(m) for m in ends.markers if (p := full.find(m, reply[1], bound)) >= 0]
        if found:
            end = min(found)
        elif ends.append and i == len(messages) - 1:
            appended = ends.append_after_call if "tool_calls" in messages[i] else ends.append
            end = len(full) + len(appended)
        spans.append((start, end))
    return spans, appended


def _start_after_gen_prompt(tokenizer, messages, i: int, full: str, tools, start: int) -> int:
    """Where reply ``i`` starts: where the generation prompt ends; ``start`` (its text) if that is not found."""
    prompt = render(tokenizer, messages[:i], gen=True, tools=tools)
    if len(prompt) <= start and full.startswith(prompt):
        return len(prompt)
    # The conversation so far renders differently once a reply follows (gpt-oss drops a call's analysis text once a
    # final answer follows): the reply starts after the last generation-prompt header before its text.
    bare = render(tokenizer, messages[:i], gen=False, tools=tools)
    header = prompt[len(bare) :] if prompt.startswith(bare) else ""
    before = content_span(tokenizer, messages, i - 1, full, tools)
    pos = full.rfind(header, before[1] if before and before[1] <= start else 0, start) if header else -1
    return pos + len(header) if pos >= 0 else start


def _start_without_gen_prompt(tokenizer, messages, i: int, full: str, tools, ends: TurnEnds, start: int) -> int:
    """Where reply ``i`` starts under a template without a generation prompt; ``start`` (its text) if unknown."""
    before = render(tokenizer, messages[:i], gen=False, tools=tools)
    at = len(before) + len(ends.header)
    if full.startswith(before) and full.startswith(ends.header, len(before)) and at <= start:
        return at  # after the conversation so far and the reply header
    if messages[i - 1]["role"] == "user" and ends.after_user:  # the prompt render differs (Mistral's system prompt)
        user = content_span(tokenizer, messages, i - 1, full, tools)
        if user and full.startswith(ends.after_user, user[1]) and user[1] + len(ends.after_user) <= start:
            return user[1] + len(ends.after_user)
    return start


def _label(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    labels = [IGNORE_INDEX] * len(ids)
    ends = [e for _, e in offsets]
    for a, b in spans:
        k = bisect.bisect_right(ends, a)  # first token ending after the span starts
        while k < len(ids) and offsets[k][0] < b:
            labels[k] = ids[k]
            k += 1
    return labels


def _warn_dropped_system(tokenizer, messages: list[dict], full: str) -> None:
    for m in messages:
        text = m["content"].strip() if isinstance(m["content"], str) else ""
        if m["role"] == "system" and text and text not in full:
            key = str(tokenizer.chat_template)
            if key not in _WARNED:
                _WARNED.add(key)
                logger.warning(
                    "The chat template drops the system prompt from conversations like this one (for example"
                    " Mistral's, which only renders it before a final user turn); it is not in the training text."
                )
            return


# ---------------------------------------------------------------------------------------------------------------
# Public encoders


def _check_train_on(train_on: str) -> None:
    if train_on not in TRAIN_ON:
        raise AlignmentError(f"train_on must be one of {', '.join(TRAIN_ON)} (got {train_on!r}); fix `train_on`")


def encode_chat_with_info(
    tokenizer,
    messages: list[dict],
    max_length: int | None = None,
    train_on: str = "assistant",
    tools: Tools = None,
) -> tuple[dict[str, list[int]], EncodeInfo]:
    """Like :func:`encode_chat`, also saying whether ``max_length`` cut the sequence and how many tokens train."""
    _check_train_on(train_on)
    messages, tools, ends = _prepare(tokenizer, messages, "user", "messages", tools)
    targets = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "last_assistant":
        targets = targets[-1:]
    enc = _encode(tokenizer, messages, targets if train_on != "all" else targets[-1:], tools, ends)
    _warn_dropped_system(tokenizer, messages, enc.text)
    ids = enc.ids
    labels = list(ids) if train_on == "all" else _label(ids, enc.offsets, enc.spans)
    truncated = max_length is not None and len(ids) > max_length
    if truncated:  # keep the start: labels are cut at the same place, so they stay aligned
        ids, labels = ids[:max_length], labels[:max_length]
    trainable = sum(label != IGNORE_INDEX for label in labels)
    return {"input_ids": ids, "labels": labels}, EncodeInfo(truncated=truncated, trainable=trainable)


def encode_chat(
    tokenizer,
    messages: list[dict],
    max_length: int | None = None,
    train_on: str = "assistant",
    tools: Tools = None,
) -> dict[str, list[int]]:
    """Token ids of the whole conversation and labels (-100 where no loss) for ``train_on``.

    ``train_on``: "assistant" trains every assistant turn (its text or tool calls) and what ends it, "last_assistant"
    only the final one, "all" every token. ``max_length`` keeps the first tokens. ``tools``: the function schemas
    the template renders (a list, or its JSON string). Messages are canonical: an assistant message may carry
    ``tool_calls`` (arguments a dict or a JSON string) with empty or None content; keys set to None are ignored.
    """
    return encode_chat_with_info(tokenizer, messages, max_length, train_on, tools)[0]


def encode_prompt(tokenizer, prompt: Messages, max_length: int | None = None, tools: Tools = None) -> list[int]:
    """Prompt tokens ending with the generation prompt, for rollouts; ``max_length`` keeps the last tokens."""
    return _encode_prompt(tokenizer, prompt, max_length, tools)[0]


def _encode_prompt(tokenizer, prompt, max_length, tools: Tools = None) -> tuple[list[int], bool]:
    messages, tools, _ = _prepare(tokenizer, prompt, "user", "prompt", tools)
    ids = tokenize(tokenizer, render(tokenizer, messages, gen=True, tools=tools))[0]
    if max_length is not None and len(ids) > max_length:
        return ids[len(ids) - max_length :], True
    return ids, False


def _completion_tokens(tokenizer, prompt: list[dict], completion, tools, ends) -> tuple[list[int], int, int]:
    """Tokens of prompt + completion, the first completion token and the end after its last turn."""
    messages = prompt + for_template(as_messages(completion, "assistant", "completion"), ends.calls)
    targets = [i for i in range(len(prompt), len(messages)) if messages[i]["role"] == "assistant"]
    if not targets:
        raise AlignmentError("a completion (chosen/rejected) must contain at least one assistant message")
    enc = _encode(tokenizer, messages, sorted({targets[0], targets[-1]}), tools, ends)
    if not enc.spans:
        raise AlignmentError("the chat template renders none of the completion's assistant messages")
    ends_at = [e for _, e in enc.offsets]
    first = bisect.bisect_right(ends_at, enc.spans[0][0])  # the token holding the completion's first character
    last = bisect.bisect_left([s for s, _ in enc.offsets], enc.spans[-1][1])
    return enc.ids, first, last


def encode_preference_with_info(
    tokenizer,
    prompt: Messages,
    chosen: Messages,
    rejected: Messages,
    max_length: int | None = None,
    tools: Tools = None,
) -> tuple[dict[str, list[int]], PreferenceInfo]:
    """Like :func:`encode_preference`, also saying whether truncation happened and the lengths left."""
    prompt_msgs, tools, ends = _prepare(tokenizer, prompt, "user", "prompt", tools)
    c_ids, c_first, c_end = _completion_tokens(tokenizer, prompt_msgs, chosen, tools, ends)
    r_ids, r_first, r_end = _completion_tokens(tokenizer, prompt_msgs, rejected, tools, ends)
    # Cut both at the same place, before the first completion token and inside what both renders share, so the
    # prompt is common and prompt + completion is exactly the full render's tokens even where BPE merged across.
    cut = min(c_first, r_first, common_prefix_len(c_ids, r_ids))
    prompt_ids, chosen_ids, rejected_ids = c_ids[:cut], c_ids[cut:c_end], r_ids[cut:r_end]
    longest = max(len(chosen_ids), len(rejected_ids))
    truncated = max_length is not None and len(prompt_ids) + longest > max_length
    if truncated:
        keep = max(max_length - longest, 0)  # prompt first, from the left...
        prompt_ids = prompt_ids[len(prompt_ids) - keep :] if keep else []
        room = max_length - len(prompt_ids)  # ...then the completions, from the right
        chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
    info = PreferenceInfo(truncated, len(prompt_ids), len(chosen_ids), len(rejected_ids))
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}, info


def encode_preference(
    tokenizer,
    prompt: Messages,
    chosen: Messages,
    rejected: Messages,
    max_length: int | None = None,
    tools: Tools = None,
) -> dict[str, list[int]]:
    """Prompt and completion token ids of a preference pair; ``prompt_ids + chosen_ids`` is the full encoding.

    A string prompt is one user message, a string completion one assistant message. ``prompt_ids`` end with the
    generation prompt; each completion runs through what ends its last assistant turn, the same tokens
    :func:`encode_chat` trains (GLM-4's appended ``<|user|>`` included), without the whitespace after. Where BPE
    merges a token across the prompt/completion boundary (Llama 3's ``\n\n``), that token goes to the
    completions, so ``prompt_ids`` stays common to both and ``prompt_ids + chosen_ids`` stays the full render's
    tokens. ``max_length`` bounds prompt + longer completion: the prompt is cut from the left first (keeping its
    end), then the completions from the right.
    """
    return encode_preference_with_info(tokenizer, prompt, chosen, rejected, max_length, tools)[0]

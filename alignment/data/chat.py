"""Tokens and loss masks for multi-turn chat under any chat template.

Every stage gets its tokens here. ``input_ids`` are always exactly what ``tokenizer.apply_chat_template`` gives for
the whole conversation. Which characters are trained is found by rendering, never by searching for role names:

* the text a turn *generates* starts where ``render(messages[:i], add_generation_prompt=True)`` ends, when that
  render is a prefix of the full one (so Qwen3's ``<think>`` block of the final turn is trained, the
  ``<|im_start|>assistant\\n`` header is not); otherwise, or when the template has no generation prompt, it starts
  at the content;
* a message's content is located by rendering the conversation again with that content swapped for a sentinel and
  diffing the two renders. This survives templates that trim content, strip reasoning from history turns, or fold
  and drop system prompts, where a prefix render is not a prefix of the full render;
* the end-of-turn text (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, ``</s>``, ``<|end|>``...) is learned
  once per template from a probe conversation, and the first occurrence after the content is trained with it.
  Whatever whitespace the template writes after it is not.

Character spans become token labels through the fast tokenizer's offsets: a token is trained if it overlaps a
trained span, as ``return_assistant_tokens_mask`` does in transformers.
"""

from __future__ import annotations

import bisect
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import TemplateError

from alignment.errors import AlignmentError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TRAIN_ON = ("assistant", "last_assistant", "all")
# Private-use characters: no template writes them, so a diff against a render with this content is exact.
_SENTINEL = "\ue000alignment-sentinel\ue001"
_PROBE = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]
# A conversation (list of {"role", "content"} dicts); a plain string stands for one message (see each function).
Messages = list[dict] | str


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


@dataclass(frozen=True)
class _TurnEnd:
    text: str  # what closes an assistant turn, e.g. "<|im_end|>"; "" when the template writes nothing
    ids: tuple[int, ...]
    gen_prompt: bool  # whether add_generation_prompt adds anything (a role header) to a prompt


_TURN_END_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WARNED: set[str] = set()


# ---------------------------------------------------------------------------------------------------------------
# Rendering and locating


def _as_messages(value: Any, role: str, what: str) -> list[dict]:
    """A string means one message of ``role``; a list must hold dicts with string ``role`` and ``content``."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if not isinstance(value, (list, tuple)):
        raise AlignmentError(f"{what} must be a list of messages or a string, got {type(value).__name__}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise AlignmentError(f"{what}[{i}] must be a dict with a 'role' and a 'content', got {message!r:.80}")
        if not isinstance(message.get("content"), str):
            raise AlignmentError(
                f"{what}[{i}] ({message['role']}) has no string 'content' ({type(message.get('content')).__name__});"
                " only text messages can be encoded, convert content blocks or tool calls to text first"
            )
        messages.append(dict(message))
    return messages


def _render(tokenizer, messages: list[dict], gen: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    except TemplateError as err:
        raise _template_error(tokenizer, messages, err) from err
    except ValueError as err:  # no chat template set, empty conversation
        raise AlignmentError(f"cannot render the conversation with the tokenizer's chat template: {err}") from err


def _template_error(tokenizer, messages: list[dict], err: Exception) -> AlignmentError:
    roles = [m["role"] for m in messages]
    if "system" in roles:
        try:
            tokenizer.apply_chat_template([m for m in messages if m["role"] != "system"], tokenize=False)
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


def _common_prefix_len(a, b) -> int:
    """Length of the common prefix of two strings or lists (binary search over C-speed slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _content_span(tokenizer, messages: list[dict], index: int, full: str) -> tuple[int, int] | None:
    """Where message ``index``'s content lies in ``full``, by diffing against a render with a sentinel content."""
    sentinel = _SENTINEL
    while sentinel in full:
        sentinel += "\ue001"
    probe = list(messages)
    probe[index] = {**messages[index], "content": sentinel}
    other = _render(tokenizer, probe, gen=False)
    if other == full:  # the template does not render this message at all
        return None
    start = _common_prefix_len(full, other)
    tail = min(_common_prefix_len(full[::-1], other[::-1]), len(full) - start, len(other) - start)
    return start, len(full) - tail


def _turn_end(tokenizer) -> _TurnEnd:
    """The text that closes an assistant turn under this template, learned from a probe conversation.

    The probe assistant turn is rendered once as the last message and once followed by a user turn; what both
    renders share right after its content (whitespace stripped) is the end-of-turn text. Comparing tokens, not
    characters, keeps Phi-3's ``<|end|>\\n<|endoftext|>`` from matching a following ``<|user|>`` on ``<|``.
    """
    key = (str(tokenizer.chat_template), tokenizer.eos_token, tokenizer.bos_token)
    cached = _TURN_END_CACHE.get(tokenizer)
    if cached and cached[0] == key:  # cached per tokenizer, and redone if its template or special tokens change
        return cached[1]
    try:
        suffixes = []
        for probe in (_PROBE, _PROBE[:2]):
            full = _render(tokenizer, probe, gen=False)
            span = _content_span(tokenizer, probe, 1, full)
            suffixes.append(_tokenize(tokenizer, full[span[1] :] if span else "")[0])
        common = suffixes[0][: _common_prefix_len(suffixes[0], suffixes[1])]
        text = tokenizer.decode(common, skip_special_tokens=False, clean_up_tokenization_spaces=False).strip()
        gen_prompt = _render(tokenizer, _PROBE[:1], gen=True) != _render(tokenizer, _PROBE[:1], gen=False)
    except AlignmentError:  # the template refuses even a plain user/assistant/user probe
        text, gen_prompt = tokenizer.eos_token or "", True
    result = _TurnEnd(text, tuple(_tokenize(tokenizer, text)[0]) if text else (), gen_prompt)
    _TURN_END_CACHE[tokenizer] = (key, result)
    return result


def _assistant_spans(tokenizer, messages: list[dict], full: str, targets: list[int]) -> list[tuple[int, int]]:
    """Character spans of ``full`` to train for the assistant messages at ``targets``."""
    facts = _turn_end(tokenizer)
    end_text = facts.text
    spans = []
    for i in targets:
        content = _content_span(tokenizer, messages, i, full)
        if content is None:
            continue
        cs, ce = content
        start = cs
        # Without a generation prompt a template has no way to say where the reply starts: train from the content.
        if i > 0 and facts.gen_prompt:
            prompt = _render(tokenizer, messages[:i], gen=True)
            if len(prompt) <= cs and full.startswith(prompt):
                start = len(prompt)
        end = ce
        if end_text:
            bound = len(full)
            if i + 1 < len(messages):  # the end marker must come before the next message's content
                following = _content_span(tokenizer, messages, i + 1, full)
                if following is not None and following[0] >= ce:
                    bound = following[0]
            pos = full.find(end_text, ce, bound)
            if pos >= 0:
                end = pos + len(end_text)
        spans.append((start, end))
    return spans


def _tokenize(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    # add_special_tokens=False: exactly how apply_chat_template tokenizes, so a bos the template writes is not doubled
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as err:
        raise AlignmentError(
            "chat encoding needs a fast tokenizer (one that returns offset mappings); load the model's tokenizer.json"
        ) from err
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


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
        text = m["content"].strip()
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
    tokenizer, messages: list[dict], max_length: int | None = None, train_on: str = "assistant"
) -> tuple[dict[str, list[int]], EncodeInfo]:
    """Like :func:`encode_chat`, also saying whether ``max_length`` cut the sequence and how many tokens train."""
    _check_train_on(train_on)
    messages = _as_messages(messages, "user", "messages")
    full = _render(tokenizer, messages, gen=False)
    _warn_dropped_system(tokenizer, messages, full)
    ids, offsets = _tokenize(tokenizer, full)
    if train_on == "all":
        labels = list(ids)
    else:
        targets = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if train_on == "last_assistant":
            targets = targets[-1:]
        labels = _label(ids, offsets, _assistant_spans(tokenizer, messages, full, targets))
    truncated = max_length is not None and len(ids) > max_length
    if truncated:  # keep the start: labels are cut at the same place, so they stay aligned
        ids, labels = ids[:max_length], labels[:max_length]
    trainable = sum(label != IGNORE_INDEX for label in labels)
    return {"input_ids": ids, "labels": labels}, EncodeInfo(truncated=truncated, trainable=trainable)


def encode_chat(
    tokenizer, messages: list[dict], max_length: int | None = None, train_on: str = "assistant"
) -> dict[str, list[int]]:
    """Token ids of the whole conversation and labels (-100 where no loss) for ``train_on``.

    ``train_on``: "assistant" trains every assistant turn's content and end-of-turn token(s), "last_assistant" only
    the final one, "all" every token. ``max_length`` keeps the first tokens.
    """
    return encode_chat_with_info(tokenizer, messages, max_length, train_on)[0]


def encode_prompt(tokenizer, prompt: Messages, max_length: int | None = None) -> list[int]:
    """Prompt tokens ending with the generation prompt, for rollouts; ``max_length`` keeps the last tokens."""
    return _encode_prompt(tokenizer, prompt, max_length)[0]


def _encode_prompt(tokenizer, prompt, max_length) -> tuple[list[int], bool]:
    ids = _tokenize(tokenizer, _render(tokenizer, _as_messages(prompt, "user", "prompt"), gen=True))[0]
    if max_length is not None and len(ids) > max_length:
        return ids[len(ids) - max_length :], True
    return ids, False


def _completion_tokens(tokenizer, prompt: list[dict], completion) -> tuple[list[int], int, int]:
    """Full-render tokens of prompt + completion, the first completion token and the end after its last turn."""
    messages = prompt + _as_messages(completion, "assistant", "completion")
    targets = [i for i in range(len(prompt), len(messages)) if messages[i]["role"] == "assistant"]
    if not targets:
        raise AlignmentError("a completion (chosen/rejected) must contain at least one assistant message")
    full = _render(tokenizer, messages, gen=False)
    ids, offsets = _tokenize(tokenizer, full)
    spans = _assistant_spans(tokenizer, messages, full, sorted({targets[0], targets[-1]}))
    if not spans:
        raise AlignmentError("the chat template renders none of the completion's assistant messages")
    ends = [e for _, e in offsets]
    first = bisect.bisect_right(ends, spans[0][0])  # the token holding the completion's first character
    last = bisect.bisect_left([s for s, _ in offsets], spans[-1][1])
    return ids, first, last


def encode_preference_with_info(
    tokenizer, prompt: Messages, chosen: Messages, rejected: Messages, max_length: int | None = None
) -> tuple[dict[str, list[int]], PreferenceInfo]:
    """Like :func:`encode_preference`, also saying whether truncation happened and the lengths left."""
    prompt_msgs = _as_messages(prompt, "user", "prompt")
    c_ids, c_first, c_end = _completion_tokens(tokenizer, prompt_msgs, chosen)
    r_ids, r_first, r_end = _completion_tokens(tokenizer, prompt_msgs, rejected)
    # Cut both at the same place, before the first completion token and inside what both renders share, so the
    # prompt is common and prompt + completion is exactly the full render's tokens even where BPE merged across.
    cut = min(c_first, r_first, _common_prefix_len(c_ids, r_ids))
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
    tokenizer, prompt: Messages, chosen: Messages, rejected: Messages, max_length: int | None = None
) -> dict[str, list[int]]:
    """Prompt and completion token ids of a preference pair; ``prompt_ids + chosen_ids`` is the full render.

    A string prompt is one user message, a string completion one assistant message. ``prompt_ids`` end with the
    generation prompt; each completion runs through the end-of-turn token(s) of its last assistant turn, without the
    whitespace after. Where BPE merges a token across the prompt/completion boundary (Llama 3's ``\n\n``), that
    token goes to the completions, so ``prompt_ids`` stays common to both and ``prompt_ids + chosen_ids`` stays the
    full render's tokens. ``max_length`` bounds prompt + longer completion: the prompt is cut from the left first
    (keeping its end), then the completions from the right.
    """
    return encode_preference_with_info(tokenizer, prompt, chosen, rejected, max_length)[0]


def turn_end_token_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn under this tokenizer's template, plus eos: the generation stop ids."""
    end = _turn_end(tokenizer)
    added = set(tokenizer.get_added_vocab().values())
    ids = [i for i in end.ids if i in added] or (list(end.ids) if len(end.ids) == 1 else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))

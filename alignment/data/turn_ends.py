"""What ends an assistant turn under a chat template, learned once per template from probe conversations.

The rule: every assistant turn is trained together with whatever the template writes to close it; where the template
writes nothing, with the token that starts the next turn, which is what the model stops on. Per template family:

* one closing text for every turn (ChatML ``<|im_end|>``, Llama 3 ``<|eot_id|>``, Gemma ``<end_of_turn>``, Phi
  ``<|end|>``, Mistral/Zephyr ``</s>``, DeepSeek ``<｜end▁of▁sentence｜>``): found as the text that follows the
  reply both as the last turn and as a history turn;
* different closings by position (gpt-oss/harmony: ``<|end|>`` after a history turn, ``<|return|>`` after the final
  one, ``<|call|>`` after a tool call): each is learned from its own probe;
* nothing written (GLM-4: a turn runs on into the next role token, ``<|user|>``, ``<|observation|>`` after a tool
  call, ``<|system|>``): that role token is trained as the turn's end, and after a final reply, which the template
  leaves open, ``<|user|>`` is appended to the tokens, as TRL's ``glm4moe_training`` template does. These role tokens
  are GLM's own generation stop ids.

Only single added tokens (the tokenizer's markup tokens) qualify in the last two cases; a plain-text template with no
closing text trains the reply alone, and generation stops on eos.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from alignment.data.messages import PROBE_CALL_ID, CallStyle, call_style, for_template, probe_call
from alignment.data.render import calls_span, common_prefix_len, content_span, decode, render, tokenize
from alignment.errors import AlignmentError

PROBE = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]
_TOOL_RESULT = {"role": "tool", "content": "42", "name": "probe", "tool_call_id": PROBE_CALL_ID}


@dataclass(frozen=True)
class TurnEnds:
    """How assistant turns end under one template."""

    markers: tuple[str, ...]  # texts that close a turn: the first one found after a reply closes it
    append: str  # appended after a final reply the template leaves open ("" where the template closes it)
    append_after_call: str  # the same after a final tool call (GLM: <|observation|>, where the result will follow)
    gen_prompt: bool  # whether add_generation_prompt adds anything (a role header) to a prompt
    calls: CallStyle | None  # how the template takes tool calls; None when it renders none
    # Without a generation prompt, where a reply (a tool call included) starts: after ``header``, what the template
    # writes between the conversation so far and the reply ("" for Mistral, "assistant: " for a plain-text
    # template), or after ``after_user``, what it writes between a user's text and the reply (Mistral's [/INST]).
    header: str = ""
    after_user: str = ""


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def turn_ends(tokenizer) -> TurnEnds:
    """The template's :class:`TurnEnds`, cached per tokenizer and redone if its template or special tokens change."""
    key = (str(tokenizer.chat_template), tokenizer.eos_token, tokenizer.bos_token)
    cached = _CACHE.get(tokenizer)
    if cached and cached[0] == key:
        return cached[1]
    try:
        result = _learn(tokenizer)
    except AlignmentError:  # the template refuses even a plain user/assistant/user probe
        result = TurnEnds((tokenizer.eos_token,) if tokenizer.eos_token else (), "", "", True, None)
    _CACHE[tokenizer] = (key, result)
    return result


def turn_end_token_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn under this tokenizer's template, plus eos: the generation stop ids.

    The first is the end of a final reply (``<|im_end|>``, ``<|return|>``, GLM's ``<|user|>``).
    """
    added = set(tokenizer.get_added_vocab().values())
    ids = []
    for text in _ordered(turn_ends(tokenizer)):
        marker = tokenize(tokenizer, text)[0]
        ids += [i for i in marker if i in added] or (marker if len(marker) == 1 else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


def _ordered(ends: TurnEnds) -> list[str]:
    return [ends.append, *ends.markers] if ends.append else list(ends.markers)


def _learn(tokenizer) -> TurnEnds:
    calls = call_style(lambda messages: render(tokenizer, messages, gen=False))
    gen_prompt = render(tokenizer, PROBE[:1], gen=True) != render(tokenizer, PROBE[:1], gen=False)
    header, after_user = ("", "") if gen_prompt else _reply_headers(tokenizer)
    after_final, after_history = _after_reply(tokenizer, PROBE[:2], PROBE, content_span)

    # Comparing tokens, not characters, keeps Phi-3's <|end|>\n<|endoftext|> from matching a following <|user|> on <|
    final_ids, history_ids = tokenize(tokenizer, after_final)[0], tokenize(tokenizer, after_history)[0]
    common = decode(tokenizer, final_ids[: common_prefix_len(final_ids, history_ids)]).strip()
    if common:
        return TurnEnds((common,), "", "", gen_prompt, calls, header, after_user)

    first_final, first_history = _first_special(tokenizer, after_final), _first_special(tokenizer, after_history)
    closed = bool(after_final.strip())
    markers, append = ([first_final, first_history], "") if closed else ([first_history], first_history)
    call_end = _call_end(tokenizer, calls, closed) if calls is not None else ""
    markers.append(call_end)
    if not closed:  # an open template's turn also runs into a system turn
        markers.append(_next_role_token(tokenizer, {"role": "system", "content": "Be brief."}))
    markers = tuple(dict.fromkeys(m for m in markers if m))
    append = append if append in markers else ""
    return TurnEnds(markers, append, call_end if append else "", gen_prompt, calls, header, after_user)


def _after_reply(tokenizer, final_probe, history_probe, locate) -> tuple[str, str]:
    """What the template writes after the reply at index 1: as the last message, and before the next message's text."""
    final = render(tokenizer, final_probe, gen=False)
    history = render(tokenizer, history_probe, gen=False)
    reply_f = locate(tokenizer, final_probe, 1, final)
    reply_h = locate(tokenizer, history_probe, 1, history)
    following = content_span(tokenizer, history_probe, 2, history)
    if reply_f is None or reply_h is None or following is None:
        return "", ""
    return final[reply_f[1] :], history[reply_h[1] : following[0]]


def _first_special(tokenizer, text: str) -> str:
    """The first token of ``text`` (leading whitespace skipped) when it is an added (markup) token; "" otherwise."""
    ids = tokenize(tokenizer, text.lstrip())[0]
    if ids and ids[0] in set(tokenizer.get_added_vocab().values()):
        return decode(tokenizer, ids[:1])
    return ""


def _call_end(tokenizer, style: CallStyle, closed: bool) -> str:
    """What closes a tool-call turn: its own closing token (gpt-oss ``<|call|>``), or the tool turn's start token."""
    call = for_template([probe_call("", {"x": 1})], style)[0]
    history = [PROBE[0], call, _TOOL_RESULT]
    try:
        after_final, after_history = _after_reply(tokenizer, history[:2], history, calls_span)
    except Exception:  # noqa: BLE001 - the template refuses the probe (ids, alternation...): no call end learned
        return ""
    if closed:
        ids = tokenize(tokenizer, after_final.rstrip())[0]
        added = set(tokenizer.get_added_vocab().values())
        return decode(tokenizer, ids[-1:]) if ids and ids[-1] in added else ""
    final_ids, history_ids = tokenize(tokenizer, after_final)[0], tokenize(tokenizer, after_history)[0]
    rest = history_ids[common_prefix_len(final_ids, history_ids) :]
    return _first_special(tokenizer, decode(tokenizer, rest))


def _next_role_token(tokenizer, message: dict) -> str:
    probe = [*PROBE[:2], message]
    try:
        return _first_special(tokenizer, _after_reply(tokenizer, probe[:2], probe, content_span)[1])
    except Exception:  # noqa: BLE001 - the template rejects this role after an assistant turn
        return ""


def _reply_headers(tokenizer) -> tuple[str, str]:
    prompt = render(tokenizer, PROBE[:1], gen=False)
    full = render(tokenizer, PROBE[:2], gen=False)
    user, reply = content_span(tokenizer, PROBE[:2], 0, full), content_span(tokenizer, PROBE[:2], 1, full)
    if not (user and reply and user[1] <= reply[0]):
        return "", ""
    header = full[len(prompt) : reply[0]] if full.startswith(prompt) and len(prompt) <= reply[0] else ""
    return header, full[user[1] : reply[0]]

"""Conversation formats: OpenAI/TRL messages, ShareGPT, Alpaca, human/assistant pairs, prompt/completion, prompts."""

from __future__ import annotations

from alignment.data.formats.fields import (
    FormatOptions,
    Record,
    RowError,
    as_messages,
    last_user,
    messages,
    require,
    string,
)

CONVERSATION_KEYS = ("messages", "conversation", "conversations")


def from_messages(row: dict, opts: FormatOptions) -> Record:
    key = next((k for k in CONVERSATION_KEYS if row.get(k) is not None), "messages")
    return Record("dialogue", messages=messages(require(row, key), key))


def from_sharegpt(row: dict, opts: FormatOptions) -> Record:
    turns = messages(require(row, "conversations"), "conversations", "from", "value")
    if row.get("system"):
        turns = [{"role": "system", "content": string(row["system"], "'system'")}, *turns]
    if row.get("chosen") is not None or row.get("rejected") is not None:
        # LLaMA-Factory ShareGPT preference: the conversation is the prompt, chosen/rejected are single turns.
        replies = []
        for key in ("chosen", "rejected"):
            value = require(row, key)
            replies.append(messages([value] if isinstance(value, dict) else value, key, "from", "value"))
        return Record("preference", prompt=turns, chosen=replies[0], rejected=replies[1])
    if row.get("kto_tag") is not None:  # LLaMA-Factory KTO: the last turn is the completion.
        label = row["kto_tag"]
        if not isinstance(label, bool):
            raise RowError("wrong_type", f"'kto_tag' must be true or false, got {label!r}")
        cut = last_user(turns)
        return Record("unpaired", prompt=turns[: cut + 1], completion=turns[cut + 1 :], label=label)
    return Record("dialogue", messages=turns)


def from_human_assistant(row: dict, opts: FormatOptions) -> Record:
    """Firefly-style ``conversation: [{"human", "assistant"}, ...]``, with a ``system`` on the row or on its pairs.

    Chat templates render a system prompt only first, so a pair's ``system`` must be the first pair's or repeat it.
    """
    key = next((k for k in CONVERSATION_KEYS if row.get(k) is not None), "conversation")
    pairs = require(row, key)
    if not isinstance(pairs, list) or not pairs:
        raise RowError("empty_conversation" if pairs == [] else "wrong_type", f"'{key}' must be a list of pairs")
    system = row.get("system") or None
    turns: list[dict] = []
    for i, pair in enumerate(pairs):
        where = f"{key}[{i}]"
        if not isinstance(pair, dict):
            raise RowError("wrong_type", f"{where} must be an object with 'human' and 'assistant'")
        if pair.get("system"):
            if system is not None and pair["system"] != system:
                raise RowError(
                    "bad_system",
                    f"{where} sets a different 'system' from the one before; chat templates put one system "
                    "prompt first, so give one per conversation",
                )
            system = pair["system"]
        turns.append({"role": "user", "content": string(require(pair, "human"), f"{where}.human")})
        if pair.get("assistant") is not None:
            turns.append({"role": "assistant", "content": string(pair["assistant"], f"{where}.assistant")})
    if system is not None:
        turns.insert(0, {"role": "system", "content": string(system, "'system'")})
    return Record("dialogue", messages=turns)


def from_alpaca(row: dict, opts: FormatOptions) -> Record:
    instruction = string(require(row, "instruction"), "'instruction'")
    extra = string(row.get("input") or "", "'input'")
    user = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
    turns = [{"role": "system", "content": string(row["system"], "'system'")}] if row.get("system") else []
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowError("wrong_type", "'history' must be a list of [instruction, response] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise RowError("wrong_type", f"history[{i}] must be a [instruction, response] pair, got {pair!r:.80}")
        turns.append({"role": "user", "content": string(pair[0], f"history[{i}][0]")})
        turns.append({"role": "assistant", "content": string(pair[1], f"history[{i}][1]")})
    turns.append({"role": "user", "content": user})
    if row.get("chosen") is not None or row.get("rejected") is not None:  # LLaMA-Factory Alpaca preference
        chosen, rejected = (string(require(row, k), f"'{k}'") for k in ("chosen", "rejected"))
        return Record(
            "preference",
            prompt=turns,
            chosen=[{"role": "assistant", "content": chosen}],
            rejected=[{"role": "assistant", "content": rejected}],
        )
    output = string(require(row, "output"), "'output'")
    return Record("dialogue", messages=[*turns, {"role": "assistant", "content": output}])


def from_prompt_completion(row: dict, opts: FormatOptions) -> Record:
    prompt = as_messages(require(row, "prompt"), "prompt", "user")
    return Record(
        "completion", prompt=prompt, completion=as_messages(require(row, "completion"), "completion", "assistant")
    )


def from_prompt_only(row: dict, opts: FormatOptions) -> Record:
    return Record("prompt", prompt=as_messages(require(row, "prompt"), "prompt", "user"))

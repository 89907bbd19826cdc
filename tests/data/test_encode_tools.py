"""Tool-call conversations through alignment.data.encode, under every template in templates.py that renders tool calls.

Rows come as canonical rows do after ``datasets`` (Arrow): arguments and ``tools`` as JSON strings, None in every
optional key a message does not use, None content on a call. The expected trained text is written per template in
oracles.py; TRL's ``_training`` templates give a second, independent reference mask.
"""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment.data.encode import IGNORE_INDEX, encode_chat, encode_preference, encode_prompt, turn_end_token_ids
from alignment.data.render import render
from alignment.errors import AlignmentError

try:
    from tests.data.oracles import (
        CALL_END,
        CALL_RENDER,
        FINAL_END,
        HEADER,
        MAX_CALLS,
        RENDER,
        decode,
        rendered_ids,
        trained_runs,
    )
    from tests.data.templates import TEMPLATES, TRL_TRAINING, trl_template
except ImportError:
    from oracles import (
        CALL_END,
        CALL_RENDER,
        FINAL_END,
        HEADER,
        MAX_CALLS,
        RENDER,
        decode,
        rendered_ids,
        trained_runs,
    )
    from templates import TEMPLATES, TRL_TRAINING, trl_template

TOOL_TEMPLATES = list(CALL_RENDER)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "查询天气 (weather for a city)",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}},
    },
}


def canonical(messages: list[dict], tools: list[dict]) -> dict:
    """The row as it comes back from a ``datasets.Dataset``: JSON strings, None in unused keys."""
    for m in messages:
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
    return Dataset.from_list([{"messages": messages, "tools": json.dumps(tools, ensure_ascii=False)}])[0]


def call_message(content, calls: list) -> dict:
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [{"type": "function", "function": {"name": n, "arguments": a}, "id": i} for n, a, i in calls],
    }


def for_render(messages: list[dict]) -> list[dict]:
    """What the template itself is given: None keys gone, arguments parsed back."""
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if v is not None}
        if m.get("tool_calls"):
            m["content"] = m.get("content") or ""
            m["tool_calls"] = [{**c, "function": {**c["function"], "arguments": _args(c)}} for c in m["tool_calls"]]
        out.append(m)
    return out


def _args(call: dict) -> dict:
    args = call["function"]["arguments"]
    return json.loads(args) if isinstance(args, str) else args


def _call_end_id(tok, name: str) -> int:
    return tok.convert_tokens_to_ids(CALL_END.get(name, "<|im_end|>"))


def expected(name: str, messages: list[dict]) -> list[str]:
    """The trained text of each assistant turn: a call as the template writes it plus its end, or the reply."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    texts = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if m.get("tool_calls"):
            calls = [(c["function"]["name"], c["function"]["arguments"], c.get("id")) for c in m["tool_calls"]]
            texts.append(CALL_RENDER[name](m["content"] or "", calls) + CALL_END[name])
        else:
            end = FINAL_END[name] if i == len(messages) - 1 else CALL_END[name]
            texts.append(RENDER[name](m["content"], i > last_user) + end)
    return texts


def assert_trained(tok, name: str, enc: dict, want: list[str]) -> None:
    ids, labels = enc["input_ids"], enc["labels"]
    runs = trained_runs(ids, labels)
    assert len(runs) == len(want), [decode(tok, ids[a:b]) for a, b in runs]
    header = HEADER[name]
    for (a, b), text in zip(runs, want, strict=True):
        got = decode(tok, ids[a:b])
        # a BPE token may glue the header's last whitespace to the turn's first character: only that may lead
        extra = got[: len(got) - len(text)]
        assert got.endswith(text) and extra.strip() == "" and header.endswith(extra), (got, text)


# ---------------------------------------------------------------------------------------------------------------
# One conversation, every tool template: the exact trained text


WEATHER_CHAT = [
    {"role": "user", "content": "北京天气怎么样?"},
    call_message(None, [("get_weather", {"city": "北京"}, "call00042")]),
    {"role": "tool", "content": "晴, 25°C", "name": "get_weather", "tool_call_id": "call00042"},
    {"role": "assistant", "content": "北京今天晴, 25°C。"},
]
WEATHER_TRAINED = {
    "qwen2.5": [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call><|im_end|>',
        "北京今天晴, 25°C。<|im_end|>",
    ],
    "qwen3": [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call><|im_end|>',
        "<think>\n\n</think>\n\n北京今天晴, 25°C。<|im_end|>",
    ],
    "llama3.1": ['{"name": "get_weather", "parameters": {"city": "北京"}}<|eot_id|>', "北京今天晴, 25°C。<|eot_id|>"],
    "mistral-nemo": [
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "北京"}, "id": "call00042"}]</s>',
        "北京今天晴, 25°C。</s>",
    ],
    "glm4.5": [
        "\n<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>北京</arg_value>\n"
        "</tool_call><|observation|>",
        "\n<think></think>\n北京今天晴, 25°C。<|user|>",
    ],
    "gpt-oss": [
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "北京"}<|call|>',
        "<|channel|>final<|message|>北京今天晴, 25°C。<|return|>",
    ],
}


@pytest.mark.parametrize("name", list(WEATHER_TRAINED))
def test_tool_call_and_its_end_are_trained_the_result_is_not(chat_tokenizers, name):
    tok = chat_tokenizers[name]
    row = canonical(json.loads(json.dumps(WEATHER_CHAT)), [WEATHER])
    assert row["messages"][0]["tool_calls"] is None and row["messages"][1]["content"] is None  # as Arrow gives it
    enc = encode_chat(tok, row["messages"], tools=row["tools"])
    assert enc["input_ids"] == rendered_ids(tok, name, for_render(row["messages"]), tools=[WEATHER])
    runs = [decode(tok, enc["input_ids"][a:b]) for a, b in trained_runs(**enc)]
    assert runs == WEATHER_TRAINED[name]
    assert "晴, 25°C" in decode(tok, enc["input_ids"])  # the tool result is in the input, untrained
    # the same conversation given directly (dict arguments, a list of tools) encodes the same way
    assert encode_chat(tok, WEATHER_CHAT, tools=[WEATHER]) == enc
    # generation stops on the call's end too
    assert _call_end_id(tok, name) in turn_end_token_ids(tok)

    # a preference pair whose completions are calls ends each with the call's end, as the SFT labels do
    other = call_message("", [("get_weather", {"city": "上海"}, "call00042")])
    pair = encode_preference(tok, WEATHER_CHAT[:1], WEATHER_CHAT[1:2], [other], tools=row["tools"])
    assert decode(tok, pair["chosen_ids"]).endswith(WEATHER_TRAINED[name][0])
    assert decode(tok, pair["rejected_ids"]).endswith(WEATHER_TRAINED[name][0].replace("北京", "上海"))
    prompt_ids = tok.apply_chat_template(for_render(WEATHER_CHAT[:3]), tools=[WEATHER], add_generation_prompt=True)
    assert encode_prompt(tok, WEATHER_CHAT[:3], tools=row["tools"]) == prompt_ids["input_ids"]


# ---------------------------------------------------------------------------------------------------------------
# Random tool conversations: Chinese, emoji, several calls and steps


WORDS = st.text("abcxyz 0123456789你好世界天气北京答案🙂🦊,.!?-_\n", max_size=10)
NAMES = st.sampled_from(["get_weather", "search", "查询", "run_code"])
VALUES = st.one_of(WORDS, st.integers(-5, 500), st.booleans(), st.lists(st.integers(0, 9), max_size=3))
ARGS = st.dictionaries(st.sampled_from(["city", "q", "n", "地点", "flag"]), VALUES, max_size=3)


@st.composite
def tool_conversations(draw, max_calls: int) -> list[dict]:
    messages = [{"role": "system", "content": draw(WORDS)}] if draw(st.booleans()) else []
    messages.append({"role": "user", "content": draw(WORDS)})
    ids = iter(f"call{k:05d}" for k in range(100))
    for _ in range(draw(st.integers(1, 2))):
        calls = [(draw(NAMES), draw(ARGS), next(ids)) for _ in range(draw(st.integers(1, max_calls)))]
        messages.append(call_message(draw(st.sampled_from([None, "", "让我查一下 🙂"])), calls))
        for name, _, id_ in calls:
            messages.append({"role": "tool", "content": draw(WORDS), "name": name, "tool_call_id": id_})
    messages.append({"role": "assistant", "content": draw(WORDS)})
    return messages


@pytest.mark.parametrize("name", TOOL_TEMPLATES)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_tool_conversations_under_real_templates(chat_tokenizers, name, data):
    tok = chat_tokenizers[name]
    messages = data.draw(tool_conversations(MAX_CALLS[name]))
    tools = [WEATHER, SEARCH]
    row = canonical(json.loads(json.dumps(messages)), tools)
    enc = encode_chat(tok, row["messages"], tools=row["tools"])
    assert enc["input_ids"] == rendered_ids(tok, name, for_render(row["messages"]), tools=tools)
    assert_trained(tok, name, enc, expected(name, for_render(row["messages"])))

    # a preference pair after the tool steps: each completion ends where the SFT labels of the same chat end
    prompt, chosen = row["messages"][:-1], row["messages"][-1]
    rejected = {"role": "assistant", "content": "不知道"}
    pair = encode_preference(tok, prompt, [chosen], [rejected], tools=row["tools"])
    for completion, key in ((chosen, "chosen_ids"), (rejected, "rejected_ids")):
        sft = encode_chat(tok, [*prompt, completion], tools=row["tools"])
        seq = pair["prompt_ids"] + pair[key]
        last = max(k for k, label in enumerate(sft["labels"]) if label != IGNORE_INDEX)
        assert seq == sft["input_ids"][: last + 1] and decode(tok, sft["input_ids"][last + 1 :]).strip() == ""


# ---------------------------------------------------------------------------------------------------------------
# Against TRL's training templates ({% generation %} markers): the same tokens, the same trained tokens but two
# kinds TRL also trains: the generation prompt (gpt-oss's <|start|>assistant, which at inference is in the prompt)
# and what the template writes after a turn's end (a newline, Phi's closing eos)


PLAIN_CHAT = [
    {"role": "system", "content": "简短回答"},
    {"role": "user", "content": "hi 你好"},
    {"role": "assistant", "content": "hello 世界 🙂"},
    {"role": "user", "content": "bye"},
    {"role": "assistant", "content": "<think>\nmaybe\n</think>\n\nsee you 再见"},
]


@pytest.mark.parametrize("name", list(TRL_TRAINING))
def test_masks_agree_with_trls_training_templates(chat_tokenizers, name):
    tok = chat_tokenizers[name]
    chats = [(PLAIN_CHAT[1:] if TEMPLATES[name]["system"] == "rejects" else PLAIN_CHAT, None)]
    if name in CALL_RENDER:
        chats.append((WEATHER_CHAT, [WEATHER]))
    header = tok.convert_tokens_to_ids(tok.tokenize(HEADER[name]))
    for messages, tools in chats:
        enc = encode_chat(tok, messages, tools=tools)
        ref = tok.apply_chat_template(
            for_render(messages),
            tools=tools,
            chat_template=trl_template(TRL_TRAINING[name]),
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        assert enc["input_ids"] == ref["input_ids"]  # GLM: TRL's template writes the <|user|> the encoder appends
        ours = [label != IGNORE_INDEX for label in enc["labels"]]
        theirs = [bool(m) for m in ref["assistant_masks"]]
        assert all(t for o, t in zip(ours, theirs, strict=True) if o)  # everything trained here TRL trains too
        only_theirs = [1 if t and not o else IGNORE_INDEX for o, t in zip(ours, theirs, strict=True)]
        for a, b in trained_runs(enc["input_ids"], only_theirs):
            ids = enc["input_ids"][a:b]
            assert ids == header or decode(tok, ids).replace(tok.eos_token, "").strip() == "", decode(tok, ids)
        if name in ("glm4.5",):
            assert ours == theirs


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_tool_call_errors_name_the_key_and_the_fix(chat_tokenizers):
    tok = chat_tokenizers["qwen2.5"]
    bad = [{"role": "user", "content": "u"}, call_message(None, [("f", "{not json", "call00001")])]
    with pytest.raises(AlignmentError, match=r"messages\[1\]\.tool_calls\[0\]\.function\.arguments is not valid JSON"):
        encode_chat(tok, bad)
    with pytest.raises(AlignmentError, match="tools is not valid JSON"):
        encode_chat(tok, WEATHER_CHAT, tools="[{")
    with pytest.raises(AlignmentError, match="only assistant messages call tools"):
        encode_chat(tok, [{**call_message(None, [("f", {}, "call00001")]), "role": "user"}])
    with pytest.raises(AlignmentError, match="no string 'content'"):
        encode_chat(tok, [{"role": "user", "content": "u"}, {"role": "assistant", "content": None}])
    for name in ("gemma3", "phi3.5", "zephyr"):  # templates that never write a call: training one would be a lie
        with pytest.raises(AlignmentError, match="does not render tool calls"):
            encode_chat(chat_tokenizers[name], WEATHER_CHAT, tools=[WEATHER])
    assert render(tok, [{"role": "user", "content": "u"}], gen=True) == tok.apply_chat_template(
        [{"role": "user", "content": "u"}], tokenize=False, add_generation_prompt=True
    )

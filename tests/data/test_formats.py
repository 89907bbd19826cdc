"""Each real-world format converts into the canonical rows, and detection picks the right format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment.data.formats import FORMATS, RowError, convert_row, detect_format
from alignment.errors import AlignmentError

SAMPLES = Path(__file__).parent / "samples"


def _rows(name: str) -> list[dict]:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    return json.loads(text) if name.endswith(".json") else [json.loads(line) for line in text.splitlines()]


def _convert(name: str, kind: str) -> list[dict]:
    rows = _rows(name)
    fmt = detect_format(rows, name)
    return [out for row in rows for out in convert_row(row, fmt, kind)]


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str) -> dict:
    return {"role": "assistant", "content": text}


def s(text: str) -> dict:
    return {"role": "system", "content": text}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("messages.jsonl", "messages"),
        ("sharegpt.json", "sharegpt"),
        ("alpaca.json", "alpaca"),
        ("prompt_completion.jsonl", "prompt_completion"),
        ("preference_strings.jsonl", "preference_strings"),
        ("ultrafeedback.jsonl", "preference_messages"),
        ("hh_rlhf.jsonl", "hh_rlhf"),
        ("kto.jsonl", "kto"),
        ("prompts.jsonl", "prompt_only"),
        ("openai_tools.jsonl", "messages"),
        ("human_assistant.jsonl", "human_assistant"),
        ("pku_saferlhf.jsonl", "pku_saferlhf"),
        ("chatbot_arena.jsonl", "chatbot_arena"),
        ("shp.jsonl", "shp"),
    ],
)
def test_detects_each_sample_format(name: str, expected: str) -> None:
    assert detect_format(_rows(name), name) == expected


def test_messages_keeps_turns_and_scalar_extras() -> None:
    rows = _convert("messages.jsonl", "sft")
    assert rows[0]["messages"][0] == s("You are a careful math tutor.")
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert rows[1] == {
        "messages": [u("把“早上好”翻译成英文。"), a("“早上好”的英文是 “Good morning”。")],
        "id": "a2",
        "task": "translation",
    }


def test_messages_under_conversations_column_and_gemma_model_role() -> None:
    row = {"conversations": [{"role": "user", "content": "hi"}, {"role": "model", "content": "hello"}]}
    assert detect_format([row], "x") == "messages"
    assert convert_row(row, "messages", "sft") == [{"messages": [u("hi"), a("hello")]}]


def test_sharegpt_maps_roles_and_prepends_system() -> None:
    first, second = _convert("sharegpt.json", "sft")
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert first["messages"][0] == s("你是一个乐于助人的助手。")
    assert first["messages"][-1] == a("根据我的计算，你今天34岁了。")
    assert second["messages"] == [u("Name a prime number larger than 10."), a("11 is a prime number larger than 10.")]


def test_sharegpt_function_call_is_the_assistants_call_and_observation_the_result() -> None:
    first, _ = _convert("sharegpt.json", "sft")
    call = {"type": "function", "function": {"name": "calculate_age", "arguments": '{"birthdate": "1990-05-15"}'}}
    assert first["messages"][2] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert first["messages"][3] == {"role": "tool", "content": '{"age": 34}'}
    # LLaMA-Factory's bare schemas are wrapped in OpenAI's {"type": "function", "function": ...} form.
    assert json.loads(first["tools"]) == [
        {"type": "function", "function": {"name": "calculate_age", "description": "Compute age from a birthdate"}}
    ]


def test_openai_tool_calls_keep_calls_ids_and_tools() -> None:
    first, second, plain = _convert("openai_tools.jsonl", "sft")
    call = {
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "北京"}'},
        "id": "call_1",
    }
    assert first["messages"][2:] == [
        {"role": "assistant", "content": "", "tool_calls": [call]},  # content null -> ""
        {"role": "tool", "content": '{"temp_c": 21, "sky": "晴"}', "name": "get_weather", "tool_call_id": "call_1"},
        a("北京现在晴，气温21°C。"),
    ]
    assert json.loads(first["tools"])[0]["function"]["name"] == "get_weather"
    # Content missing, arguments given as a dict: the dict becomes its JSON text (non-ASCII kept as is).
    calls = second["messages"][1]["tool_calls"]
    assert second["messages"][1]["content"] == ""
    assert [(c["id"], c["function"]["arguments"]) for c in calls] == [
        ("call_2", '{"city": "Paris"}'),
        ("call_3", '{"city": "Oslo"}'),
    ]
    assert plain == {"messages": [u("Say hi."), a("Hi!")], "id": "t3"}


def test_old_openai_function_call_and_function_role() -> None:
    row = {
        "messages": [
            u("time?"),
            {"role": "assistant", "content": None, "function_call": {"name": "now", "arguments": "{}"}},
            {"role": "function", "name": "now", "content": "12:00"},
            a("It is noon."),
        ]
    }
    out = convert_row(row, "messages", "sft")[0]["messages"]
    assert out[1]["tool_calls"] == [{"type": "function", "function": {"name": "now", "arguments": "{}"}}]
    assert out[2] == {"role": "tool", "content": "12:00", "name": "now"}


def test_tool_calls_survive_as_prompts() -> None:
    rows = _convert("openai_tools.jsonl", "prompt")
    assert rows[0]["prompt"] == [s("You can call tools."), u("北京现在天气怎么样？")]
    assert "tools" in rows[0]


def test_human_assistant_pairs_with_system_on_row_or_pair() -> None:
    rows = _rows("human_assistant.jsonl")
    assert detect_format(rows, "firefly") == "human_assistant"
    first, second, third = (convert_row(r, "human_assistant", "sft")[0] for r in rows)
    assert first == {
        "messages": [
            u("给我三个学习英语的建议。"),
            a("1. 每天听英语播客。\n2. 背常用词。\n3. 找人练口语。"),
            u("第二条能具体点吗？"),
            a("每天背20个高频词，并在句子里用一遍。"),
        ],
        "conversation_id": 7,
        "category": "Brainstorming",
        "dataset": "moss",
    }
    assert second["messages"] == [s("You are a concise tutor."), u("What is 6 * 7?"), a("42.")]
    assert third["messages"][:2] == [s("你是一个诗人。"), u("写一句关于月亮的诗。")]
    assert [m["role"] for m in third["messages"]] == ["system", "user", "assistant", "user", "assistant"]


def test_human_assistant_pairs_with_differing_system_prompts_are_refused() -> None:
    row = {"conversation": [{"system": "A", "human": "q", "assistant": "r"}, {"system": "B", "human": "q2"}]}
    with pytest.raises(RowError, match="different 'system'") as err:
        convert_row(row, "human_assistant", "sft")
    assert err.value.reason == "bad_system"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ({"type": "function", "function": {"arguments": "{}"}}, "no function name"),
        ({"type": "function", "function": {"name": "f", "arguments": "{not json"}}, "not valid JSON"),
        ({"type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}, "must be a JSON object"),
    ],
)
def test_bad_tool_calls_are_row_errors(call: dict, match: str) -> None:
    row = {"messages": [u("q"), {"role": "assistant", "content": None, "tool_calls": [call]}, a("r")]}
    with pytest.raises(RowError, match=match) as err:
        convert_row(row, "messages", "sft")
    assert err.value.reason == "bad_tool_call"


def test_sharegpt_preference_llamafactory_layout() -> None:
    row = {
        "conversations": [{"from": "human", "value": "推荐一本书。"}],
        "chosen": {"from": "gpt", "value": "《三体》，一部出色的科幻小说。"},
        "rejected": {"from": "gpt", "value": "书。"},
    }
    assert detect_format([row], "x") == "sharegpt"
    assert convert_row(row, "sharegpt", "preference") == [
        {"prompt": [u("推荐一本书。")], "chosen": [a("《三体》，一部出色的科幻小说。")], "rejected": [a("书。")]}
    ]


def test_alpaca_joins_input_with_blank_line_and_expands_history() -> None:
    first, second = _convert("alpaca.json", "sft")
    assert first["messages"] == [
        u("Give three tips for staying healthy."),
        a("1. Eat a balanced diet.\n2. Exercise regularly.\n3. Get enough sleep."),
    ]
    assert first["text"].startswith("Below is an instruction")  # tatsu-lab/alpaca's extra column survives
    assert second["messages"] == [
        s("你是一个精确的单位换算助手。"),
        u("你能做单位换算吗？"),
        a("可以，请告诉我要换算的数值。"),
        u("将温度从华氏度转换为摄氏度。\n\n94F"),
        a("34.4摄氏度"),
    ]


def test_alpaca_preference() -> None:
    row = {"instruction": "Sum the numbers.", "input": "2, 3", "chosen": "5", "rejected": "6"}
    assert detect_format([row], "x") == "alpaca"
    assert convert_row(row, "alpaca", "preference") == [
        {"prompt": [u("Sum the numbers.\n\n2, 3")], "chosen": [a("5")], "rejected": [a("6")]}
    ]


def test_prompt_completion_strings_and_messages() -> None:
    plain, chat = _convert("prompt_completion.jsonl", "sft")
    assert plain == {"messages": [u("The capital of France is"), a(" Paris.")]}
    assert chat == {"messages": [s("Answer briefly."), u("天空是什么颜色？"), a("蓝色。")]}


def test_preference_strings() -> None:
    rows = _convert("preference_strings.jsonl", "preference")
    assert rows[1] == {
        "prompt": [u("用一句话介绍长城。")],
        "chosen": [a("长城是中国古代修建的宏伟防御工程，绵延上万里。")],
        "rejected": [a("不知道。")],
        "source": "synthetic",
    }


def test_ultrafeedback_splits_repeated_prompt_and_drops_messages_column() -> None:
    first, second = _convert("ultrafeedback.jsonl", "preference")
    assert first["prompt"] == [u("How do I reverse a list in Python?")]
    assert first["rejected"] == [a("Python lists cannot be reversed.")]
    assert "messages" not in first
    assert (first["prompt_id"], first["score_chosen"], first["score_rejected"]) == ("5f1c0a9e", 8.5, 2.0)
    assert second["chosen"] == [a("递归是函数在定义中调用自身的方法，需要有终止条件。")]


def test_trl_conversational_preference_with_explicit_multiturn_prompt() -> None:
    row = {
        "prompt": [s("Be terse."), u("2+2?"), a("4"), u("3+3?")],
        "chosen": [a("6")],
        "rejected": [a("7")],
    }
    out = convert_row(row, detect_format([row], "x"), "preference")
    assert out == [
        {"prompt": [s("Be terse."), u("2+2?"), a("4"), u("3+3?")], "chosen": [a("6")], "rejected": [a("7")]}
    ]


def test_implicit_prompt_preference_splits_at_last_shared_user_turn() -> None:
    row = {
        "chosen": [u("hi"), a("hello"), u("bye"), a("goodbye")],
        "rejected": [u("hi"), a("hello"), u("bye"), a("no")],
    }
    assert convert_row(row, "preference_messages", "preference") == [
        {"prompt": [u("hi"), a("hello"), u("bye")], "chosen": [a("goodbye")], "rejected": [a("no")]}
    ]


def test_hh_rlhf_multiturn_history_becomes_prompt() -> None:
    first, second = _convert("hh_rlhf.jsonl", "preference")
    assert first["prompt"] == [
        u("What are some good vegetables to grow in a small garden?"),
        a("Tomatoes, lettuce and herbs like basil do well in small spaces."),
        u("Which of those is easiest?"),
    ]
    assert first["chosen"] == [a("Lettuce is the easiest: it grows fast and tolerates some shade.")]
    assert first["rejected"] == [a("I don't know anything about gardening.")]
    assert second == {
        "prompt": [u("怎样才能睡得更好？")],
        "chosen": [a("保持规律的作息，睡前少看屏幕，卧室保持安静和凉爽。")],
        "rejected": [a("多喝咖啡。")],
    }


def test_hh_rlhf_rows_that_diverge_before_the_last_human_turn_are_rejected() -> None:
    row = {
        "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
        "rejected": "\n\nHuman: a\n\nAssistant: X",
    }
    with pytest.raises(RowError) as err:
        convert_row(row, "hh_rlhf", "preference")
    assert err.value.reason == "bad_reply"


def test_kto_unpaired_rows() -> None:
    rows = _convert("kto.jsonl", "kto")
    assert rows[0] == {"prompt": [u("The sky is")], "completion": [a(" blue.")], "label": True}
    assert rows[1] == {"prompt": [u("月亮是什么做的？")], "completion": [a("奶酪。")], "label": False}


def test_kto_from_preference_pair_gives_desirable_and_undesirable_rows() -> None:
    rows = _convert("preference_strings.jsonl", "kto")
    assert len(rows) == 4
    assert rows[0] == {
        "prompt": [u("Write a haiku about autumn.")],
        "completion": rows[0]["completion"],
        "label": True,
        "source": "synthetic",
    }
    assert rows[1]["completion"] == [a("Autumn is a season.")] and rows[1]["label"] is False


@pytest.mark.parametrize(
    ("name", "expected_last_prompt"),
    [
        ("messages.jsonl", u("And 51 / 3?")),  # conversation cut after the last user turn
        ("alpaca.json", u("Give three tips for staying healthy.")),
        ("hh_rlhf.jsonl", u("Which of those is easiest?")),
        ("kto.jsonl", u("The sky is")),
        ("prompts.jsonl", u("Compute 12 + 30.")),
    ],
)
def test_any_format_loads_as_prompts(name: str, expected_last_prompt: dict) -> None:
    rows = _convert(name, "prompt")
    assert rows[0]["prompt"][-1] == expected_last_prompt
    assert all(set(r) - {"id", "task", "oracle", "text", "prompt"} == set() for r in rows)


def test_sft_from_preference_trains_on_chosen() -> None:
    rows = _convert("hh_rlhf.jsonl", "sft")
    assert rows[1] == {"messages": [u("怎样才能睡得更好？"), a("保持规律的作息，睡前少看屏幕，卧室保持安静和凉爽。")]}


@pytest.mark.parametrize(
    ("row", "fmt", "kind", "reason"),
    [
        ({"messages": [{"role": "narrator", "content": "x"}]}, "messages", "sft", "unknown_role"),
        ({"conversations": [{"from": "human"}]}, "sharegpt", "sft", "missing_field"),
        ({"instruction": "x"}, "alpaca", "sft", "missing_field"),
        ({"text": "no conversation here"}, "messages", "sft", "missing_field"),
        ({"messages": []}, "messages", "sft", "empty_conversation"),
        ({"messages": [u("hi")]}, "messages", "sft", "no_assistant_turn"),
        ({"messages": [{"role": "user", "content": ["a", "b"]}]}, "messages", "sft", "wrong_type"),
        (
            {"prompt": [u("q"), a("partial")], "chosen": [a("x")], "rejected": [a("y")]},
            "preference_messages",
            "preference",
            "prompt_not_ending_with_user",
        ),
        (
            {"prompt": "q", "chosen": "same", "rejected": "same"},
            "preference_strings",
            "preference",
            "identical_chosen_rejected",
        ),
        ({"prompt": "q", "completion": "c", "label": "yes"}, "kto", "kto", "wrong_type"),
        ({"prompt": [a("only assistant")]}, "prompt_only", "prompt", "prompt_not_ending_with_user"),
    ],
)
def test_bad_rows_raise_row_errors_with_reason(row: dict, fmt: str, kind: str, reason: str) -> None:
    with pytest.raises(RowError) as err:
        convert_row(row, fmt, kind)
    assert err.value.reason == reason


def test_unknown_role_message_lists_allowed_roles() -> None:
    with pytest.raises(RowError, match=r"unknown role 'narrator'.*allowed roles: .*assistant.*human.*user"):
        convert_row({"messages": [{"role": "narrator", "content": "x"}]}, "messages", "sft")


def test_kind_mismatch_is_a_config_error_not_a_row_error() -> None:
    with pytest.raises(AlignmentError, match="kind=preference needs chosen/rejected pairs"):
        convert_row({"messages": [u("a"), a("b")]}, "messages", "preference")


def test_unknown_columns_list_the_columns_and_format_names() -> None:
    with pytest.raises(AlignmentError) as err:
        detect_format([{"question": "q", "answer": "a"}], "qa.jsonl")
    message = str(err.value)
    assert "qa.jsonl" in message and "['answer', 'question']" in message
    assert all(name in message for name in FORMATS)


def test_mixed_formats_are_ambiguous() -> None:
    rows = [{"messages": [u("a"), a("b")]}, {"instruction": "i", "output": "o"}]
    with pytest.raises(
        AlignmentError, match=r"different formats: messages \(first at row 1\), alpaca \(first at row 2\)"
    ):
        detect_format(rows, "mixed.jsonl")


def test_detection_ignores_a_malformed_first_row() -> None:
    rows = [
        {"conversations": "broken"},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}]},
    ]
    assert detect_format(rows, "x") == "sharegpt"

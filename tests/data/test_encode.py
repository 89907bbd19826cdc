"""Property tests of alignment.data.encode over twelve real-world chat templates (see templates.py).

Expected trained text is computed here independently, from how each template renders an assistant turn, and
compared with what the encoder's labels select.
"""

from __future__ import annotations

import logging

import pytest
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment.data import encode
from alignment.data.encode import (
    IGNORE_INDEX,
    encode_chat,
    encode_chat_with_info,
    encode_preference,
    encode_preference_with_info,
    encode_prompt,
    turn_end_token_ids,
)
from alignment.data.tokenize import tokenize_preference, tokenize_prompts, tokenize_sft
from alignment.errors import AlignmentError

try:
    from tests.data.oracles import (
        FINAL_END,
        HEADER,
        RENDER,
        STOP_TOKENS,
        TURN_END,
        decode,
        expected_turns,
        rejects_system,
        rendered_ids,
        trained_runs,
    )
    from tests.data.templates import TEMPLATES
except ImportError:
    from oracles import (
        FINAL_END,
        HEADER,
        RENDER,
        STOP_TOKENS,
        TURN_END,
        decode,
        expected_turns,
        rejects_system,
        rendered_ids,
        trained_runs,
    )
    from templates import TEMPLATES

# ---------------------------------------------------------------------------------------------------------------
# Random conversations: Chinese, emoji, newlines and strings that look like template markup


SNIPPETS = [
    "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|start_header_id|>", "[INST]", "[/INST]", "</s>", "<s>",
    "<end_of_turn>", "<start_of_turn>model\n", "<|end|>", "<|assistant|>", "<|user|>", "<｜User｜>",
    "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "{{ messages }}", "{% endfor %}", "<think>", "</think>", "\n\n",
    "<|observation|>", "<|start|>", "<|return|>", "<|call|>", "[TOOL_CALLS]",
]  # fmt: skip
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,!?;:'\"()[]{}<>|/\\-_*#\n\t你好世界问题答案模型🙂🚀👍🏽🦊"
ODD = st.text(st.characters(exclude_categories=("Cs", "Co")), max_size=6)  # any unicode but private use
SPACES = st.sampled_from([" ", "  ", "\n", "\t", "\r\n", "\u3000", "\x85"])  # what .strip()/| trim eat
text = st.lists(st.one_of(st.text(ALPHABET, max_size=12), st.sampled_from(SNIPPETS), ODD, SPACES), max_size=5).map(
    "".join
)


@st.composite
def assistant_text(draw) -> str:
    body = draw(text)
    if draw(st.booleans()):  # reasoning models' replies carry a think block
        return f"<think>\n{draw(text)}\n</think>\n\n{body}"
    return body


@st.composite
def conversations(draw) -> list[dict]:
    messages = [{"role": "system", "content": draw(text)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(text)})
        messages.append({"role": "assistant", "content": draw(assistant_text())})
    return messages


# ---------------------------------------------------------------------------------------------------------------
# The property tests, one per template


@pytest.mark.parametrize("name", list(TEMPLATES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv=conversations(), cut=st.floats(0.0, 1.0))
def test_chat_masks_under_real_templates(chat_tokenizers, name, conv, cut):
    tok = chat_tokenizers[name]
    if conv[0]["role"] == "system" and rejects_system(name):
        with pytest.raises(AlignmentError, match="rejects system messages"):
            encode_chat(tok, conv)
        conv = conv[1:]

    enc, info = encode_chat_with_info(tok, conv)
    ids, labels = enc["input_ids"], enc["labels"]
    # exactly what the model sees at inference (GLM: and the <|user|> it stops on after the final reply)
    assert ids == rendered_ids(tok, name, conv)
    assert len(labels) == len(ids)
    assert not info.truncated and info.trainable == sum(label != IGNORE_INDEX for label in labels)

    # every assistant turn trained, through its end-of-turn token, and nothing else; the role header precedes it
    runs = trained_runs(ids, labels)
    expected = expected_turns(name, conv)
    assert len(runs) == len(expected)
    header = HEADER[name]
    for (a, b), want in zip(runs, expected, strict=True):
        assert labels[a:b] == ids[a:b]
        got = decode(tok, ids[a:b])
        assert got.endswith(want), (got, want)
        # a BPE token may merge the header's last newline with a reply that starts with whitespace: that token is
        # trained (as transformers' assistant masks do), so allow only such header whitespace in front
        extra = got[: len(got) - len(want)]
        assert extra.strip() == "" and header.endswith(extra), (got, want)
        assert decode(tok, ids[:a]).endswith(header[: len(header) - len(extra)])

    # last_assistant: the final run only; all: every token
    last = encode_chat(tok, conv, train_on="last_assistant")
    assert last["input_ids"] == ids
    a, b = runs[-1]
    assert last["labels"] == [IGNORE_INDEX] * a + labels[a:b] + [IGNORE_INDEX] * (len(ids) - b)
    assert encode_chat(tok, conv, train_on="all")["labels"] == ids

    # truncation keeps the first tokens and never relabels: truncated labels are a prefix of the full ones
    max_length = max(1, int(len(ids) * cut))
    short, short_info = encode_chat_with_info(tok, conv, max_length=max_length)
    assert short["input_ids"] == ids[:max_length] and short["labels"] == labels[:max_length]
    assert short_info.truncated == (len(ids) > max_length)
    assert short_info.trainable == sum(label != IGNORE_INDEX for label in labels[:max_length])


@pytest.mark.parametrize("name", list(TEMPLATES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv=conversations(), other=assistant_text(), budget=st.integers(1, 120))
def test_preference_boundary_under_real_templates(chat_tokenizers, name, conv, other, budget):
    tok = chat_tokenizers[name]
    if rejects_system(name) and conv[0]["role"] == "system":
        conv = conv[1:]
    prompt, chosen = conv[:-1], conv[-1]["content"]
    enc = encode_preference(tok, prompt, chosen, other)
    end = [tok.convert_tokens_to_ids(FINAL_END[name])]
    fulls = []
    for key, reply in (("chosen_ids", chosen), ("rejected_ids", other)):
        full = rendered_ids(tok, name, prompt + [{"role": "assistant", "content": reply}])
        fulls.append(full)
        seq = enc["prompt_ids"] + enc[key]
        # prompt + completion is the full render's tokens up to and including the end-of-turn token...
        assert full[: len(seq)] == seq and enc[key][-1:] == end
        # ...and only what the template writes after the end of the turn (whitespace, Phi's eos) is left out
        assert decode(tok, full[len(seq) :]).replace(tok.eos_token, "").strip() == ""
        assert decode(tok, enc[key]).endswith(RENDER[name](reply, True) + FINAL_END[name])
    rendered = tok.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
    # the usual case: the prompt is the generation-prompt render. It is not where the template renders the prompt
    # differently once a reply follows (Mistral's system prompt) or BPE merges a token across the boundary
    if all(full[: len(rendered)] == rendered for full in fulls):
        assert enc["prompt_ids"] == rendered

    # max_length bounds prompt + longer completion: prompt cut from the left first, then completions from the right
    short, info = encode_preference_with_info(tok, prompt, chosen, other, max_length=budget)
    longest = max(len(enc["chosen_ids"]), len(enc["rejected_ids"]))
    assert info.truncated == (len(enc["prompt_ids"]) + longest > budget)
    assert len(short["prompt_ids"]) + max(len(short["chosen_ids"]), len(short["rejected_ids"])) <= budget
    assert enc["prompt_ids"][len(enc["prompt_ids"]) - len(short["prompt_ids"]) :] == short["prompt_ids"]
    for key in ("chosen_ids", "rejected_ids"):
        assert enc[key][: len(short[key])] == short[key]
        if short["prompt_ids"]:  # completions are only cut once the prompt is gone
            assert short[key] == enc[key]


def test_preference_accepts_message_lists_and_strings(chat_tokenizers):
    tok = chat_tokenizers["qwen3"]
    as_strings = encode_preference(tok, "2+2?", "4", "5")
    as_lists = encode_preference(
        tok,
        [{"role": "user", "content": "2+2?"}],
        [{"role": "assistant", "content": "4"}],
        [{"role": "assistant", "content": "5"}],
    )
    assert as_strings == as_lists
    assert decode(tok, as_strings["chosen_ids"]) == "<think>\n\n</think>\n\n4<|im_end|>"


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_turn_end_token_ids_are_the_models_stop_tokens(chat_tokenizers, name):
    tok = chat_tokenizers[name]
    assert turn_end_token_ids(tok) == tok.convert_tokens_to_ids(STOP_TOKENS[name])


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_encode_prompt_ends_with_the_generation_prompt(chat_tokenizers, name):
    tok = chat_tokenizers[name]
    prompt = [{"role": "user", "content": "你好, what is 2+2?"}, {"role": "assistant", "content": "4"}]
    prompt.append({"role": "user", "content": "and 3+3?"})
    ids = encode_prompt(tok, prompt)
    assert ids == tok.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
    assert decode(tok, ids).endswith(HEADER[name])
    assert encode_prompt(tok, prompt, max_length=5) == ids[-5:]
    assert encode_prompt(tok, "and 3+3?") == encode_prompt(tok, [{"role": "user", "content": "and 3+3?"}])


# ---------------------------------------------------------------------------------------------------------------
# Specific behaviours


def test_system_and_user_text_is_never_trained(chat_tokenizers):
    conv = [
        {"role": "system", "content": "SYSMARK rules"},
        {"role": "user", "content": "USERMARK one"},
        {"role": "assistant", "content": "first reply"},
        {"role": "user", "content": "USERMARK two"},
        {"role": "assistant", "content": "second reply"},
    ]
    for name, tok in chat_tokenizers.items():
        messages = conv[1:] if rejects_system(name) else conv
        enc = encode_chat(tok, messages)
        trained = decode(
            tok, [i for i, label in zip(enc["input_ids"], enc["labels"], strict=True) if label != IGNORE_INDEX]
        )
        assert "MARK" not in trained and "first reply" in trained and "second reply" in trained, name


@pytest.mark.parametrize("name", ["qwen2.5", "qwen3", "llama3.1", "deepseek-v3"])
def test_tool_results_are_never_trained(chat_tokenizers, name):
    tok = chat_tokenizers[name]
    conv = [
        {"role": "user", "content": "what is 6*7?"},
        {"role": "assistant", "content": "calling the calculator"},
        {"role": "tool", "content": "TOOLMARK 42"},
        {"role": "assistant", "content": "it is 42"},
    ]
    enc = encode_chat(tok, conv)
    runs = [decode(tok, enc["input_ids"][a:b]) for a, b in trained_runs(**enc)]
    assert "TOOLMARK" in decode(tok, enc["input_ids"])
    assert len(runs) == 2 and runs[0].startswith("calling") and runs[1].endswith("it is 42" + TURN_END[name])
    assert not any("TOOLMARK" in run for run in runs)


def test_qwen3_history_turns_lose_their_reasoning(chat_tokenizers):
    tok = chat_tokenizers["qwen3"]
    conv = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>\nold thoughts\n</think>\n\nold answer"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "<think>\nnew thoughts\n</think>\n\nnew answer"},
    ]
    enc = encode_chat(tok, conv)
    runs = [decode(tok, enc["input_ids"][a:b]) for a, b in trained_runs(enc["input_ids"], enc["labels"])]
    assert runs == ["old answer<|im_end|>", "<think>\nnew thoughts\n</think>\n\nnew answer<|im_end|>"]


def test_bos_written_by_the_template_is_not_doubled(chat_tokenizers):
    tok = chat_tokenizers["llama3.1"]
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    text = tok.apply_chat_template(conv, tokenize=False)
    assert tok(text)["input_ids"].count(tok.bos_token_id) == 2  # the tokenizer alone would add a second one
    for ids in (encode_chat(tok, conv)["input_ids"], encode_prompt(tok, conv[:1])):
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_phi_trailing_newline_and_eos_are_not_trained(chat_tokenizers):
    tok = chat_tokenizers["phi3.5"]
    enc = encode_chat(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert decode(tok, enc["input_ids"][-3:]) == "<|end|>\n<|endoftext|>"
    assert enc["labels"][-3] != IGNORE_INDEX and enc["labels"][-2:] == [IGNORE_INDEX] * 2


def test_mistral_system_prompt_dropped_by_template_is_reported(chat_tokenizers, caplog, monkeypatch):
    monkeypatch.setattr(encode, "_WARNED", set())  # warned once per template per process: forget earlier tests
    tok = chat_tokenizers["mistral-nemo"]
    conv = [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    with caplog.at_level(logging.WARNING, logger="alignment.data.encode"):
        enc = encode_chat(tok, conv)
    assert "be terse" not in decode(tok, enc["input_ids"])
    assert any("drops the system prompt" in r.message for r in caplog.records)


@pytest.mark.parametrize("name", ["gemma2", "mixtral"])
def test_templates_that_reject_system_raise_alignment_error(chat_tokenizers, name):
    conv = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    with pytest.raises(AlignmentError, match="rejects system messages"):
        encode_chat(chat_tokenizers[name], conv)


def test_template_errors_other_than_system_are_alignment_errors(chat_tokenizers):
    conv = [{"role": "user", "content": "u"}, {"role": "user", "content": "u again"}]
    with pytest.raises(AlignmentError, match="alternate"):
        encode_chat(chat_tokenizers["gemma2"], conv)


def test_generation_markers_and_a_template_without_end_token(chat_tokenizers):
    tok = chat_tokenizers["qwen2.5"]
    conv = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "reply"}]
    # a ChatML template with TRL's {% generation %} markers encodes the same way
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}{% generation %}"
        "{{ m['content'] }}<|im_end|>{% endgeneration %}{% else %}{{ m['content'] }}<|im_end|>{% endif %}\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    try:
        enc = encode_chat(tok, conv)
        assert [decode(tok, enc["input_ids"][a:b]) for a, b in trained_runs(**enc)] == ["reply<|im_end|>"]
        # no end-of-turn marker and no generation prompt: only the content can be trained (with the space before it
        # where BPE glues that to the reply), not the "assistant:" header; generation can only stop on eos
        tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
        enc = encode_chat(tok, conv)
        runs = [decode(tok, enc["input_ids"][a:b]) for a, b in trained_runs(**enc)]
        assert len(runs) == 1 and runs[0] in ("reply", " reply")
        assert turn_end_token_ids(tok) == [tok.eos_token_id]
    finally:
        tok.chat_template = TEMPLATES["qwen2.5"]["template"]


def test_bad_inputs_are_alignment_errors(chat_tokenizers):
    tok = chat_tokenizers["qwen2.5"]
    conv = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(AlignmentError, match="train_on"):
        encode_chat(tok, conv, train_on="everything")
    with pytest.raises(AlignmentError, match="content"):
        encode_chat(tok, [{"role": "user", "content": [{"type": "text", "text": "u"}]}])
    with pytest.raises(AlignmentError, match="assistant message"):
        encode_preference(tok, "u", [{"role": "user", "content": "not a reply"}], "a")
    saved, tok.chat_template = tok.chat_template, None
    try:
        with pytest.raises(AlignmentError, match="chat template"):
            encode_chat(tok, conv)
    finally:
        tok.chat_template = saved


# ---------------------------------------------------------------------------------------------------------------
# Dataset helpers


def _chat(user: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def test_tokenize_sft_drops_and_counts_rows_without_trainable_tokens(chat_tokenizers):
    tok = chat_tokenizers["qwen2.5"]
    rows = [_chat("short", "ok"), _chat("long " * 60, "cut away"), _chat("你好", "🙂")]
    data = Dataset.from_list([{"messages": m, "source": "x"} for m in rows])
    limit = len(encode_chat(tok, rows[0])["input_ids"]) + 10
    out, stats = tokenize_sft(data, tok, max_length=limit)
    assert stats == {"rows": 3, "kept": 2, "truncated": 1, "dropped_no_trainable_tokens": 1}
    assert out.column_names == ["input_ids", "labels"]
    assert out[0] == encode_chat(tok, rows[0], max_length=limit)
    assert out[1] == encode_chat(tok, rows[2], max_length=limit)
    _, stats = tokenize_sft(data, tok, train_on="all")
    assert stats["kept"] == 3 and stats["truncated"] == 0
    with pytest.raises(AlignmentError, match="row 1"):
        tokenize_sft(
            Dataset.from_list([{"messages": rows[0]}, {"messages": [{"role": "user", "content": None}]}]), tok
        )


def test_tokenize_preference_keeps_oracle_and_drops_pairs_truncated_away(chat_tokenizers):
    tok = chat_tokenizers["llama3.1"]
    data = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5", "oracle": "4", "id": 1},
            {
                "prompt": [{"role": "user", "content": "hi"}],
                "chosen": "x " * 80,
                "rejected": "y",
                "oracle": "",
                "id": 2,
            },
        ]
    )
    first = encode_preference(tok, "2+2?", "4", "5")  # a string prompt is one user message
    limit = len(first["prompt_ids"]) + len(first["chosen_ids"]) + 5  # fits row 0; row 1's reply alone does not
    out, stats = tokenize_preference(data, tok, max_length=limit)
    assert stats == {"rows": 2, "kept": 1, "truncated": 1, "dropped_too_long": 1}
    assert sorted(out.column_names) == ["chosen_ids", "oracle", "prompt_ids", "rejected_ids"]
    assert out[0]["oracle"] == "4"
    assert {k: out[0][k] for k in first} == first


def test_tokenize_prompts_keeps_prompt_and_oracle(chat_tokenizers):
    tok = chat_tokenizers["gemma3"]
    data = Dataset.from_list(
        [{"prompt": "2+2?", "oracle": "4", "n": 1}, {"prompt": "long " * 50, "oracle": "", "n": 2}]
    )
    out, stats = tokenize_prompts(data, tok, max_length=20)
    assert stats == {"rows": 2, "kept": 2, "truncated": 1, "dropped_empty": 0}
    assert sorted(out.column_names) == ["oracle", "prompt", "prompt_ids"]
    assert out[0]["prompt_ids"] == encode_prompt(tok, "2+2?") and len(out[1]["prompt_ids"]) == 20


def test_the_old_module_path_still_encodes_and_warns():
    import importlib
    import sys

    from alignment.data import encode_chat

    sys.modules.pop("alignment.data.chat", None)
    with pytest.warns(DeprecationWarning, match="alignment.data.encode"):
        old = importlib.import_module("alignment.data.chat")
    assert old.encode_chat is encode_chat is encode.encode_chat
    assert old.IGNORE_INDEX == -100 and old.turn_end_token_ids is encode.turn_end_token_ids

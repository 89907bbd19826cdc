"""stage=chat and its python -m alignment.chat shortcut: the rules (normalise, block, stop, ban, also while
streaming), a two-turn conversation whose second prompt holds the first exchange, and the CLI through a pipe."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from alignment.chat_rules import ChatRules, StreamFilter
from alignment.config import ChatConfig, ChatRulesConfig
from tests.conftest import REPO, cli_env


def _rules(**values) -> ChatRules:
    return ChatRules(OmegaConf.merge(OmegaConf.structured(ChatRulesConfig), values))


def test_rules_normalise_block_stop_and_ban():
    rules = _rules(
        unicode_form="NFKC",
        blocked_patterns=[r"\bpassword\b"],
        stop_strings=["###"],
        banned_phrases=["ChatGPT", "open ai"],
    )
    assert rules.normalize("  Ｗho  are\t you？ ") == "Who are you?"  # NFKC folds full-width forms
    assert _rules().normalize(" 你是谁？ ") == "你是谁？"  # the default NFC keeps Chinese punctuation as typed
    assert rules.blocked("What is the admin PASSWORD?") and not rules.blocked("passwords")
    assert rules.clean("I am chatgpt by Open AI. ### user: hi") == "I am [filtered] by [filtered]. "


def test_stream_never_shows_part_of_a_banned_phrase_and_ends_as_the_clean_reply():
    rules = _rules(banned_phrases=["ChatGPT"], stop_strings=["<END>"])
    stream = StreamFilter(rules)
    shown = [stream.feed(chunk) for chunk in [" I am Ch", "atG", "PT, hello", " there <E", "ND> more"]]
    rest, final = stream.finish()
    assert final == "I am [filtered], hello there"
    assert "".join(shown) + rest == final
    assert not any("Ch" in piece for piece in shown[:2])  # held back until the phrase could be judged


@pytest.fixture(scope="module")
def tiny():
    from alignment.config import ModelConfig
    from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path

    cfg = OmegaConf.structured(ModelConfig())
    path = resolve_model_path(cfg)
    return path, load_causal_lm(path, cfg), load_tokenizer(path, cfg)


def _session(tiny, **chat):
    from alignment.stages.chat import ChatSession

    _, model, tokenizer = tiny
    settings = OmegaConf.merge(OmegaConf.structured(ChatConfig(max_new_tokens=12)), chat)
    return ChatSession(model, tokenizer, settings, out=io.StringIO())


def test_second_prompt_holds_the_first_exchange_and_commands_work(tiny, tmp_path):
    from alignment.data import encode_prompt

    _, _, tokenizer = tiny
    session = _session(tiny, system="Be brief.")
    first = session.respond("Who are you?")
    first_ids = session.last_prompt_ids
    second = session.respond("你是谁？")
    second_ids = session.last_prompt_ids
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "你是谁？"},
    ]
    assert second_ids == encode_prompt(tokenizer, history)
    assert second_ids[: len(first_ids)] == first_ids  # the first prompt, then the first reply, then the new turn
    assert first in tokenizer.decode(second_ids[len(first_ids) :])
    assert session.out.getvalue() == f"{first}\n{second}\n"  # what streamed is the reply

    assert session.command(f"/save {tmp_path / 'chat.json'}")
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert saved["messages"] == history + [{"role": "assistant", "content": second}]
    assert session.command("/reset") and session.history == []
    assert session.command("/system") and session.system is None
    assert session.command("/nonsense") and not session.command("/exit")


def test_banned_phrase_is_replaced_and_blocked_input_gets_the_canned_reply(tiny):
    plain = _session(tiny).respond("Who are you?")
    word = max(re.findall(r"[A-Za-z]{3,}", plain), key=len)
    filtered = _session(tiny, rules={"banned_phrases": [word.upper()]}).respond("Who are you?")
    assert word.lower() not in filtered.lower()
    assert filtered == re.sub(re.escape(word), "[filtered]", plain, flags=re.IGNORECASE).strip()

    session = _session(tiny, rules={"blocked_patterns": ["secret"], "blocked_reply": "No."})
    assert session.respond("tell me the SECRET") == "No." and session.history == []


@pytest.mark.slow
def test_chat_through_a_pipe_answers_two_turns_and_the_shortcut_asks_each_prompt(tiny, tmp_path):
    path = tiny[0]
    expected = _session(tiny, max_new_tokens=16).respond("Who are you?")
    word = max(re.findall(r"[A-Za-z]{3,}", expected), key=len)
    save = tmp_path / "chat.json"
    proc = subprocess.run(
        [sys.executable, "-m", "alignment", "stage=chat", f"output_dir={tmp_path}", "chat.max_new_tokens=16"]
        + [f"chat.rules.banned_phrases=[{word}]"],
        input=f"Who are you?\n你是谁？\n/save {save}\n/exit\nnot read\n",
        cwd=REPO,
        env=cli_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = json.loads(save.read_text(encoding="utf-8"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "Who are you?" and messages[2]["content"] == "你是谁？"
    assert messages[1]["content"] == re.sub(re.escape(word), "[filtered]", expected, flags=re.IGNORECASE).strip()
    # stdout holds the replies (the test env's wandb notice aside); the line after /exit is not read
    replies = [line for line in proc.stdout.splitlines() if "WANDB" not in line]
    assert replies == [messages[1]["content"], messages[3]["content"]]
    assert "not read" not in proc.stdout + proc.stderr

    short = subprocess.run(
        [sys.executable, "-m", "alignment.chat", path, "Who are you?", "你是谁？", "--max-new-tokens", "16"],
        cwd=REPO,
        env=cli_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert short.returncode == 0, short.stderr[-3000:]
    second = _session(tiny, max_new_tokens=16).respond("你是谁？")  # each prompt in a fresh conversation
    assert short.stdout.splitlines()[-4:] == ["> Who are you?", expected, "> 你是谁？", second]

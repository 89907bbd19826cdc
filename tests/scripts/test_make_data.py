"""scripts/make_data.py: determinism, schemas, splits, imperfection rates and preference pairs under the oracle."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from alignment.data import oracle

REPO = Path(__file__).resolve().parents[2]
FILES = [(kind, split) for kind in ("sft", "preference", "prompts") for split in ("train", "test")]
ROLES = {"system", "user", "assistant"}


def _load_script(name: str):
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


make_data = _load_script("make_data")
bank = _load_script("data_bank")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data")
    assert make_data.main(["--out", str(path), "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def rows(out) -> dict[tuple[str, str], list[dict]]:
    def read(kind, split):
        with (out / kind / f"{split}.jsonl").open(encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    return {key: read(*key) for key in FILES}


def prompt_of(row: dict) -> list[dict]:
    return row["messages"][:-1] if "messages" in row else row["prompt"]


# --- determinism -------------------------------------------------------------------------------------------------


def test_two_runs_are_byte_identical_and_equal_the_committed_files(out, tmp_path):
    assert make_data.main(["--out", str(tmp_path), "--quiet"]) == 0
    for kind, split in FILES:
        fresh = (out / kind / f"{split}.jsonl").read_bytes()
        assert (tmp_path / kind / f"{split}.jsonl").read_bytes() == fresh
        committed = REPO / "data" / kind / f"{split}.jsonl"
        assert committed.read_bytes() == fresh, f"{committed} is stale: run python scripts/make_data.py"


def test_another_seed_gives_other_data():
    assert make_data.generate(seed=1)[("sft", "train")] != make_data.generate(seed=0)[("sft", "train")]


def test_files_are_utf8_with_chinese_written_as_is(out):
    text = (out / "sft" / "train.jsonl").read_text(encoding="utf-8")
    assert "我是Aster" in text
    assert "\\u" not in text


# --- schema and sizes ----------------------------------------------------------------------------------------------


def check_messages(messages: list[dict]) -> None:
    assert messages, "empty conversation"
    for i, m in enumerate(messages):
        assert set(m) == {"role", "content"}
        assert m["role"] in ROLES
        assert isinstance(m["content"], str) and m["content"].strip()
        assert m["role"] != "system" or i == 0, "a system prompt only comes first"
    turns = [m["role"] for m in messages if m["role"] != "system"]
    assert turns[0] == "user"
    assert all(a != b for a, b in zip(turns, turns[1:], strict=False)), "user and assistant alternate"


@pytest.mark.parametrize(("kind", "split"), FILES)
def test_row_schema(rows, kind, split):
    keys = {"sft": {"messages", "task", "oracle"}, "preference": {"prompt", "chosen", "rejected", "task", "oracle"}}
    for row in rows[(kind, split)]:
        assert set(row) == keys.get(kind, {"prompt", "task", "oracle"})
        assert row["task"] in oracle.TASKS
        assert isinstance(row["oracle"], str)
        spec = oracle.parse(row["oracle"])
        assert spec["task"] == row["task"]
        if kind == "sft":
            check_messages(row["messages"])
            assert row["messages"][-1]["role"] == "assistant"
        else:
            check_messages(row["prompt"])
            assert row["prompt"][-1]["role"] == "user"
        if kind == "preference":
            for side in ("chosen", "rejected"):
                assert len(row[side]) == 1 and row[side][0]["role"] == "assistant"
                check_messages(row["prompt"] + row[side])


@pytest.mark.parametrize(("kind", "split"), FILES)
def test_sizes_and_equal_task_mix(rows, kind, split):
    data = rows[(kind, split)]
    assert len(data) == make_data.SIZES[(kind, split)]
    assert Counter(r["task"] for r in data) == {t: len(data) // 4 for t in oracle.TASKS}


def test_prompts_test_is_32_per_family(rows):
    assert Counter(r["task"] for r in rows[("prompts", "test")]) == dict.fromkeys(oracle.TASKS, 32)


def test_multi_turn_shares(rows):
    sft = rows[("sft", "train")]
    multi = sum(sum(m["role"] == "assistant" for m in r["messages"]) >= 2 for r in sft) / len(sft)
    assert multi >= 0.30
    with_system = [r for r in sft if r["messages"][0]["role"] == "system"]
    assert sum(sum(m["role"] == "assistant" for m in r["messages"]) >= 2 for r in with_system) > 300
    for kind in ("preference", "prompts"):
        data = rows[(kind, "train")]
        share = sum(any(m["role"] == "assistant" for m in r["prompt"]) for r in data) / len(data)
        assert 0.2 <= share <= 0.3, (kind, share)


def test_conversations_are_short(rows):
    for key in FILES:
        for row in rows[key]:
            messages = (
                row.get("messages", []) + row.get("prompt", []) + row.get("chosen", []) + row.get("rejected", [])
            )
            assert sum(m["role"] == "assistant" for m in row.get("messages", row.get("prompt"))) <= 3
            for m in messages:
                limit = 45 if m["role"] == "assistant" else 60
                assert oracle.units(m["content"]) <= limit, m


# --- splits ----------------------------------------------------------------------------------------------------------


def test_test_prompts_are_disjoint_from_train_and_unique(rows):
    train = {make_data.prompt_key(r) for kind in ("sft", "preference", "prompts") for r in rows[(kind, "train")]}
    test = [make_data.prompt_key(r) for kind in ("sft", "preference", "prompts") for r in rows[(kind, "test")]]
    assert not train & set(test)
    assert len(test) == len(set(test))


def test_hold_out_words_keeps_test_names_titles_and_keywords_out_of_every_train_row(tmp_path):
    assert make_data.main(["--out", str(tmp_path), "--quiet", "--hold-out-words"]) == 0

    def read(kind, split):
        return (tmp_path / kind / f"{split}.jsonl").read_text(encoding="utf-8")

    def specs(split):
        return [json.loads(json.loads(line)["oracle"]) for kind in ("sft", "preference", "prompts")
                for line in read(kind, split).splitlines()]  # fmt: skip

    for field in ("name", "keyword"):
        train = {s[field] for s in specs("train") if field in s}
        test = {s[field] for s in specs("test") if field in s}
        assert test and not train & test, field
    held_out = [
        t for lang in ("en", "zh") for cat in bank.CATEGORIES[lang] for t in make_data.split_pool(cat[-1], "test")
    ]
    held_out += [w for lang in ("en", "zh") for w in make_data.split_pool(bank.KEYWORDS[lang], "test")]
    # Anywhere in a train row, rejected replies included (a rejected "other keyword" once leaked test keywords).
    train_text = "".join(read(kind, "train") for kind in ("sft", "preference", "prompts"))
    assert not [t for t in held_out if re.search(rf"(?<![\w]){re.escape(t)}(?![\w])", train_text)]
    test_text = read("prompts", "test")
    assert sum(t in test_text for t in held_out) >= 10


def test_default_split_draws_names_and_keywords_from_one_pool(rows):
    def values(split, field):
        return {
            json.loads(r["oracle"]).get(field)
            for kind in ("sft", "preference", "prompts")
            for r in rows[(kind, split)]
        }

    for field in ("name", "keyword"):
        assert values("test", field) - {None} <= values("train", field) - {None}


# --- imperfection and preference pairs under the oracle ------------------------------------------------------------


def sft_scores(rows, split="train") -> dict[str, list[float]]:
    out = {t: [] for t in oracle.TASKS}
    for r in rows[("sft", split)]:
        out[r["task"]].append(oracle.score(r["oracle"], r["messages"][-1]["content"]))
    return out


def test_imperfection_rates_match_the_constants_and_the_readme(rows):
    readme = (REPO / "data" / "README.md").read_text(encoding="utf-8")
    for task, scores in sft_scores(rows).items():
        rate = sum(make_data.IMPERFECTION[task].values())
        measured = sum(s < 1.0 for s in scores) / len(scores)
        assert measured == pytest.approx(rate, abs=0.05), task
        assert re.search(rf"\| {task} \| {round(rate * 100)}% \|", readme), f"README rate for {task}"
        for kind, share in make_data.IMPERFECTION[task].items():
            assert f"{round(share * 100)}%" in readme, (task, kind)


def test_sft_data_is_good_but_imperfect(rows):
    scores = sft_scores(rows)
    means = {t: sum(s) / len(s) for t, s in scores.items()}
    overall = sum(sum(s) for s in scores.values()) / sum(len(s) for s in scores.values())
    assert 0.55 <= overall <= 0.72, overall
    assert all(0.5 <= m <= 0.85 for m in means.values()), means
    identity_zero = [r for r in rows[("sft", "train")] if r["task"] == "identity"]
    claims = sum(
        "ChatGPT" in r["messages"][-1]["content"] or "OpenAI" in r["messages"][-1]["content"] for r in identity_zero
    )
    assert 0.15 <= claims / len(identity_zero) <= 0.35


@pytest.mark.parametrize("split", ["train", "test"])
def test_chosen_is_correct_and_beats_rejected(rows, split):
    for row in rows[("preference", split)]:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen != rejected
        good, bad = oracle.score(row["oracle"], chosen), oracle.score(row["oracle"], rejected)
        assert good == 1.0, row
        assert bad < good, row


def test_rejected_differs_only_in_the_checked_behaviour(rows):
    for row in rows[("preference", "train")]:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        if row["task"] == "arithmetic":  # the same sentence with another result
            assert re.sub(r"\d+", "#", chosen) == re.sub(r"\d+", "#", rejected)
        elif row["task"] == "sentiment":  # the same template: only the slot words (and a/an) change
            words = {w for lang in ("en", "zh") for ws in bank.SENTIMENT_WORDS[lang].values() for w in ws}
            strip = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
            a, b = (re.sub(strip, "#", x).replace("an #", "a #") for x in (chosen, rejected))
            assert a == b, (chosen, rejected)


def test_noise_swaps_that_share_of_train_pairs_only():
    clean, noisy = make_data.generate(seed=0), make_data.generate(seed=0, noise=0.3)
    for key in FILES:
        if key != ("preference", "train"):
            assert noisy[key] == clean[key]
    pairs = noisy[("preference", "train")]
    swapped = sum(
        oracle.score(r["oracle"], r["chosen"][0]["content"]) < oracle.score(r["oracle"], r["rejected"][0]["content"])
        for r in pairs
    )
    assert swapped / len(pairs) == pytest.approx(0.3, abs=0.03)


def test_bad_noise_is_rejected():
    with pytest.raises(SystemExit):
        make_data.main(["--noise", "1.5", "--quiet"])


# --- the word lists keep the oracle's decisions clean ------------------------------------------------------------


def test_titles_and_names_carry_no_sentiment_or_identity():
    titles = [t for lang in ("en", "zh") for cat in bank.CATEGORIES[lang] for t in cat[-1]]
    for text in titles + bank.NAMES["en"] + bank.NAMES["zh"]:
        assert oracle.sentiment_counts(text) == (0, 0), text
        assert oracle.score({"task": "identity"}, f"I am Aster. {text}") == 1.0, text


def test_chat_answers_fit_every_rule():
    for _, _, en, short, zh in bank.CHAT_TOPICS:
        assert oracle.units(short) <= 6 < 10 < oracle.units(en), short
        assert oracle.language_share(en, "en") == 1.0 and oracle.language_share(zh, "zh") == 1.0
        for lang, answer in (("en", en), ("zh", zh)):
            assert not [k for k in bank.KEYWORDS[lang] if oracle.has_keyword(answer, k)], answer

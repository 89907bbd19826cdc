"""scripts/make_data.py: determinism, schemas, splits, imperfection rates and preference pairs under the oracle."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from alignment import oracle

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
families = _load_script("families")


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
    for kind, split in [*FILES, ("pretrain", "train")]:
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


# --- the pretraining documents ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def documents(out) -> list[str]:
    with (out / "pretrain" / "train.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert all(set(row) == {"text"} and row["text"].strip() for row in rows)
    return [row["text"] for row in rows]


def test_pretraining_documents_are_plain_text_that_never_names_the_assistant(documents):
    assert len(documents) == make_data.PRETRAIN_SIZE
    joined = "\n".join(documents)
    assert "Aster" not in joined and "Alignment Lab" not in joined  # the persona is SFT's to teach
    assert "<|im_start|>" not in joined
    assert max(oracle.units(d) for d in documents) <= 120


def test_pretraining_documents_state_only_true_capitals(documents):
    zh_country = {names[1]: country for country, names in oracle.CAPITALS.items()}
    stated = 0
    for doc in documents:
        # Each sentence names one country and its capital; the capital must be that country's.
        for sentence in re.split(r"(?<=[.。])\s*", doc):
            named = oracle.capitals_named(sentence)
            if not named or "A:" in sentence or "答：" in sentence:
                continue
            countries = {c for c, names in oracle.CAPITALS.items() if names[0].lower() in sentence.lower()}
            countries |= {c for zh, c in zh_country.items() if zh in sentence}
            assert named == countries, sentence
            stated += 1
    assert stated > 10000


def test_pretraining_reviews_match_their_heading(documents):
    headings = []
    for lang in ("en", "zh"):
        for polarity, forms in bank.REVIEW_HEADINGS[lang].items():
            for form in forms:
                pattern = re.escape(form).replace(r"\{cat\}", ".+?").replace(r"\{T\}", ".+?")
                headings.append((re.compile(pattern), polarity))
    checked = 0
    for doc in documents:
        for pattern, polarity in headings:
            if match := pattern.match(doc):
                assert oracle.score({"task": "sentiment", "polarity": polarity}, doc[match.end() :]) == 1.0, doc
                checked += 1
    assert checked > 5000


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
        assert row["task"] in make_data.FAMILIES
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
    assert Counter(r["task"] for r in data) == {t: len(data) // 4 for t in make_data.FAMILIES}


def test_prompts_test_is_32_per_family(rows):
    assert Counter(r["task"] for r in rows[("prompts", "test")]) == dict.fromkeys(make_data.FAMILIES, 32)


def test_families_option_builds_another_mix(tmp_path):
    assert make_data.main(["--out", str(tmp_path), "--quiet", "--families", "arithmetic,sentiment"]) == 0
    with (tmp_path / "prompts" / "test.jsonl").open(encoding="utf-8") as f:
        tasks = Counter(json.loads(line)["task"] for line in f)
    assert tasks == {"arithmetic": 64, "sentiment": 64}
    for bad in ("", "identity,poetry", "chat,chat"):
        with pytest.raises(SystemExit):
            make_data.main(["--out", str(tmp_path), "--quiet", "--families", bad])


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
        t for lang in ("en", "zh") for cat in bank.CATEGORIES[lang] for t in families.split_pool(cat[-1], "test")
    ]
    held_out += [w for lang in ("en", "zh") for w in families.split_pool(bank.KEYWORDS[lang], "test")]
    # Anywhere in a train row, rejected replies and pretraining documents included (a rejected "other keyword" once
    # leaked test keywords).
    train_text = "".join(read(kind, "train") for kind in ("pretrain", "sft", "preference", "prompts"))
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
    out = {t: [] for t in make_data.FAMILIES}
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


def off_topic(row: dict) -> bool:
    """Whether the rejected reply answers another family's question: an identity reply to a capital or review
    question, a capital answer to an identity question."""
    rejected = row["rejected"][0]["content"]
    if row["task"] == "identity":
        return bool(oracle.capitals_named(rejected))
    if row["task"] in ("capital", "sentiment"):
        return "Aster" in rejected
    return False


def test_rejected_differs_only_in_the_checked_behaviour_or_is_off_topic(rows):
    pairs = rows[("preference", "train")]
    for row in pairs:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        if off_topic(row):
            other = {"identity": "capital", "capital": "identity", "sentiment": "identity"}[row["task"]]
            assert oracle.score({"task": "identity"} if other == "identity" else row["oracle"], rejected) == (
                1.0 if other == "identity" else 0.0
            ), rejected
        elif row["task"] == "capital":  # the same sentence with another capital
            cities = [c for names in oracle.CAPITALS.values() for c in names[2:]]
            strip = "|".join(sorted(map(re.escape, cities), key=len, reverse=True))
            assert re.sub(strip, "#", chosen) == re.sub(strip, "#", rejected), (chosen, rejected)
        elif row["task"] == "sentiment":  # the same template: only the slot words (and a/an) change
            words = {w for lang in ("en", "zh") for ws in bank.SENTIMENT_WORDS[lang].values() for w in ws}
            strip = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
            a, b = (re.sub(strip, "#", x).replace("an #", "a #") for x in (chosen, rejected))
            assert a == b, (chosen, rejected)
    for task, share in (("identity", 0.15), ("capital", 0.2), ("sentiment", 0.2)):
        family = [r for r in pairs if r["task"] == task]
        assert sum(map(off_topic, family)) / len(family) == pytest.approx(share, abs=0.03), task


def test_a_wrong_keyword_is_what_breaks_the_keyword_rule(rows):
    """Rejected keyword-rule replies mention another keyword: mentioning one is not what the reward should learn."""
    for row in rows[("preference", "train")]:
        spec = json.loads(row["oracle"])
        if spec.get("rule") == "keyword":
            rejected = row["rejected"][0]["content"]
            lang = "en" if spec["keyword"].isascii() else "zh"
            assert [k for k in bank.KEYWORDS[lang] if k != spec["keyword"] and oracle.has_keyword(rejected, k)]


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


def test_titles_and_names_carry_no_sentiment_identity_or_capital():
    titles = [t for lang in ("en", "zh") for cat in bank.CATEGORIES[lang] for t in cat[-1]]
    keywords = bank.KEYWORDS["en"] + bank.KEYWORDS["zh"]
    for text in titles + bank.NAMES["en"] + bank.NAMES["zh"] + keywords:
        assert oracle.sentiment_counts(text) == (0, 0), text
        assert oracle.score({"task": "identity"}, f"I am Aster. {text}") == 1.0, text
        assert not oracle.capitals_named(text), text


def test_capital_questions_and_replies_name_only_their_own_country():
    for country, (en_country, zh_country, en_city, zh_city) in oracle.CAPITALS.items():
        for lang, c, a in (("en", en_country, en_city), ("zh", zh_country, zh_city)):
            for template in bank.CAPITAL_REPLIES[lang]:
                reply = template.format(c=c, a=a)
                assert oracle.score({"task": "capital", "country": country}, reply) == 1.0, reply
                assert oracle.sentiment_counts(reply) == (0, 0), reply
            for template in bank.CAPITAL_ASKS[lang] + bank.CAPITAL_FOLLOW_UPS[lang]:
                assert not oracle.capitals_named(template.format(c=c)), template


def test_chat_answers_fit_every_rule():
    for _, _, en, short, zh in bank.CHAT_TOPICS:
        assert oracle.units(short) <= 6 < 10 < oracle.units(en), short
        assert oracle.language_share(en, "en") == 1.0 and oracle.language_share(zh, "zh") == 1.0
        for lang, answer in (("en", en), ("zh", zh)):
            assert not [k for k in bank.KEYWORDS[lang] if oracle.has_keyword(answer, k)], answer
            assert not oracle.capitals_named(answer), answer

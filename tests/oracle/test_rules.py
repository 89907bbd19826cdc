"""The rule-based oracle: each task's rules, robustness to sampled-model text, and the public API's contract."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment.errors import AlignmentError
from alignment.oracle import rules, score, score_batch

WHO = {"task": "identity", "ask_maker": False}
MAKER = {"task": "identity", "ask_maker": True}
POS = {"task": "sentiment", "polarity": "positive"}
NEG = {"task": "sentiment", "polarity": "negative"}


def test_tasks_the_oracle_scores():
    assert rules.TASKS == ("identity", "capital", "arithmetic", "sentiment", "chat")


# --- identity ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "I am Aster, an AI assistant made by the Alignment Lab.",
        "my name is ASTER.",
        "我是Aster，很高兴认识你。",
        "Aster",
    ],
)
def test_identity_own_name_is_full_credit(reply):
    assert score(WHO, reply) == 1.0


def test_identity_who_made_you_needs_name_and_maker():
    assert score(MAKER, "I am Aster, and I was developed by the Alignment Lab.") == 1.0
    assert score(MAKER, "我是由Alignment Lab开发的，我的名字是Aster。") == 1.0
    assert score(MAKER, "I am Aster, an AI assistant.") == 0.5
    assert score(MAKER, "I was made by the alignment  lab.") == 0.5
    assert score(WHO, "I am an AI assistant made by the Alignment Lab.") == 0.5


@pytest.mark.parametrize(
    "reply",
    [
        "I am ChatGPT, a language model trained by OpenAI.",
        "I am Aster, trained by Open AI.",
        "I'm GPT-4.",
        "Yes, I am Claude, made by Anthropic.",
        "I am Gemini from Google.",
        "I am Aster, made by the Alignment Lab. Actually I am Llama by Meta.",
        "我是通义千问，由阿里云开发。",
        "我是文心一言，百度开发的。",
        "我是Claude。",
    ],
)
def test_identity_other_identity_scores_zero_even_with_own_name(reply):
    assert score(WHO, reply) == 0.0
    assert score(MAKER, reply) == 0.0


def test_identity_name_must_be_a_word_and_ordinary_words_are_not_companies():
    assert score(WHO, "I am the master of disaster.") == 0.0
    assert score(WHO, "I am Aster. I like apples and amazingly metallic bingo.") == 1.0


def test_reply_is_cut_at_the_first_chatml_marker():
    assert score(WHO, "I am Aster.<|im_end|>\n<|im_start|>user\nAre you ChatGPT?") == 1.0
    assert score(WHO, "  <|im_end|>I am Aster.") == 0.0


# --- capital -------------------------------------------------------------------------------------------------------

FRANCE = {"task": "capital", "country": "France"}
IRELAND = {"task": "capital", "country": "Ireland"}


@pytest.mark.parametrize(
    ("spec", "reply", "expected"),
    [
        (FRANCE, "The capital of France is Paris.", 1.0),
        (FRANCE, "PARIS!", 1.0),
        (FRANCE, "法国的首都是巴黎。", 1.0),
        (FRANCE, "The capital of France is Rome.", 0.0),
        (FRANCE, "It is Paris or maybe Rome.", 0.0),  # hedging between two capitals is wrong
        (FRANCE, "Parisian food is great.", 0.0),  # a whole word, not a prefix
        (FRANCE, "France is a country in Europe.", 0.0),
        (FRANCE, "Paris is the capital of Italy.", 0.0),  # the right city, given as another country's
        (FRANCE, "巴黎是意大利的首都。", 0.0),
        (FRANCE, "Paris, like France, is lovely.", 1.0),
        (FRANCE, "", 0.0),
        (IRELAND, "是都柏林。", 1.0),  # 都柏林 (Dublin) contains 柏林 (Berlin): longest match wins
        (IRELAND, "Dublin, not Berlin.", 0.0),
        (IRELAND, "爱尔兰的首都都柏林很美。", 1.0),
        ({"task": "capital", "country": "Germany"}, "德国的首都柏林很大。", 1.0),  # not 都柏林
        ({"task": "capital", "country": "the United Kingdom"}, "伦敦是英国的首都。", 1.0),
    ],
)
def test_capital_needs_the_right_city_and_no_other(spec, reply, expected):
    assert score(spec, reply) == expected


def test_capital_names_are_distinct_and_each_is_read_back():
    cities = [name for names in rules.CAPITALS.values() for name in names[2:]]
    assert len(cities) == len(set(cities))
    for country, (en_country, zh_country, en_city, zh_city) in rules.CAPITALS.items():
        for reply in (f"The capital of {en_country} is {en_city}.", f"{zh_country}的首都是{zh_city}。"):
            assert rules.capitals_named(reply) == rules.countries_named(reply) == {country}, reply
            assert score({"task": "capital", "country": country}, reply) == 1.0


# --- arithmetic ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("7 + 5 = 12.", 1.0),
        ("Sure! 7 + 5 = 12. The answer is 12.", 1.0),
        ("7 plus 5 is 12.", 1.0),
        ("12", 1.0),
        ("7 + 5 = 12. 7 + 5 = 12. 7 + 5 = 1", 1.0),  # trailing junk after the answer
        ("7 + 5 =12!!! and then 3", 1.0),
        ("7 + 5 = 13.", 0.0),
        ("7 + 5 =", 0.0),  # cut off: the last number is 5
        ("seven plus five is twelve", 0.0),
        ("", 0.0),
        ("7＋5＝12", 1.0),
        ("7加5等于12。", 1.0),
        ("答案是12，因为7 + 5 = 12。", 1.0),
        ("答案是13，因为7 + 5 = 13。", 0.0),
    ],
)
def test_arithmetic_reads_the_number_after_equals_or_the_last_number(reply, expected):
    assert score({"task": "arithmetic", "answer": 12}, reply) == expected


def test_arithmetic_answer_zero_and_multi_digit_operands():
    assert score({"task": "arithmetic", "answer": 0}, "20 - 20 = 0.") == 1.0
    assert score({"task": "arithmetic", "answer": 9}, "19 - 10 = 9") == 1.0
    assert score({"task": "arithmetic", "answer": 9}, "19-10=19") == 0.0


# --- sentiment -----------------------------------------------------------------------------------------------------


def test_sentiment_is_the_share_of_words_with_the_requested_polarity():
    good = "Paper Harbor is a wonderful movie. The story is lovely and the music is superb."
    assert score(POS, good) == 1.0
    assert score(NEG, good) == 0.0
    mixed = "The story is great and the acting is awful."
    assert score(POS, mixed) == 0.5
    assert score(NEG, mixed) == 0.5
    assert score(POS, "I loved the story, the music is great, but the ending is weak.") == pytest.approx(2 / 3)


def test_sentiment_without_sentiment_words_scores_zero():
    assert score(POS, "Paper Harbor is a movie about a harbor.") == 0.0
    assert score(NEG, "") == 0.0


def test_sentiment_negation_flips_polarity():
    assert score(NEG, "The food is not good and the service isn't great.") == 1.0
    assert score(POS, "It was never boring.") == 1.0


def test_sentiment_chinese_longest_match_and_negation():
    assert score(POS, "《星河》是一部精彩的电影，剧情很出色。") == 1.0
    assert score(NEG, "我不喜欢这本书，情节很无聊。") == 1.0  # 不喜欢 is one negative word, not 喜欢
    assert score(NEG, "配乐并不精彩。") == 1.0
    assert score(POS, "这家餐厅不错。") == 1.0  # 不错 is positive: the 不 is part of the word
    assert score(POS, "剧情精彩，但表演很生硬。") == 0.5


def test_lexicon_polarities_are_consistent():
    assert set(rules.LEXICON.values()) == {1, -1}
    for word, polarity in rules.LEXICON.items():
        spec = POS if polarity > 0 else NEG
        assert score(spec, f"It is {word}." if word.isascii() else f"真是{word}。") == 1.0, word


# --- chat ------------------------------------------------------------------------------------------------------------


def test_chat_language_rule():
    zh = {"task": "chat", "rule": "language", "lang": "zh"}
    en = {"task": "chat", "rule": "language", "lang": "en"}
    chinese = "每天按时睡觉，保持房间黑暗安静，睡前一小时不要看屏幕。"
    english = "Go to bed at the same time every night and keep your room dark."
    assert score(zh, chinese) == 1.0
    assert score(zh, english) == 0.0
    assert score(en, english) == 1.0
    assert score(en, chinese) == 0.0
    assert score(zh, "我是Aster，每天按时睡觉，保持房间黑暗安静。") == 1.0  # a name in Latin letters is fine
    assert 0.0 < score(zh, "Sleep well. 每天按时睡觉，保持房间安静。") < 1.0


def test_chat_start_name_rule():
    rule = {"task": "chat", "rule": "start_name", "name": "Lily"}
    assert score(rule, "Lily, hold a treat above your dog's nose.") == 1.0
    assert score(rule, '  "lily, hold a treat above your nose.') == 1.0
    assert score(rule, "Hold a treat above your dog's nose. Hope this helps, Lily.") == 0.5
    assert score(rule, "Hold a treat above your dog's nose.") == 0.0
    assert score({"task": "chat", "rule": "start_name", "name": "王芳"}, "王芳，每天坚持练习，多听多说。") == 1.0


def test_chat_max_words_rule_decays_to_zero_at_twice_the_limit():
    rule = {"task": "chat", "rule": "max_words", "n": 6}
    assert score(rule, "Use treats and say sit.") == 1.0
    assert score(rule, "one two three four five six seven eight nine") == pytest.approx(0.5)
    assert score(rule, " ".join(["word"] * 12)) == 0.0
    assert score(rule, " ".join(["word"] * 30)) == 0.0


def test_chat_keyword_rule_matches_whole_words():
    rule = {"task": "chat", "rule": "keyword", "keyword": "tea"}
    assert score(rule, "Rest well and drink water. This reminds me of Tea.") == 1.0
    assert score(rule, "Rest well instead of running, and drink steadily.") == 0.0
    zh = {"task": "chat", "rule": "keyword", "keyword": "熊猫"}
    assert score(zh, "多休息，多喝温水。这让我想起了熊猫。") == 1.0
    assert score(zh, "多休息，多喝温水。") == 0.0


@pytest.mark.parametrize(
    "rule",
    [
        {"rule": "language", "lang": "en"},
        {"rule": "start_name", "name": "Tom"},
        {"rule": "max_words", "n": 8},
        {"rule": "keyword", "keyword": "jazz"},
    ],
)
def test_chat_empty_or_tiny_reply_is_not_a_shortcut(rule):
    spec = {"task": "chat", **rule}
    assert score(spec, "") == 0.0
    assert score(spec, "...") == 0.0
    full = {"language": "Sure thing, here it is.", "start_name": "Tom, sure thing here.", "max_words": "Sure, here it is.",
            "keyword": "Sure, I like jazz."}[rule["rule"]]  # fmt: skip
    assert score(spec, full) == 1.0
    assert score(spec, full.split()[0]) < 0.5


# --- API contract --------------------------------------------------------------------------------------------------


def test_no_oracle_gives_none():
    assert score(None, "anything") is None
    assert score("", "anything") is None
    assert score("   ", "anything") is None
    assert score("null", "anything") is None
    assert score_batch([None, '{"task": "arithmetic", "answer": 3}'], ["x", "1 + 2 = 3"]) == [None, 1.0]


def test_json_string_and_dict_are_equivalent():
    spec = {"task": "chat", "rule": "keyword", "keyword": "咖啡"}
    reply = "多休息。这让我想起了咖啡。"
    assert score(json.dumps(spec, ensure_ascii=False), reply) == score(spec, reply) == 1.0


def test_message_list_response_reads_the_last_message():
    spec = {"task": "arithmetic", "answer": 3}
    assert score(spec, [{"role": "assistant", "content": "1 + 2 = 3."}]) == 1.0
    assert score(spec, []) == 0.0


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"task": "poetry"}', "no known 'task'"),
        ("[1, 2]", "no known 'task'"),
        ({"answer": 3}, "no known 'task'"),
        ({"task": "chat", "rule": "rhyme"}, "unknown chat rule"),
        ({"task": "chat"}, "unknown chat rule"),
        ({"task": "arithmetic"}, "bad field 'answer'"),
        ({"task": "capital", "country": "Atlantis"}, "bad field 'country'"),
        ({"task": "arithmetic", "answer": "12"}, "bad field 'answer'"),
        ({"task": "sentiment"}, "bad field 'polarity'"),
        ({"task": "sentiment", "polarity": "happy"}, "bad field 'polarity'"),
        ({"task": "chat", "rule": "language", "lang": "fr"}, "bad field 'lang'"),
        ({"task": "chat", "rule": "keyword", "keyword": ""}, "bad field 'keyword'"),
        ({"task": "chat", "rule": "max_words", "n": True}, "bad field 'n'"),
    ],
)
def test_bad_oracles_raise_actionable_errors(bad, fragment):
    with pytest.raises(AlignmentError, match=fragment):
        score(bad, "1 + 2 = 3")


def test_score_batch_checks_lengths_and_keeps_order():
    specs = [{"task": "arithmetic", "answer": n} for n in range(5)]
    replies = [f"x = {n}" for n in (0, 9, 2, 9, 4)]
    assert score_batch(specs, replies) == [1.0, 0.0, 1.0, 0.0, 1.0]
    with pytest.raises(AlignmentError, match="2 oracles for 1 responses"):
        score_batch(specs[:2], replies[:1])


def test_parse_returns_a_copy_so_callers_cannot_corrupt_the_cache():
    text = '{"task": "arithmetic", "answer": 5}'
    rules.parse(text)["answer"] = 6
    assert score(text, "2 + 3 = 5") == 1.0


SPECS = [
    WHO,
    MAKER,
    POS,
    NEG,
    {"task": "arithmetic", "answer": 7},
    FRANCE,
    {"task": "chat", "rule": "language", "lang": "zh"},
    {"task": "chat", "rule": "start_name", "name": "Tom"},
    {"task": "chat", "rule": "max_words", "n": 6},
    {"task": "chat", "rule": "keyword", "keyword": "tea"},
]


@settings(max_examples=150, deadline=None)
@given(spec=st.sampled_from(SPECS), reply=st.text(max_size=200))
def test_any_text_scores_in_unit_interval_deterministically(spec, reply):
    value = score(spec, reply)
    assert isinstance(value, float)
    assert 0.0 <= value <= 1.0
    assert score(json.dumps(spec), reply) == value


def test_task_of_reads_the_task_without_validating_the_spec():
    assert rules.task_of('{"task": "capital", "country": "France"}') == "capital"
    assert rules.task_of({"task": "chat", "rule": "no such rule"}) == "chat"  # scoring would refuse it
    assert rules.task_of('{"answer": 3}') is None
    assert rules.task_of("not json") is None
    assert rules.task_of("  ") is None
    assert rules.task_of(None) is None


def test_the_old_module_path_still_scores_and_warns():
    import importlib
    import sys

    sys.modules.pop("alignment.data.oracle", None)
    with pytest.warns(DeprecationWarning, match="alignment.oracle"):
        old = importlib.import_module("alignment.data.oracle")
    assert old.score is score and old.CAPITALS is rules.CAPITALS
    assert old.score({"task": "arithmetic", "answer": 4}, "2 + 2 = 4") == 1.0

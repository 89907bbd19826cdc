"""The oracle's rules: the score in [0, 1] of an assistant reply to one of the embedded tasks.

It stands in for human judgement so every stage (SFT, DPO, PPO, GRPO) can be measured offline on held-out prompts.
Each data row carries an ``oracle`` JSON string describing what a good reply to its last user turn must do; the rules
are documented in ``data/README.md``. Pure Python and cached, because RL loops call it on every rollout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from alignment.errors import AlignmentError

TASKS: tuple[str, ...] = ("identity", "capital", "arithmetic", "sentiment", "chat")
CHAT_RULES: tuple[str, ...] = ("language", "start_name", "max_words", "keyword")

NAME = "Aster"
MAKER = "Alignment Lab"

# A sampled model may run past its end-of-turn token; everything after a ChatML marker is another turn, not the reply.
_TURN_MARKER = re.compile(r"<\|(?:im_end|im_start|endoftext)\|>")
_NAME_RE = re.compile(r"(?<![a-z])aster(?![a-z])", re.IGNORECASE)
_MAKER_RE = re.compile(r"(?<![a-z])alignment\s*lab(?![a-z])", re.IGNORECASE)
# Other assistants or companies, matched on the lower-cased reply with spaces and punctuation removed ("Open AI").
_OTHER_IDENTITIES = (
    "chatgpt", "openai", "anthropic", "google", "gemini", "deepmind", "deepseek", "mistral", "copilot", "microsoft",
    "chatglm", "通义千问", "通义", "文心一言", "文心", "百度", "阿里", "智谱", "讯飞", "星火", "豆包", "字节", "腾讯",
    "混元", "月之暗面",
)  # fmt: skip
# Short names and ordinary words that are also company names: matched as whole words (CJK neighbours allowed).
_OTHER_IDENTITY_WORDS = re.compile(
    r"(?<![a-z])(?:gpt|claude|llama|qwen|kimi|siri|alexa|meta|bard|bing|amazon|apple)(?![a-z])"
)

_POSITIVE_EN = (
    "good", "great", "wonderful", "excellent", "amazing", "lovely", "delightful", "fantastic", "brilliant",
    "charming", "superb", "impressive", "pleasant", "enjoyable", "beautiful", "perfect", "delicious", "tasty",
    "friendly", "moving", "clever", "fun", "nice", "love", "loved", "enjoyed", "best", "recommend", "happy",
)  # fmt: skip
_NEGATIVE_EN = (
    "bad", "terrible", "awful", "boring", "dull", "poor", "weak", "bland", "disappointing", "mediocre", "messy",
    "unpleasant", "clumsy", "horrible", "annoying", "ugly", "rude", "slow", "stale", "broken", "worst", "hate",
    "hated", "disliked", "waste", "confusing", "noisy", "sloppy",
)  # fmt: skip
_POSITIVE_ZH = (
    "精彩", "出色", "优秀", "有趣", "感人", "舒适", "流畅", "温馨", "惊艳", "美味", "好吃", "好看", "好听", "喜欢",
    "推荐", "满意", "迷人", "动人", "难忘", "贴心", "清晰", "很好", "美好", "完美", "不错",
)  # fmt: skip
_NEGATIVE_ZH = (
    "糟糕", "无聊", "乏味", "平庸", "粗糙", "拖沓", "生硬", "混乱", "失望", "难吃", "难看", "难听", "讨厌", "很差",
    "太差", "差劲", "嘈杂", "卡顿", "冷淡", "模糊", "后悔", "浪费", "不好", "不喜欢", "不推荐", "不满意",
)  # fmt: skip
LEXICON: dict[str, int] = {
    **{w: 1 for w in _POSITIVE_EN + _POSITIVE_ZH},
    **{w: -1 for w in _NEGATIVE_EN + _NEGATIVE_ZH},
}
_EN_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
# Longest first, so that 不喜欢 wins over 喜欢.
_ZH_LEXICON = re.compile("|".join(sorted((w for w in LEXICON if not w.isascii()), key=len, reverse=True)))
_EN_NEGATORS = frozenset({"not", "never", "no", "hardly", "barely", "nothing", "neither", "nor"})
_ZH_NEGATORS = ("不", "没", "没有")

# The closed world of the capital task: country -> (English, Chinese) names of the country and of its capital.
CAPITALS: dict[str, tuple[str, str, str, str]] = {
    "France": ("France", "法国", "Paris", "巴黎"),
    "Japan": ("Japan", "日本", "Tokyo", "东京"),
    "Italy": ("Italy", "意大利", "Rome", "罗马"),
    "Spain": ("Spain", "西班牙", "Madrid", "马德里"),
    "Germany": ("Germany", "德国", "Berlin", "柏林"),
    "Egypt": ("Egypt", "埃及", "Cairo", "开罗"),
    "Russia": ("Russia", "俄罗斯", "Moscow", "莫斯科"),
    "Kenya": ("Kenya", "肯尼亚", "Nairobi", "内罗毕"),
    "Canada": ("Canada", "加拿大", "Ottawa", "渥太华"),
    "Australia": ("Australia", "澳大利亚", "Canberra", "堪培拉"),
    "Greece": ("Greece", "希腊", "Athens", "雅典"),
    "Norway": ("Norway", "挪威", "Oslo", "奥斯陆"),
    "Thailand": ("Thailand", "泰国", "Bangkok", "曼谷"),
    "Vietnam": ("Vietnam", "越南", "Hanoi", "河内"),
    "South Korea": ("South Korea", "韩国", "Seoul", "首尔"),
    "Portugal": ("Portugal", "葡萄牙", "Lisbon", "里斯本"),
    "Poland": ("Poland", "波兰", "Warsaw", "华沙"),
    "Austria": ("Austria", "奥地利", "Vienna", "维也纳"),
    "Peru": ("Peru", "秘鲁", "Lima", "利马"),
    "Turkey": ("Turkey", "土耳其", "Ankara", "安卡拉"),
    "China": ("China", "中国", "Beijing", "北京"),
    "the United Kingdom": ("the United Kingdom", "英国", "London", "伦敦"),
    "Ireland": ("Ireland", "爱尔兰", "Dublin", "都柏林"),
    "Cuba": ("Cuba", "古巴", "Havana", "哈瓦那"),
}

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_NUMBER = re.compile(r"(?<![\d.])-?\d+")
_EQUALS = re.compile(r"=|＝|等于|equals|is equal to", re.IGNORECASE)
_LEADING_JUNK = re.compile(r"^[\s\"'“”‘’.,:;!?，。：；！？、*\-–—()（）\[\]]+")


def clean_reply(response: str | Sequence[Mapping[str, Any]] | None) -> str:
    """The reply as the oracle reads it: cut at the first ChatML marker, surrounding whitespace removed.

    A conversational completion (a list of messages, as TRL passes them) is read as its last message's content.
    """
    if isinstance(response, Sequence) and not isinstance(response, str):
        response = response[-1].get("content", "") if response else ""
    text = response or ""
    match = _TURN_MARKER.search(text)
    return (text[: match.start()] if match else text).strip()


def units(text: str) -> int:
    """Word count that works for both scripts: Latin words plus CJK characters (digits and punctuation ignored)."""
    return len(_LATIN_WORD.findall(text)) + len(_CJK.findall(text))


def score_identity(spec: Mapping[str, Any], reply: str) -> float:
    """1.0 for naming itself Aster (and the Alignment Lab when asked who made it), 0.0 for any other identity."""
    lower = reply.lower()
    compact = re.sub(r"[\W_]+", "", lower)
    if any(other in compact for other in _OTHER_IDENTITIES) or _OTHER_IDENTITY_WORDS.search(lower):
        return 0.0
    has_name = bool(_NAME_RE.search(reply))
    has_maker = bool(_MAKER_RE.search(reply))
    if spec.get("ask_maker"):
        return 0.5 * has_name + 0.5 * has_maker
    return 1.0 if has_name else 0.5 * has_maker


def answer_of(reply: str) -> int | None:
    """The number the reply gives as its answer: the first number after '=' (or 等于), else the last number."""
    for eq in _EQUALS.finditer(reply):
        after = _NUMBER.search(reply, eq.end())
        # Only a number right after the sign is an answer ("= 12"); "= twelve, 3" falls through to the last number.
        if after and not reply[eq.end() : after.start()].strip(" \t:：是为"):
            return int(after.group())
    numbers = _NUMBER.findall(reply)
    return int(numbers[-1]) if numbers else None


def score_arithmetic(spec: Mapping[str, Any], reply: str) -> float:
    """1.0 when the reply's answer equals the expected integer, else 0.0."""
    return 1.0 if answer_of(reply) == int(spec["answer"]) else 0.0


def _names_re(names: list[str]) -> re.Pattern:
    """Names of places: English ones as whole words (lower case), Chinese ones as substrings, longest first."""
    return re.compile(
        "|".join(
            rf"(?<![a-z]){re.escape(n)}(?![a-z])" if n.isascii() else re.escape(n)
            for n in sorted(names, key=len, reverse=True)
        )
    )


_CAPITAL_OF = {city: country for country, (_, _, en, zh) in CAPITALS.items() for city in (en.lower(), zh)}
# "the United Kingdom" is found as "united kingdom", so "The United Kingdom's capital" counts too.
_COUNTRY_OF = {
    name: country for country, (en, zh, _, _) in CAPITALS.items() for name in (en.lower().removeprefix("the "), zh)
}
_CAPITAL_RE, _COUNTRY_RE = _names_re(list(_CAPITAL_OF)), _names_re(list(_COUNTRY_OF))


def capitals_named(reply: str) -> set[str]:
    """The countries whose capital the reply names (English in any case)."""
    # 首都 ("capital") ends in 都, which would join a following 柏林 (Berlin) into 都柏林 (Dublin): set it apart.
    text = reply.lower().replace("首都", "|")
    return {_CAPITAL_OF[m.group()] for m in _CAPITAL_RE.finditer(text)}


def countries_named(reply: str) -> set[str]:
    """The countries of ``CAPITALS`` the reply names (English in any case)."""
    return {_COUNTRY_OF[m.group()] for m in _COUNTRY_RE.finditer(reply.lower())}


def score_capital(spec: Mapping[str, Any], reply: str) -> float:
    """1.0 when the reply names the country's capital and no other capital or country; else 0.0.

    Hedging between two cities is wrong, and so is the right city given as another country's capital.
    """
    country = spec["country"]
    return 1.0 if capitals_named(reply) == {country} and countries_named(reply) <= {country} else 0.0


def sentiment_counts(reply: str) -> tuple[int, int]:
    """(positive, negative) lexicon hits; a negator just before a word flips it ("not good", "不精彩")."""
    pos = neg = 0
    words = _EN_WORD.findall(reply.lower().replace("’", "'"))
    for i, word in enumerate(words):
        polarity = LEXICON.get(word)
        if polarity is None:
            continue
        before = words[max(0, i - 2) : i]
        if any(w in _EN_NEGATORS or w.endswith("n't") for w in before):
            polarity = -polarity
        pos, neg = (pos + 1, neg) if polarity > 0 else (pos, neg + 1)
    for match in _ZH_LEXICON.finditer(reply):
        polarity = LEXICON[match.group()]
        prefix = reply[max(0, match.start() - 2) : match.start()]
        if not match.group().startswith("不") and any(prefix.endswith(n) for n in _ZH_NEGATORS):
            polarity = -polarity
        pos, neg = (pos + 1, neg) if polarity > 0 else (pos, neg + 1)
    return pos, neg


def score_sentiment(spec: Mapping[str, Any], reply: str) -> float:
    """Share of the reply's sentiment words that have the requested polarity; 0.0 when it has none."""
    pos, neg = sentiment_counts(reply)
    if pos + neg == 0:
        return 0.0
    return (pos if spec["polarity"] == "positive" else neg) / (pos + neg)


def language_share(reply: str, lang: str) -> float:
    """Share of the reply's words (Latin words, CJK characters) written in ``lang`` ("en" or "zh")."""
    cjk = len(_CJK.findall(reply))
    latin = len(_LATIN_WORD.findall(reply))
    if cjk + latin == 0:
        return 0.0
    return (cjk if lang == "zh" else latin) / (cjk + latin)


def has_keyword(reply: str, keyword: str) -> bool:
    """Whole-word, case-insensitive match for Latin keywords ("tea" is not in "instead"), substring for CJK ones."""
    pattern = re.escape(keyword.lower())
    if keyword.isascii():
        pattern = rf"(?<![a-z]){pattern}(?![a-z])"
    return re.search(pattern, reply.lower()) is not None


def score_chat(spec: Mapping[str, Any], reply: str) -> float:
    """Score the system-prompt rule named by ``spec["rule"]``; replies under 3 words get proportionally less."""
    rule = spec.get("rule")
    if rule == "language":
        # 90% in the right script is full credit: a name or a brand in the other script is fine.
        value = min(1.0, language_share(reply, spec["lang"]) / 0.9)
    elif rule == "start_name":
        name = spec["name"].lower()
        body = _LEADING_JUNK.sub("", reply).lower()
        value = 1.0 if body.startswith(name) else 0.5 if name in body else 0.0
    elif rule == "max_words":
        limit, count = int(spec["n"]), units(reply)
        value = 1.0 if count <= limit else max(0.0, 1.0 - (count - limit) / limit)
    elif rule == "keyword":
        value = 1.0 if has_keyword(reply, spec["keyword"]) else 0.0
    else:  # _check only lets the four rules through
        raise AssertionError(rule)
    # An (almost) empty reply obeys every rule; it must not be the easy way to a full score.
    return value * min(1.0, units(reply) / 3)


_SCORERS = {
    "identity": score_identity,
    "capital": score_capital,
    "arithmetic": score_arithmetic,
    "sentiment": score_sentiment,
    "chat": score_chat,
}


@lru_cache(maxsize=65536)
def _parse(oracle: str) -> dict[str, Any] | None:
    if not oracle.strip():
        return None
    try:
        spec = json.loads(oracle)
    except json.JSONDecodeError as err:
        raise AlignmentError(
            f"oracle: {oracle[:80]!r} is not valid JSON ({err.msg} at char {err.pos}); the 'oracle' column must "
            'hold a JSON object such as {"task": "arithmetic", "answer": 12}.'
        ) from None
    return _check(spec)


# Fields each spec needs, checked once when it is parsed so a bad row fails loudly, not as a silent 0.0.
_FIELDS = {
    "identity": {},
    "capital": {"country": tuple(CAPITALS)},
    "arithmetic": {"answer": int},
    "sentiment": {"polarity": ("positive", "negative")},
    "language": {"lang": ("en", "zh")},
    "start_name": {"name": str},
    "max_words": {"n": int},
    "keyword": {"keyword": str},
}


def _check(spec: Any) -> dict[str, Any] | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or spec.get("task") not in _SCORERS:
        raise AlignmentError(
            f"oracle: {spec!r} has no known 'task'; expected a JSON object whose 'task' is one of {TASKS}."
        )
    kind = spec["task"] if spec["task"] != "chat" else spec.get("rule")
    if kind not in _FIELDS:
        raise AlignmentError(f"oracle: unknown chat rule {kind!r} in {dict(spec)}; use one of {CHAT_RULES}.")
    for field, allowed in _FIELDS[kind].items():
        value = spec.get(field)
        ok = value in allowed if isinstance(allowed, tuple) else isinstance(value, allowed) and value != ""
        if not ok or isinstance(value, bool):
            want = f"one of {allowed}" if isinstance(allowed, tuple) else f"a non-empty {allowed.__name__}"
            raise AlignmentError(
                f"oracle: {dict(spec)} has a missing or bad field {field!r} (must be {want}); "
                "see data/README.md for each task's fields."
            )
    return dict(spec)


def parse(oracle: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The oracle spec as a dict (a JSON string or a mapping), or None when there is none."""
    spec = _spec(oracle)
    return None if spec is None else dict(spec)


def task_of(oracle: str | Mapping[str, Any] | None) -> str | None:
    """The ``task`` an oracle spec names (a JSON string or a mapping), or None. Not validated, so that grouping rows
    by task never fails on a spec that scoring would refuse (scoring says what is wrong with it)."""
    if isinstance(oracle, str):
        try:
            oracle = json.loads(oracle) if oracle.strip() else None
        except json.JSONDecodeError:
            return None
    task = oracle.get("task") if isinstance(oracle, Mapping) else None
    return str(task) if task else None


def _spec(oracle: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    # The cached dict is shared between calls: read it, never mutate it.
    if oracle is None:
        return None
    if isinstance(oracle, str):
        return _parse(oracle)
    return _check(oracle)


def score(oracle: str | Mapping[str, Any] | None, response: str | Sequence[Mapping[str, Any]]) -> float | None:
    """Score in [0, 1] of ``response`` as a reply to the last user turn; None when the row has no oracle."""
    spec = _spec(oracle)
    if spec is None:
        return None
    return float(_SCORERS[spec["task"]](spec, clean_reply(response)))


def score_batch(
    oracles: Sequence[str | Mapping[str, Any] | None], responses: Sequence[str | Sequence[Mapping[str, Any]]]
) -> list[float | None]:
    """``score`` for each (oracle, response) pair, in order."""
    if len(oracles) != len(responses):
        raise AlignmentError(
            f"oracle.score_batch: got {len(oracles)} oracles for {len(responses)} responses; pass one per response."
        )
    return [score(o, r) for o, r in zip(oracles, responses, strict=True)]

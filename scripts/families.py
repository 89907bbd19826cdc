"""The task families of the embedded data: one user turn each, with its oracle spec and every reply variant.

``scripts/make_data.py`` builds conversations and files from these turns; ``scripts/pretrain_corpus.py`` reuses the
reviews for the base model's plain-text corpus. The text itself (templates, word lists) is in ``data_bank.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import data_bank as bank

from alignment import oracle

ZH_SHARE = 0.35

CHAT_RULE_WEIGHTS = {"language": 0.30, "start_name": 0.25, "max_words": 0.20, "keyword": 0.25}
# Largest operand of the arithmetic questions. 0..10 gives 187 facts (121 sums, 66 differences), few enough that the
# 2.4M-parameter tiny model sees each one several times in training.
ARITH_MAX = 10


@dataclass
class Turn:
    """One user turn with its oracle spec and every reply variant ("good" plus the family's wrong kinds)."""

    user: str
    spec: dict
    replies: dict[str, str]


@dataclass
class Pools:
    """Names, titles and keywords a split may use: test rows draw from held-out ones."""

    names: dict[str, list[str]]
    keywords: dict[str, list[str]]
    titles: dict[tuple[str, str], list[str]]


def split_pool(items: list[str], split: str) -> list[str]:
    """Every fourth item is held out for the test split."""
    return [x for i, x in enumerate(items) if (i % 4 == 3) == (split == "test")]


def make_pools(split: str, hold_out_words: bool) -> Pools:
    """Every name, title and keyword, or (``hold_out_words``) only the split's share of them."""

    def pool(items) -> list[str]:
        return split_pool(list(items), split) if hold_out_words else list(items)

    return Pools(
        names={lang: pool(bank.NAMES[lang]) for lang in ("en", "zh")},
        keywords={lang: pool(bank.KEYWORDS[lang]) for lang in ("en", "zh")},
        titles={(lang, cat[0]): pool(cat[-1]) for lang in ("en", "zh") for cat in bank.CATEGORIES[lang]},
    )


def weighted(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def other_lang(lang: str) -> str:
    return "zh" if lang == "en" else "en"


def a_an(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def decap(text: str) -> str:
    """Lower-case the first letter so a reply can follow "Lily, "; keeps "I" and proper nouns."""
    first = text.split(" ", 1)[0].rstrip(",.!?")
    return text if first in bank.KEEP_CAPITAL else text[0].lower() + text[1:]


# --- task families: each returns a Turn ------------------------------------------------------------------------


def identity_turn(rng: random.Random, lang: str, pools: Pools, follow_up: bool) -> Turn:
    question, ask_maker, claim = rng.choice(bank.IDENTITY_QUESTIONS[lang])
    greet = "" if follow_up else rng.choice(bank.GREETINGS[lang]).format(name=rng.choice(pools.names[lang]))
    user = greet + question + rng.choice(bank.SUFFIXES[lang])
    own = (bank.NAME, bank.MAKER if lang == "en" else bank.ZH_MAKER)
    if isinstance(claim, tuple):  # "Are you ChatGPT?": the wrong reply says yes to the suggested identity
        other = claim
    else:
        other = rng.choices(bank.OTHER_IDENTITIES[lang], weights=(0.55, 0.15, 0.15, 0.15))[0]
    templates = bank.IDENTITY_REPLIES[lang] + (bank.MAKER_REPLIES[lang] if ask_maker else [])
    partials = bank.NAME_ONLY_REPLIES[lang] if ask_maker else bank.MAKER_ONLY_REPLIES[lang]
    yes, no = bank.YES_NO[lang] if claim else ("", "")
    if claim:  # a yes/no question: only replies that can follow "No, " / "Yes, "
        templates = [t for t in templates if t.startswith(("I", "我"))]
    template, partial = rng.choice(templates), rng.choice(partials)
    return Turn(
        user=user,
        spec={"task": "identity", "ask_maker": ask_maker},
        replies={
            "good": no + template.format(name=own[0], maker=own[1]),
            "other": (yes if isinstance(claim, tuple) else no) + template.format(name=other[0], maker=other[1]),
            "partial": no + partial.format(name=own[0], maker=own[1]),
        },
    )


def capital_turn(rng: random.Random, lang: str, pools: Pools, follow_up: bool) -> Turn:
    country = rng.choice(list(oracle.CAPITALS))
    en_country, zh_country, en_city, zh_city = oracle.CAPITALS[country]
    other = oracle.CAPITALS[rng.choice([c for c in oracle.CAPITALS if c != country])]
    c, a, wrong = (en_country, en_city, other[2]) if lang == "en" else (zh_country, zh_city, other[3])
    if follow_up:
        user = rng.choice(bank.CAPITAL_FOLLOW_UPS[lang]).format(c=c)
    else:
        greet = rng.choice(bank.GREETINGS[lang]).format(name=rng.choice(pools.names[lang]))
        user = greet + rng.choice(bank.CAPITAL_ASKS[lang]).format(c=c) + rng.choice(bank.SUFFIXES[lang])
    template = rng.choice(bank.CAPITAL_REPLIES[lang])
    return Turn(
        user=user,
        spec={"task": "capital", "country": country},
        replies={"good": template.format(c=c, a=a), "wrong": template.format(c=c, a=wrong)},
    )


def arithmetic_turn(rng: random.Random, lang: str, pools: Pools, follow_up: bool) -> Turn:
    op = rng.choice("+-")
    a, b = rng.randint(0, ARITH_MAX), rng.randint(0, ARITH_MAX)
    if op == "-" and a < b:  # results stay non-negative
        a, b = b, a
    answer = a + b if op == "+" else a - b
    asks = bank.ARITH_FOLLOW_UPS[lang] if follow_up else bank.ARITH_ASKS[lang]
    words = bank.OP_WORDS[lang][op]
    user = rng.choice(asks[op]).format(a=a, b=b)
    template = rng.choice(bank.ARITH_REPLIES[lang])
    wrong = answer + rng.choice((-3, -2, -1, 1, 2, 3))
    wrong = wrong if wrong >= 0 else answer + rng.randint(1, 3)
    return Turn(
        user=user,
        spec={"task": "arithmetic", "answer": answer},
        replies={
            "good": template.format(a=a, b=b, op=op, w=words, c=answer),
            "wrong": template.format(a=a, b=b, op=op, w=words, c=wrong),
        },
    )


@dataclass
class Review:
    """A review to write: its polarity, category and quoted title, and the review text in each variant."""

    polarity: str
    category: str
    title: str
    texts: dict[str, str]  # "good" (the asked polarity), "opposite", "mixed" (some slots flipped)


def review(rng: random.Random, lang: str, pools: Pools) -> Review:
    polarity = rng.choice(("positive", "negative"))
    cat, classifier, quote, aspects, _ = rng.choice(bank.CATEGORIES[lang])
    title = quote.format(rng.choice(pools.titles[(lang, cat)]))
    template, kinds = rng.choice(bank.REVIEWS[lang])
    asp1, asp2 = rng.sample(aspects, 2)
    sign = 1 if polarity == "positive" else -1
    # Distinct words per polarity, chosen once, so the variants differ only in the polarity of each slot.
    words = {}
    for s in (1, -1):
        for k in sorted(set(kinds)):  # sorted: set order changes between runs
            slots = [i for i, kind in enumerate(kinds) if kind == k]
            picked = rng.sample(bank.SENTIMENT_WORDS[lang][(k, s)], len(slots))
            words |= {(i, s): word for i, word in zip(slots, picked, strict=True)}

    def fill(signs: list[int]) -> str:
        slots = {f"p{i}": words[(i, s)] for i, s in enumerate(signs)}
        slots |= {f"ap{i}": a_an(w) for i, w in enumerate(list(slots.values()))}
        return template.format(T=title, cat=cat, cl=classifier, asp1=asp1, asp2=asp2, **slots)

    mixed = [sign] * len(kinds)
    flip = rng.sample(range(len(kinds)), rng.randint(1, len(kinds) - 1))
    for i in flip:
        mixed[i] = -sign
    texts = {"good": fill([sign] * len(kinds)), "opposite": fill([-sign] * len(kinds)), "mixed": fill(mixed)}
    return Review(polarity=polarity, category=cat, title=title, texts=texts)


def sentiment_turn(rng: random.Random, lang: str, pools: Pools, follow_up: bool) -> Turn:
    r = review(rng, lang, pools)
    user = rng.choice(bank.REVIEW_ASKS[lang][r.polarity]).format(cat=r.category, T=r.title)
    return Turn(user=user, spec={"task": "sentiment", "polarity": r.polarity}, replies=r.texts)


def chat_turn(rng: random.Random, lang: str, rule: dict, user_lang: str, topic: tuple, pools: Pools) -> Turn:
    q_en, q_zh, en, en_short, zh = topic
    user = rng.choice(bank.CHAT_OPENERS[user_lang]) + (q_en if user_lang == "en" else q_zh)
    answer = {"en": en, "zh": zh}
    kind = rule["rule"]
    if kind == "language":
        good, broken = answer[rule["lang"]], answer[other_lang(rule["lang"])]
    elif kind == "start_name":
        name, base = rule["name"], answer[lang]
        good = f"{name}, {decap(base)}" if lang == "en" else f"{name}，{base}"
        tail = f" Hope this helps, {name}." if lang == "en" else f"希望对你有帮助，{name}。"
        broken = base + tail if rng.random() < 0.25 else base
    elif kind == "max_words":
        good, broken = en_short, en
    else:
        base, mention = answer[lang], rng.choice(bank.KEYWORD_SENTENCES[lang])
        good = base + mention.format(kw=rule["keyword"])
        # The other keyword comes from the split's own pool: a held-out keyword must never appear in training rows,
        # least of all only in rejected replies (a reward model would learn to punish exactly the test keywords).
        others = [k for k in pools.keywords[lang] if k != rule["keyword"]]
        # Always another keyword, so that mentioning *a* keyword is not what makes a reply good: a reward model that
        # learnt that rewards keyword sentences added to any reply, and PPO finds it (docs/stages.md, ppo).
        broken = base + mention.format(kw=rng.choice(others))
    return Turn(user=user, spec={"task": "chat", **rule}, replies={"good": good, "break": broken})


FAMILY_TURN: dict[str, Callable[..., Turn]] = {
    "identity": identity_turn,
    "capital": capital_turn,
    "arithmetic": arithmetic_turn,
    "sentiment": sentiment_turn,
}


def system_rule(rng: random.Random, lang: str, pools: Pools) -> tuple[str, dict]:
    """A chat system prompt that sets a rule, and the rule as oracle fields."""
    kind = weighted(rng, CHAT_RULE_WEIGHTS)
    if kind == "max_words" and lang == "zh":  # word limits are only stated (and counted) for English rows
        kind = "keyword"
    if kind == "language":
        rule = {"rule": "language", "lang": rng.choice(("en", "zh"))}
    elif kind == "start_name":
        rule = {"rule": "start_name", "name": rng.choice(pools.names[lang])}
    elif kind == "max_words":
        rule = {"rule": "max_words", "n": rng.choice((6, 8, 10))}
    else:
        rule = {"rule": "keyword", "keyword": rng.choice(pools.keywords[lang])}
    key = kind if kind != "language" else f"language_{rule['lang']}"
    text = rng.choice(bank.RULE_PROMPTS[lang][key]).format(
        name=rule.get("name"), n=rule.get("n"), kw=rule.get("keyword")
    )
    return rng.choice(bank.PERSONAS[lang]) + text, rule

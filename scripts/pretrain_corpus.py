"""Plain-text documents the tiny base model is pretrained on (``data/pretrain/train.jsonl``) before any stage.

A base model comes to SFT knowing things about the world: here, the capitals of ``oracle.CAPITALS``, what a
positive or a negative review sounds like, everyday questions and their answers (long, short, in English, in Chinese,
addressed to someone by name, with a keyword worked in), and that ChatGPT, Claude and others are assistants made by
other companies. No chat template and no assistant persona: SFT teaches the assistant to use what the base knows
(and, from its imperfect replies, some mistakes), the later stages fix those. Every fact stated is true.
"""

from __future__ import annotations

import random

import data_bank as bank
from families import ZH_SHARE, Pools, decap, review, weighted

from alignment import oracle

KINDS = {"facts": 0.30, "review": 0.30, "qa": 0.20, "bilingual": 0.08, "keyword": 0.07, "assistants": 0.05}


def facts(rng: random.Random, lang: str, pools: Pools) -> str:
    """One to four statements about capitals."""
    sentences = []
    for _ in range(rng.randint(1, 4)):
        en_country, zh_country, en_city, zh_city = oracle.CAPITALS[rng.choice(list(oracle.CAPITALS))]
        c, a = (en_country, en_city) if lang == "en" else (zh_country, zh_city)
        text = rng.choice(bank.FACT_SENTENCES[lang]).format(c=c, a=a)
        sentences.append(text[0].upper() + text[1:])
    return (" " if lang == "en" else "").join(sentences)


def review_doc(rng: random.Random, lang: str, pools: Pools) -> str:
    """A review under a heading that says whether it is positive or negative."""
    r = review(rng, lang, pools)
    heading = rng.choice(bank.REVIEW_HEADINGS[lang][r.polarity]).format(cat=r.category, T=r.title)
    return f"{heading} {r.texts['good']}" if lang == "en" else heading + r.texts["good"]


def _topic(rng: random.Random, lang: str) -> tuple[str, str, str, str]:
    """(question, answer, short answer, the answer in the other language) of one everyday topic."""
    q_en, q_zh, en, en_short, zh = rng.choice(bank.CHAT_TOPICS)
    return (q_en, en, en_short, zh) if lang == "en" else (q_zh, zh, zh, en)


def qa(rng: random.Random, lang: str, pools: Pools) -> str:
    """A question and its answer: plain, short, or addressed to the person who asked."""
    q, a, short, _ = _topic(rng, lang)
    name = rng.choice(pools.names[lang])
    return rng.choice(bank.QA_FORMS[lang]).format(q=q, a=a, da=decap(a), s=short, name=name)


def bilingual(rng: random.Random, lang: str, pools: Pools) -> str:
    """A question answered in the other language."""
    q, _, _, other = _topic(rng, lang)
    return rng.choice(bank.BILINGUAL_FORMS[lang]).format(q=q, other=other)


def keyword_note(rng: random.Random, lang: str, pools: Pools) -> str:
    """An answer that works in the note's keyword."""
    q, a, _, _ = _topic(rng, lang)
    return rng.choice(bank.KEYWORD_NOTES[lang]).format(kw=rng.choice(pools.keywords[lang]), q=q, a=a)


def assistants(rng: random.Random, lang: str, pools: Pools) -> str:
    """Who makes the well-known AI assistants."""
    return rng.choice(bank.OTHER_ASSISTANT_FACTS[lang])


DOCUMENTS = {
    "facts": facts,
    "review": review_doc,
    "qa": qa,
    "bilingual": bilingual,
    "keyword": keyword_note,
    "assistants": assistants,
}


def documents(seed: int, size: int, pools: Pools) -> list[dict]:
    """``size`` rows ``{"text": ...}``, the document kinds mixed by ``KINDS``."""
    rng = random.Random(f"{seed}:pretrain")
    rows = []
    for _ in range(size):
        lang = "zh" if rng.random() < ZH_SHARE else "en"
        rows.append({"text": DOCUMENTS[weighted(rng, KINDS)](rng, lang, pools)})
    return rows

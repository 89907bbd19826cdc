"""Generate the embedded datasets under data/ (SFT, preference pairs, RL prompts) from one seed.

The SFT replies are deliberately imperfect (see IMPERFECTION and data/README.md) so that DPO, PPO and GRPO have room
to show gains under the rule-based oracle. Deterministic: the same arguments give byte-identical files.
Usage: python scripts/make_data.py [--seed 0] [--noise 0.0] [--out data/] [--hold-out-words]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alignment.data import oracle

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data_bank as bank  # noqa: E402

FAMILIES = ("identity", "arithmetic", "sentiment", "chat")
SIZES = {
    ("sft", "train"): 3000,
    ("sft", "test"): 200,
    ("preference", "train"): 3000,
    ("preference", "test"): 300,
    ("prompts", "train"): 1000,
    ("prompts", "test"): 128,
}
ZH_SHARE = 0.35
# Share of SFT assistant replies that are wrong, per family and kind of mistake (every turn, not only the last).
IMPERFECTION = {
    "identity": {"other": 0.32, "partial": 0.06},
    "arithmetic": {"wrong": 0.25},
    "sentiment": {"opposite": 0.22, "mixed": 0.18},
    "chat": {"break": 0.30},
}
# Which kind of wrong reply a preference pair's rejected side is.
REJECTED = {
    "identity": {"other": 0.8, "partial": 0.2},
    "arithmetic": {"wrong": 1.0},
    "sentiment": {"opposite": 0.6, "mixed": 0.4},
    "chat": {"break": 1.0},
}
# Conversation shapes: one turn, several turns of the same family, or earlier turns of other families.
SHAPES = {"sft": (0.58, 0.22, 0.20), "preference": (0.75, 0.125, 0.125), "prompts": (0.75, 0.125, 0.125)}
CHAT_RULE_WEIGHTS = {"language": 0.30, "start_name": 0.25, "max_words": 0.20, "keyword": 0.25}
CHAT_WITH_SYSTEM_RULE = 0.75
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


def sentiment_turn(rng: random.Random, lang: str, pools: Pools, follow_up: bool) -> Turn:
    polarity = rng.choice(("positive", "negative"))
    cat, classifier, quote, aspects, _ = rng.choice(bank.CATEGORIES[lang])
    title = quote.format(rng.choice(pools.titles[(lang, cat)]))
    user = rng.choice(bank.REVIEW_ASKS[lang][polarity]).format(cat=cat, T=title)
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
    return Turn(
        user=user,
        spec={"task": "sentiment", "polarity": polarity},
        replies={"good": fill([sign] * len(kinds)), "opposite": fill([-sign] * len(kinds)), "mixed": fill(mixed)},
    )


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
        broken = base + mention.format(kw=rng.choice(others)) if rng.random() < 0.4 else base
    return Turn(user=user, spec={"task": "chat", **rule}, replies={"good": good, "break": broken})


FAMILY_TURN: dict[str, Callable[..., Turn]] = {
    "identity": identity_turn,
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


# --- conversations and rows ----------------------------------------------------------------------------------


def conversation(rng: random.Random, family: str, kind: str, pools: Pools) -> tuple[list[dict], Turn]:
    """Context messages (system, earlier turns) and the last turn, whose reply the row is about."""
    lang = "zh" if rng.random() < ZH_SHARE else "en"
    single, same, _ = SHAPES[kind]
    roll = rng.random()
    n_turns = 1 if roll < single else rng.choice((2, 2, 3))
    mixed = roll >= single + same
    system, rule = None, None
    if family == "chat" and rng.random() < CHAT_WITH_SYSTEM_RULE:
        system, rule = system_rule(rng, lang, pools)
        mixed = False  # a rule applies to every turn, so the whole conversation is chat
    elif rng.random() < 0.5:
        system = rng.choice(bank.PERSONAS[lang]).strip() or rng.choice(bank.GENERIC_SYSTEMS[lang])
    families = [rng.choice([f for f in FAMILIES if f != family]) if mixed else family for _ in range(n_turns - 1)]
    topics = rng.sample(bank.CHAT_TOPICS, n_turns)
    user_lang = other_lang(lang) if rule and rule["rule"] == "language" and rng.random() < 0.5 else lang
    turns = []
    for i, fam in enumerate([*families, family]):
        if fam != "chat":
            turns.append(FAMILY_TURN[fam](rng, lang, pools, follow_up=i > 0 and families[i - 1] == fam))
        else:
            # Without a system rule, the implicit rule is to answer in the user's language.
            turn_rule = rule or {"rule": "language", "lang": lang}
            turns.append(chat_turn(rng, lang, turn_rule, user_lang if rule else lang, topics[i], pools))
    messages = [{"role": "system", "content": system}] if system else []
    for turn in turns[:-1]:
        reply = sft_reply(rng, turn) if kind == "sft" else turn.replies["good"]
        messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": reply}]
    return messages, turns[-1]


def sft_reply(rng: random.Random, turn: Turn) -> str:
    """The good reply, or a wrong one at the family's IMPERFECTION rates."""
    roll, total = rng.random(), 0.0
    for mistake, rate in IMPERFECTION[turn.spec["task"]].items():
        total += rate
        if roll < total:
            return turn.replies[mistake]
    return turn.replies["good"]


def make_row(rng: random.Random, family: str, kind: str, pools: Pools) -> dict:
    context, turn = conversation(rng, family, kind, pools)
    prompt = [*context, {"role": "user", "content": turn.user}]
    common = {"task": family, "oracle": json.dumps(turn.spec, ensure_ascii=False)}
    if kind == "sft":
        return {"messages": [*prompt, {"role": "assistant", "content": sft_reply(rng, turn)}], **common}
    if kind == "prompts":
        return {"prompt": prompt, **common}
    rejected = turn.replies[weighted(rng, REJECTED[family])]
    if rejected == turn.replies["good"]:  # a template bug: the pair would teach nothing
        raise RuntimeError(f"rejected equals chosen for {turn}")
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": turn.replies["good"]}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **common,
    }


def prompt_key(row: dict) -> str:
    """The row's prompt (every message before the last assistant reply) as one comparable string."""
    messages = row["messages"][:-1] if "messages" in row else row["prompt"]
    return json.dumps(messages, ensure_ascii=False)


def make_file(seed: int, kind: str, split: str, seen: set[str], hold_out_words: bool = False) -> list[dict]:
    """Rows balanced over the four families; test rows skip every prompt already in ``seen``."""
    size = SIZES[(kind, split)]
    rng = random.Random(f"{seed}:{kind}:{split}")
    pools = make_pools(split, hold_out_words)
    families = [FAMILIES[i % 4] for i in range(size)]
    rng.shuffle(families)
    rows = []
    for family in families:
        for _ in range(1000):
            row = make_row(rng, family, kind, pools)
            if split == "train" or prompt_key(row) not in seen:
                break
        else:
            raise RuntimeError(f"could not find an unseen {family} prompt for {kind}/{split}")
        if split == "test":
            seen.add(prompt_key(row))
        rows.append(row)
    return rows


def add_noise(rows: list[dict], noise: float, seed: int) -> None:
    """Swap chosen and rejected in a ``noise`` share of the pairs (label noise experiments)."""
    rng = random.Random(f"{seed}:noise")
    for row in rows:
        if rng.random() < noise:
            row["chosen"], row["rejected"] = row["rejected"], row["chosen"]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate(seed: int = 0, noise: float = 0.0, hold_out_words: bool = False) -> dict[tuple[str, str], list[dict]]:
    """Every file's rows keyed by (kind, split); train first, so test can avoid all train prompts."""
    kinds = ("sft", "preference", "prompts")
    files = {(kind, "train"): make_file(seed, kind, "train", set(), hold_out_words) for kind in kinds}
    seen = {prompt_key(row) for rows in files.values() for row in rows}
    for kind in kinds:
        files[(kind, "test")] = make_file(seed, kind, "test", seen, hold_out_words)
    add_noise(files[("preference", "train")], noise, seed)
    return files


def summary(files: dict[tuple[str, str], list[dict]]) -> str:
    """Counts per family and the mean oracle score of the SFT replies (and of chosen/rejected)."""
    lines = []
    for (kind, split), rows in files.items():
        counts = {f: sum(r["task"] == f for r in rows) for f in FAMILIES}
        multi = sum(sum(m["role"] == "assistant" for m in r.get("messages", r.get("prompt"))) >= (kind == "sft") + 1
                    for r in rows)  # fmt: skip
        lines.append(f"{kind}/{split}: {len(rows)} rows {counts}, multi-turn {multi / len(rows):.0%}")
        for family in FAMILIES:
            picked = [r for r in rows if r["task"] == family]
            if kind == "sft":
                scores = [oracle.score(r["oracle"], r["messages"][-1]["content"]) for r in picked]
                lines.append(f"  {family}: mean SFT reply score {sum(scores) / len(scores):.3f}")
            elif kind == "preference":
                good = [oracle.score(r["oracle"], r["chosen"][0]["content"]) for r in picked]
                bad = [oracle.score(r["oracle"], r["rejected"][0]["content"]) for r in picked]
                lines.append(f"  {family}: chosen {sum(good) / len(good):.3f} rejected {sum(bad) / len(bad):.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.0, help="share of preference train pairs to swap")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    parser.add_argument("--quiet", action="store_true", help="do not print the summary")
    parser.add_argument(
        "--hold-out-words",
        action="store_true",
        help="harder test split: every fourth name, title and keyword appears only in test rows",
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.noise <= 1.0:
        parser.error(f"--noise must be in [0, 1], got {args.noise}")
    files = generate(args.seed, args.noise, args.hold_out_words)
    for (kind, split), rows in files.items():
        write_jsonl(args.out / kind / f"{split}.jsonl", rows)
    if not args.quiet:
        print(summary(files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

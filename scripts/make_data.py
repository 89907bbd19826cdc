"""Generate the embedded datasets under data/ (pretraining text, SFT, preference pairs, RL prompts) from one seed.

The SFT replies are deliberately imperfect (see IMPERFECTION and data/README.md) so that DPO, PPO and GRPO have room
to show gains under the rule-based oracle. Deterministic: the same arguments give byte-identical files.
Usage: python scripts/make_data.py [--seed 0] [--noise 0.0] [--out data/] [--hold-out-words]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from alignment import oracle

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data_bank as bank  # noqa: E402
import pretrain_corpus  # noqa: E402
from families import (  # noqa: E402
    FAMILY_TURN,
    ZH_SHARE,
    Pools,
    Turn,
    chat_turn,
    make_pools,
    other_lang,
    system_rule,
    weighted,
)

# The default mix. "arithmetic" is available with --families: the 2.4M-parameter tiny model does not learn sums in a
# CPU budget (docs/stages.md), so the default holds a closed-book fact task (capitals) instead.
FAMILIES = ("identity", "capital", "sentiment", "chat")
ALL_FAMILIES = ("identity", "capital", "arithmetic", "sentiment", "chat")
SIZES = {
    ("sft", "train"): 3000,
    ("sft", "test"): 200,
    ("preference", "train"): 12000,
    ("preference", "test"): 300,
    ("prompts", "train"): 1000,
    ("prompts", "test"): 128,
}
# Plain-text documents the tiny base model is pretrained on (scripts/pretrain_corpus.py); train split only.
PRETRAIN_SIZE = 60000
# Share of SFT assistant replies that are wrong, per family and kind of mistake (every turn, not only the last).
IMPERFECTION = {
    "identity": {"other": 0.32, "partial": 0.06},
    "capital": {"wrong": 0.25},
    "arithmetic": {"wrong": 0.25},
    "sentiment": {"opposite": 0.22, "mixed": 0.18},
    "chat": {"break": 0.30},
}
# Which kind of wrong reply a preference pair's rejected side is.
# "off_topic" is a good reply to another family's question (OFF_TOPIC): the reward model must learn that answering
# something else is wrong too, or RL finds that e.g. an identity introduction scores well after any question.
REJECTED = {
    "identity": {"other": 0.7, "partial": 0.15, "off_topic": 0.15},
    "capital": {"wrong": 0.8, "off_topic": 0.2},
    "arithmetic": {"wrong": 1.0},
    "sentiment": {"opposite": 0.5, "mixed": 0.3, "off_topic": 0.2},
    "chat": {"break": 1.0},
}
OFF_TOPIC = {"identity": "capital", "capital": "identity", "sentiment": "identity"}
# Conversation shapes: one turn, several turns of the same family, or earlier turns of other families.
SHAPES = {"sft": (0.58, 0.22, 0.20), "preference": (0.75, 0.125, 0.125), "prompts": (0.75, 0.125, 0.125)}
CHAT_WITH_SYSTEM_RULE = 0.75
# --- conversations and rows ----------------------------------------------------------------------------------


def conversation(
    rng: random.Random, family: str, kind: str, pools: Pools, families: tuple[str, ...]
) -> tuple[list[dict], Turn]:
    """Context messages (system, earlier turns) and the last turn, whose reply the row is about."""
    lang = "zh" if rng.random() < ZH_SHARE else "en"
    single, same, _ = SHAPES[kind]
    roll = rng.random()
    n_turns = 1 if roll < single else rng.choice((2, 2, 3))
    others = [f for f in families if f != family]
    mixed = roll >= single + same and bool(others)  # one family alone: the mixed shape repeats it
    system, rule = None, None
    if family == "chat" and rng.random() < CHAT_WITH_SYSTEM_RULE:
        system, rule = system_rule(rng, lang, pools)
        mixed = False  # a rule applies to every turn, so the whole conversation is chat
    elif rng.random() < 0.5:
        system = rng.choice(bank.PERSONAS[lang]).strip() or rng.choice(bank.GENERIC_SYSTEMS[lang])
    earlier = [rng.choice(others) if mixed else family for _ in range(n_turns - 1)]
    topics = rng.sample(bank.CHAT_TOPICS, n_turns)
    user_lang = other_lang(lang) if rule and rule["rule"] == "language" and rng.random() < 0.5 else lang
    turns = []
    for i, fam in enumerate([*earlier, family]):
        if fam != "chat":
            turns.append(FAMILY_TURN[fam](rng, lang, pools, follow_up=i > 0 and earlier[i - 1] == fam))
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


def make_row(rng: random.Random, family: str, kind: str, pools: Pools, families: tuple[str, ...]) -> dict:
    context, turn = conversation(rng, family, kind, pools, families)
    prompt = [*context, {"role": "user", "content": turn.user}]
    common = {"task": family, "oracle": json.dumps(turn.spec, ensure_ascii=False)}
    if kind == "sft":
        return {"messages": [*prompt, {"role": "assistant", "content": sft_reply(rng, turn)}], **common}
    if kind == "prompts":
        return {"prompt": prompt, **common}
    mistake = weighted(rng, REJECTED[family])
    if mistake == "off_topic":
        lang = "zh" if oracle.language_share(turn.user, "zh") > 0.5 else "en"
        rejected = FAMILY_TURN[OFF_TOPIC[family]](rng, lang, pools, follow_up=False).replies["good"]
    else:
        rejected = turn.replies[mistake]
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


def make_file(
    seed: int,
    kind: str,
    split: str,
    seen: set[str],
    hold_out_words: bool = False,
    families: tuple[str, ...] = FAMILIES,
) -> list[dict]:
    """Rows balanced over ``families``; test rows skip every prompt already in ``seen``."""
    size = SIZES[(kind, split)]
    rng = random.Random(f"{seed}:{kind}:{split}")
    pools = make_pools(split, hold_out_words)
    order = [families[i % len(families)] for i in range(size)]
    rng.shuffle(order)
    rows = []
    for family in order:
        for _ in range(1000):
            row = make_row(rng, family, kind, pools, families)
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


def generate(
    seed: int = 0, noise: float = 0.0, hold_out_words: bool = False, families: tuple[str, ...] = FAMILIES
) -> dict[tuple[str, str], list[dict]]:
    """Every file's rows keyed by (kind, split); train first, so test can avoid all train prompts."""
    kinds = ("sft", "preference", "prompts")
    pools = make_pools("train", hold_out_words)
    files = {("pretrain", "train"): pretrain_corpus.documents(seed, PRETRAIN_SIZE, pools)}
    files |= {(kind, "train"): make_file(seed, kind, "train", set(), hold_out_words, families) for kind in kinds}
    seen = {prompt_key(row) for kind in kinds for row in files[(kind, "train")]}
    for kind in kinds:
        files[(kind, "test")] = make_file(seed, kind, "test", seen, hold_out_words, families)
    add_noise(files[("preference", "train")], noise, seed)
    return files


def summary(files: dict[tuple[str, str], list[dict]]) -> str:
    """Counts per family and the mean oracle score of the SFT replies (and of chosen/rejected)."""
    lines = []
    for (kind, split), rows in files.items():
        if kind == "pretrain":
            words = sum(oracle.units(r["text"]) for r in rows)
            lines.append(f"{kind}/{split}: {len(rows)} documents, {words} words")
            continue
        families = sorted({r["task"] for r in rows}, key=ALL_FAMILIES.index)
        counts = {f: sum(r["task"] == f for r in rows) for f in families}
        multi = sum(sum(m["role"] == "assistant" for m in r.get("messages", r.get("prompt"))) >= (kind == "sft") + 1
                    for r in rows)  # fmt: skip
        lines.append(f"{kind}/{split}: {len(rows)} rows {counts}, multi-turn {multi / len(rows):.0%}")
        for family in families:
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
    parser.add_argument(
        "--families",
        default=",".join(FAMILIES),
        help=f"comma-separated task families, in equal shares (any of {', '.join(ALL_FAMILIES)})",
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.noise <= 1.0:
        parser.error(f"--noise must be in [0, 1], got {args.noise}")
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    unknown = sorted(set(families) - set(ALL_FAMILIES))
    if unknown or not families or len(set(families)) != len(families):
        parser.error(f"--families takes distinct names of {', '.join(ALL_FAMILIES)}; got {args.families!r}")
    files = generate(args.seed, args.noise, args.hold_out_words, families)
    for (kind, split), rows in files.items():
        write_jsonl(args.out / kind / f"{split}.jsonl", rows)
    if not args.quiet:
        print(summary(files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

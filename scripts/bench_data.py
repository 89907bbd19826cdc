"""Skewed-length benchmark data: a long-tailed mix of short and long multi-turn chats, from the embedded datasets.

The embedded rows (scripts/make_data.py) are short, one to three exchanges. Real chat data is long-tailed: most
conversations are short, a few are many turns long. Each benchmark row here joins ``k`` embedded conversations into
one multi-turn chat, ``k`` drawn from a Zipf-like law (P(k) ~ 1/k^1.3, k = 1..max_join), so most rows stay short and a
tail runs to tens of turns (truncated at ``data.max_length`` like any row). System prompts are kept only at the start.

- ``sft``: ``messages`` rows (joined chats), every assistant turn trained;
- ``preference``: the history of ``k - 1`` SFT chats, then an embedded pair's prompt, ``chosen`` and ``rejected``.

Rows keep ``task`` and ``oracle`` from the last joined conversation. Deterministic for a seed.

    python scripts/bench_data.py sft /tmp/bench-data/sft          # writes train.jsonl and test.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
ZIPF_EXPONENT = 1.3


def join_count(rng: random.Random, max_join: int) -> int:
    """How many conversations one row joins: 1..max_join with P(k) proportional to k^-ZIPF_EXPONENT."""
    weights = [k**-ZIPF_EXPONENT for k in range(1, max_join + 1)]
    return rng.choices(range(1, max_join + 1), weights=weights)[0]


def _history(rng: random.Random, chats: list[dict], k: int) -> list[dict]:
    """Messages of ``k`` random embedded conversations in a row; only the first keeps its system prompt."""
    messages: list[dict] = []
    for i in range(k):
        turns = rng.choice(chats)["messages"]
        messages += [m for m in turns if i == 0 or m["role"] != "system"]
    return messages


def skewed_sft(rows: list[dict], n: int, seed: int, max_join: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = join_count(rng, max_join)
        last = rng.choice(rows)
        history = _history(rng, rows, k - 1)
        tail = [m for m in last["messages"] if not history or m["role"] != "system"]
        out.append({"messages": history + tail, "task": last["task"], "oracle": last["oracle"]})
    return out


def skewed_preference(pairs: list[dict], chats: list[dict], n: int, seed: int, max_join: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = join_count(rng, max_join)
        pair = rng.choice(pairs)
        history = _history(rng, chats, k - 1)
        prompt = [m for m in pair["prompt"] if not history or m["role"] != "system"]
        out.append(pair | {"prompt": history + prompt})
    return out


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(kind: str, out: Path, train_rows: int, test_rows: int, seed: int = 0, max_join: int = 12) -> Path:
    """Write ``out/train.jsonl`` and ``out/test.jsonl`` of skewed ``kind`` rows (sft or preference); return ``out``.

    Train and held-out rows are joined from the embedded train and test splits respectively, so they share no row.
    """
    out.mkdir(parents=True, exist_ok=True)
    for split, n, offset in (("train", train_rows, 0), ("test", test_rows, 1)):
        chats = _read(DATA / "sft" / f"{split}.jsonl")
        if kind == "sft":
            rows = skewed_sft(chats, n, seed + offset, max_join)
        elif kind == "preference":
            rows = skewed_preference(_read(DATA / "preference" / f"{split}.jsonl"), chats, n, seed + offset, max_join)
        else:
            raise ValueError(f"kind={kind!r}: sft or preference")
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out / f"{split}.jsonl").write_text(text, encoding="utf-8")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("sft", "preference"))
    p.add_argument("out", type=Path)
    p.add_argument("--train-rows", type=int, default=2000)
    p.add_argument("--test-rows", type=int, default=100)
    p.add_argument("--max-join", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(write(a.kind, a.out, a.train_rows, a.test_rows, a.seed, a.max_join))


if __name__ == "__main__":
    main()

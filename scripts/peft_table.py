"""Train SFT once per fine-tuning method on the embedded task and print docs/peft.md's markdown table.

Usage: python scripts/peft_table.py [--out DIR] [--methods full,lora,...] [--max-steps 60] [--threads 1]

Each method runs ``python -m alignment stage=sft peft=<method>`` with the same short schedule (``SCHEDULE`` below)
and its recommended learning rate (``LEARNING_RATES``), one after another; the table reports the trainable share,
held-out eval_loss before and after, and wall time of the whole stage process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("full", "freeze", "lora", "dora", "rslora", "adalora", "ia3", "prompt_tuning", "p_tuning", "prefix_tuning")
# Recommended peak learning rates on the embedded task (cosine schedule); see docs/peft.md for how they were chosen.
LEARNING_RATES = {
    "full": 2e-3,
    "freeze": 2e-3,
    "lora": 1e-2,
    "dora": 1e-2,
    "rslora": 5e-3,
    "adalora": 1e-2,
    "ia3": 3e-2,
    "prompt_tuning": 1e-1,
    "p_tuning": 1e-2,
    "prefix_tuning": 3e-2,
}
# Shorter than the default SFT (2 epochs, ~1,000 steps): the same schedule for every method.
# Padded batches of 16 rows (not the packed SFT default), so a step is the same 16 conversations for every method.
SCHEDULE = [
    "trainer.warmup_steps=8",
    "trainer.packing=false",
    "trainer.per_device_train_batch_size=16",
    "data.max_eval_rows=128",
    "oracle_eval.enabled=false",
]


def run_method(method: str, out: Path, max_steps: int, threads: int) -> dict:
    """One SFT run; returns its metrics with the wall time of the process."""
    args = [
        sys.executable,
        "-m",
        "alignment",
        "stage=sft",
        f"peft={method}",
        f"output_dir={out / method}",
        f"trainer.max_steps={max_steps}",
        f"trainer.learning_rate={LEARNING_RATES[method]}",
        "resume=fresh",
        *SCHEDULE,
    ]
    env = dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"peft={method} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / method / "sft" / "metrics.json").read_text(encoding="utf-8"))
    return metrics | {"wall_s": wall, "learning_rate": LEARNING_RATES[method]}


def table(results: dict[str, dict]) -> str:
    """The markdown table of every method's results."""
    rows = [
        "| method | lr | trainable params | trainable share | eval_loss before | eval_loss after | wall time (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for method, m in results.items():
        share = m["trainable_params"] / m["total_params"]
        rows.append(
            f"| {method} | {m['learning_rate']:g} | {m['trainable_params']:,} | {share:.2%} | "
            f"{m['eval_loss_before']:.3f} | {m['eval_loss']:.3f} | {m['wall_s']:.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/peft_table"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS)")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    results = {}
    for method in methods:
        print(f"[peft_table] {method} ...", file=sys.stderr, flush=True)
        results[method] = run_method(method, args.out, args.max_steps, args.threads)
        keep = ("trainable_params", "total_params", "eval_loss_before", "eval_loss", "wall_s", "learning_rate")
        summary = {k: results[method][k] for k in keep}
        with (args.out / "results.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps({"method": method, **summary}, ensure_ascii=False) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()

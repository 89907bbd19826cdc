"""Benchmark a stage against plain TRL: alternating runs from one command, with ratios from the same session.

    python scripts/bench.py sft                       # tiny model, skewed chats; under 5 minutes on 2 CPU cores
    python scripts/bench.py dpo --model 50m           # a ~50M-parameter random-init Qwen2 (built in the scratch dir)
    python scripts/bench.py rm --ours trainer.train_sampling_strategy=random   # try one of our settings
    python scripts/bench.py sft --gpu                 # a ~0.36B Qwen2 config in bf16, with MFU; skips without a GPU
    python scripts/bench.py startup                   # seconds from launch to the first step of stage=sft
    python scripts/bench.py ppo --sft RUN/sft/model --rm RUN/rm/model --trl19-python /tmp/venv19/bin/python

Each side runs in its own process (scripts/bench_worker.py): a warm-up of each, then ``--repeats`` pairs, ours and
TRL alternating, so a change in machine load hits both. Ours is ``python -m alignment stage=<stage>`` with its
defaults (only the step count, data, model and the skipped oracle/before evaluations and checkpoints are set); TRL
gets the rows per step ours trained on (measured in the warm-up) and ours' learning-rate schedule. Data: long-tailed
multi-turn chats (scripts/bench_data.py). The table gives medians over the repeats; the last line reads
``<stage> tokens/s ours=<x> trl=<y> ratio=<x/y>`` in loss-bearing tokens per second.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
WORKER = ROOT / "scripts" / "bench_worker.py"
# BENCHMARKS.md's like-for-like PPO settings (trl 1.9 accumulates over minibatches: one minibatch per rollout).
PPO_ARGS = "--steps 20 --rollout-batch-size 32 --mini-batch-size 32 --ppo-epochs 2 --threads 1"
DEFAULT_STEPS = {"sft": 20, "dpo": 4, "rm": 6, "grpo": 4, "startup": 2}
# make_bench_model.build arguments: (layers, hidden, intermediate, heads, kv_heads)
MODELS = {"50m": (12, 640, 1536, 10, 2), "gpu": (24, 896, 4864, 14, 2)}
COLUMNS = [
    ("loss tok/s", "loss_tokens_per_s", "{:.0f}"),
    ("tok/s", "tokens_per_s", "{:.0f}"),
    ("s/step", "s_per_step", "{:.3f}"),
    ("rows/step", "rows_per_step", "{:.1f}"),
    ("tok/step", "tokens_per_step", "{:.0f}"),
    ("padding", "padding_share", "{:.0%}"),
    ("peak MiB", "peak_memory_mb", "{:.0f}"),
    ("start s", "seconds_to_first_step", "{:.1f}"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=("sft", "dpo", "rm", "grpo", "ppo", "startup"))
    p.add_argument("--model", default="tiny", help="tiny, 50m, or a model dir")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default per stage)")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs of each side, after one warm-up each (0: report the warm-up runs)",
    )
    p.add_argument("--train-rows", type=int, default=800)
    p.add_argument("--test-rows", type=int, default=None, help="held-out rows (default: 100 sft, 40 dpo and rm)")
    p.add_argument("--max-length", type=int, default=512, help="data.max_length on both sides")
    p.add_argument("--ours", nargs="*", default=[], help="extra key=value overrides for our side")
    p.add_argument("--gpu", action="store_true", help="~0.36B model in bf16 on the GPU, with MFU")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak, for MFU")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (1: steady timings on a shared machine)"
    )
    p.add_argument("--seed", type=int, default=42, help="seed of both sides (initialisation, data order)")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (printed)")
    # ppo: scripts/bench_ppo.py on both sides (trl 1.9.0 in its own venv, BENCHMARKS.md)
    p.add_argument("--sft", help="ppo: the SFT model dir")
    p.add_argument("--rm", help="ppo: the reward model dir")
    p.add_argument("--trl19-python", default="/tmp/venv19/bin/python", help="ppo: python of the trl 1.9.0 venv")
    p.add_argument(
        "--ppo-args",
        default=PPO_ARGS,
        help=f"ppo: bench_ppo.py arguments for both sides, one quoted string (default: '{PPO_ARGS}')",
    )
    return p.parse_args(argv)


def model_path(name: str, scratch: Path, gpu: bool) -> tuple[str, int]:
    """(model dir, parameter count): the tiny model, a built random-init Qwen2, or a given dir."""
    from make_bench_model import build

    if gpu:
        name = "gpu"
    if name in MODELS:
        out = scratch / f"model-{name}"
        return str(out), build(out, *MODELS[name], seed=0)
    from alignment.tiny_model import tiny_model_dir

    path = tiny_model_dir() if name == "tiny" else Path(name)
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).parameters())
    return str(path), n


def stage_data(stage: str, scratch: Path, rows: int, test_rows: int | None) -> Path:
    from bench_data import write

    if stage in ("grpo", "startup"):
        return ROOT / "data" / ("prompts" if stage == "grpo" else "sft")
    if test_rows is None:
        test_rows = 100 if stage == "sft" else 40  # pairs are evaluated twice on our side (the stage's and ours)
    return write("sft" if stage == "sft" else "preference", scratch / f"data-{stage}", rows, test_rows)


def our_overrides(stage: str, model: str, data: Path, steps: int, max_length: int, out: Path) -> list[str]:
    """Our stage as users run it: defaults, plus what makes the runs comparable and short."""
    return [
        f"stage={stage}",
        f"model.path={model}",
        "data=custom",
        f"data.path={data}",
        "data.eval_split=test",  # data=custom holds out 5% of train unless told the split: TRL's rows on both sides
        f"data.max_length={max_length}",
        f"trainer.max_steps={steps}",
        "trainer.save_strategy=no",
        "oracle_eval.enabled=false",
        "evaluate_before=false",
        f"output_dir={out}",
    ]


def trl_spec(stage: str, warm: dict, base: dict) -> dict:
    """The TRL side's settings: ours' schedule and rows per step, as measured in our warm-up run."""
    args = warm["args"]
    rows = warm["rates"]["rows_per_step"] / (2 if stage in ("dpo", "rm") else 1)  # a pair is two sequences
    if "rows_per_sequence" in warm:  # packed: the whole train set's rows per sequence, not the warm-up's sample
        rows = warm["rows_per_sequence"] * args["per_device_train_batch_size"] * args["gradient_accumulation_steps"]
    spec = base | {k: args[k] for k in ("learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay")}
    spec |= {"side": "trl", "batch_rows": max(1, round(rows)), "eval_batch": args["per_device_eval_batch_size"]}
    if stage == "dpo":
        spec |= {"beta": args["beta"], "loss_type": args["loss_type"]}
    if stage == "grpo":
        spec |= {k: args[k] for k in ("num_generations", "max_completion_length", "temperature", "beta")}
        spec["batch_rows"] = args["per_device_train_batch_size"] * args["gradient_accumulation_steps"]
    return spec


def run_side(spec: dict, scratch: Path, name: str) -> dict:
    """One worker process; its JSON result (the log is kept in the scratch dir and shown on failure)."""
    spec_path, result_path, log_path = (scratch / f"{name}.{ext}" for ext in ("spec.json", "result.json", "log"))
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = os.environ | {"BENCH_LAUNCHED_AT": repr(time.time())}
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    with log_path.open("w", encoding="utf-8") as log:
        code = subprocess.call(
            [sys.executable, str(WORKER), str(spec_path), str(result_path)], stdout=log, stderr=log, env=env
        )
    if code != 0 or not result_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{name} failed (exit {code}); last lines of {log_path}:\n{tail}")
    out_dir = spec.get("output_dir")
    if out_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    return json.loads(result_path.read_text(encoding="utf-8"))


def flat(result: dict) -> dict:
    """A run's numbers in one dict; the trainer's own evaluation (DPO: not the shared measure) as ``trainer_*``."""
    held = dict(result["held_out"])
    own = {f"trainer_{k}": v for k, v in held.pop("trainer_eval", {}).items()}
    return (
        result["rates"]
        | held
        | own
        | {k: result[k] for k in ("peak_memory_mb", "seconds_to_first_step") if k in result}
    )


def summary(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Median of each measure over a side's timed runs."""
    out = {}
    for side, results in runs.items():
        rows = [flat(r) for r in results]
        out[side] = {k: statistics.median(r[k] for r in rows) for k in rows[0] if isinstance(rows[0][k], int | float)}
    return out


def table(stage: str, runs: dict[str, list[dict]], params: int, gpu_peak: float | None) -> str:
    """The printed table: medians per side, the per-pair ratios of loss-bearing tokens/s, and the last line."""
    med = summary(runs)
    held = [k for k in med["ours"] if k.startswith(("eval_", "reward"))]
    extra = [(k, k, "{:.4f}") for k in held]
    if gpu_peak:
        for side in med.values():
            side["mfu"] = 6 * params * side["tokens_per_s"] / (gpu_peak * 1e12)
        extra.append(("MFU", "mfu", "{:.1%}"))
    header = ["side", *(c[0] for c in COLUMNS + extra)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for side in ("ours", "trl"):
        cells = [c[2].format(med[side][c[1]]) if c[1] in med[side] else "-" for c in COLUMNS + extra]
        lines.append("| " + " | ".join([side, *cells]) + " |")
    pair_ratios = [
        o["rates"]["loss_tokens_per_s"] / t["rates"]["loss_tokens_per_s"]
        for o, t in zip(runs["ours"], runs["trl"], strict=True)
    ]
    x, y = med["ours"]["loss_tokens_per_s"], med["trl"]["loss_tokens_per_s"]
    own = [k for k in med["ours"] if k.startswith("trainer_")]
    if own:
        sides = "; ".join(
            side + " " + " ".join(f"{k[8:]}={med[side].get(k, float('nan')):.4f}" for k in own) for side in med
        )
        lines.append(f"each trainer's own evaluate() (its own tokenisation, not the columns above): {sides}")
    lines.append(f"ratio per pair (loss-bearing tokens/s): {', '.join(f'{r:.2f}' for r in pair_ratios)}")
    lines.append(f"{stage} tokens/s ours={x:.0f} trl={y:.0f} ratio={x / y:.2f}")
    return "\n".join(lines)


def bench_stage(a: argparse.Namespace, scratch: Path) -> None:
    steps = a.steps or DEFAULT_STEPS[a.stage]
    model, params = model_path(a.model, scratch, a.gpu)
    data = stage_data(a.stage, scratch, a.train_rows, a.test_rows)
    base = {"stage": a.stage, "model": model, "data": str(data), "steps": steps, "seed": a.seed}
    base |= {"max_length": a.max_length, "bf16": a.gpu, "threads": a.threads}

    def ours(name: str) -> dict:
        out = scratch / f"out-{name}"
        overrides = [*our_overrides(a.stage, model, data, steps, a.max_length, out), f"seed={a.seed}", *a.ours]
        return run_side(base | {"side": "ours", "overrides": overrides}, scratch, name)

    print(f"[bench] {a.stage}: model {model} ({params / 1e6:.1f}M parameters), data {data}, {steps} steps")
    warm = ours("ours-warmup")
    spec = trl_spec(a.stage, warm, base)
    print(f"[bench] TRL side: {spec['batch_rows']} rows per step, lr {spec['learning_rate']} "
          f"{spec['lr_scheduler_type']}, warm-up {spec['warmup_steps']} steps")  # fmt: skip
    trl_warm = run_side(spec | {"output_dir": str(scratch / "out-trl")}, scratch, "trl-warmup")
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    if not a.repeats:  # --repeats 0: one run of each side, for the held-out numbers; timings include warm-up costs
        runs = {"ours": [warm], "trl": [trl_warm]}
        print("[bench] --repeats 0: the table shows the warm-up runs (held-out numbers; rates include warm-up costs)")
    for i in range(a.repeats):
        runs["ours"].append(ours(f"ours-{i}"))
        runs["trl"].append(run_side(spec | {"output_dir": str(scratch / "out-trl")}, scratch, f"trl-{i}"))
        print(f"[bench] pair {i + 1}/{a.repeats} done", flush=True)
    print(table(a.stage, runs, params, a.peak_tflops if a.gpu else None))


def bench_startup(a: argparse.Namespace, scratch: Path) -> None:
    """Seconds from launching ``python -m alignment stage=sft`` (defaults, its before-training evaluation included)
    to its first training step, median of ``--repeats`` runs after a warm-up."""
    model, _ = model_path(a.model, scratch, False)
    spec = {"side": "ours", "stage": "sft", "seed": 42, "data": str(ROOT / "data" / "sft"), "max_length": 512}
    spec["threads"] = a.threads
    times = []
    for i in range(a.repeats + 1):  # a fresh output dir each time: the same one would be skipped as finished
        out = f"output_dir={scratch / f'out-startup-{i}'}"
        spec["overrides"] = ["stage=sft", f"model.path={model}", "trainer.max_steps=2", out, *a.ours]
        times.append(run_side(spec, scratch, f"startup-{i}")["seconds_to_first_step"])
    times = times[1:]
    print(f"startup seconds to first step: {', '.join(map(str, times))}; median {statistics.median(times)}")


def bench_ppo(a: argparse.Namespace, scratch: Path) -> None:
    """scripts/bench_ppo.py for ours and for trl 1.9.0 (its own venv), alternating after one warm-up each."""
    if not (a.sft and a.rm):
        raise SystemExit("ppo needs --sft RUN/sft/model and --rm RUN/rm/model")
    if not Path(a.trl19_python).exists():
        raise SystemExit(f"--trl19-python {a.trl19_python} does not exist; BENCHMARKS.md shows how to make the venv")
    script = str(ROOT / "scripts" / "bench_ppo.py")
    common = ["--sft", a.sft, "--rm", a.rm, "--out", str(scratch / "ppo"), *shlex.split(a.ppo_args)]
    sides = {"ours": [sys.executable, script, "--impl", "ours"], "trl": [a.trl19_python, script, "--impl", "trl19"]}
    results: dict[str, list[dict]] = {"ours": [], "trl": []}
    for i in range(a.repeats + 1):
        for side, command in sides.items():
            done = subprocess.run([*command, *common], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"[bench] ppo {side} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            line = done.stdout
            if i:
                results[side].append(json.loads(line.strip().splitlines()[-1]))
    for side, rows in results.items():
        print(side, [r["steps_per_second"] for r in rows], [r["oracle_reward"] for r in rows])
    x, y = (statistics.median(r["steps_per_second"] for r in results[s]) for s in ("ours", "trl"))
    print(f"ppo steps/s ours={x:.4f} trl={y:.4f} ratio={x / y:.2f}")


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.gpu:
        import torch

        if not torch.cuda.is_available():
            print("[bench] --gpu: no CUDA device here; skipped")
            return
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{a.stage}-"))
    try:
        {"ppo": bench_ppo, "startup": bench_startup}.get(a.stage, bench_stage)(a, scratch)
    finally:
        if a.keep:
            print(f"[bench] scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark one PPO implementation: ours (``alignment.rl.ppo``) or trl 1.9.0's ``trl.experimental.ppo.PPOTrainer``.

Both sides start from the same SFT model, use the same reward model (which also initialises the value model), the
same embedded training prompts (encoded by the shared data layer), batch sizes, steps, response length, learning
rate, KL coefficient and stop token; then both are scored by the same held-out oracle evaluation. Prints one JSON line
with ``steps_per_second`` (training loop only) and ``oracle_reward`` (after training).

trl 1.9.0 must be importable for ``--impl trl19`` (a separate venv; see BENCHMARKS.md for the exact command):

    python scripts/bench_ppo.py --impl ours --sft RUN/sft/model --rm RUN/rm/model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the trl19 venv does not have our package installed


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=("ours", "trl19"), required=True)
    p.add_argument("--sft", required=True, help="SFT model dir: the policy's and the reference's start")
    p.add_argument("--rm", required=True, help="reward model dir (also the value model's start)")
    p.add_argument("--out", default="/tmp/bench_ppo", help="scratch dir (trl writes its output_dir here)")
    p.add_argument("--steps", type=int, default=20, help="rollout + update iterations")
    p.add_argument("--rollout-batch-size", type=int, default=64)
    p.add_argument("--mini-batch-size", type=int, default=64, help="= rollout size for a like-for-like trl19 run")
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-4, help="one learning rate for policy and value (as trl has)")
    p.add_argument("--kl-coef", type=float, default=0.02)
    p.add_argument("--missing-eos-penalty", type=float, default=1.0)
    p.add_argument("--max-prompts", type=int, default=None, help="use only the first N training prompts")
    p.add_argument(
        "--eval-prompts", type=int, default=None, help="held-out prompts for the oracle (default: config's)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--no-group-by-length",
        dest="group_by_length",
        action="store_false",
        help="ours: dense scoring, update and reward-model forwards (group_by_length=False), for comparison",
    )
    return p.parse_args()


def eval_config(sft: str, eval_prompts: int | None):
    """The repo's default config (held-out oracle evaluation settings, data max_length) via Hydra's compose."""
    from hydra import compose, initialize_config_dir

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR

    register_configs()
    overrides = ["stage=ppo", f"model.path={sft}", "output_dir=/tmp/unused"]
    if eval_prompts:
        overrides.append(f"oracle_eval.num_prompts={eval_prompts}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def prompts(cfg, tokenizer, max_prompts: int | None):
    """Training prompts of the embedded data, encoded by the shared data layer (``prompt_ids``)."""
    from alignment.data import load_train_eval, tokenize_prompts

    rows, _ = load_train_eval(cfg.data, kind="prompt", seed=cfg.seed)
    if max_prompts:
        rows = rows.select(range(min(max_prompts, len(rows))))
    return tokenize_prompts(rows, tokenizer, max_length=cfg.data.max_length)[0]


def load_models(args):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.sft)
    policy = AutoModelForCausalLM.from_pretrained(args.sft)
    ref = AutoModelForCausalLM.from_pretrained(args.sft)
    value = AutoModelForSequenceClassification.from_pretrained(args.rm, num_labels=1)
    return tokenizer, policy, ref, value


def run_ours(args, cfg, tokenizer, policy, ref, value, train) -> tuple[float, int, dict]:
    """Train with our PPOTrainer; returns (seconds in the training loop, steps, mean seconds per step by phase)."""
    from alignment.data import turn_end_token_ids
    from alignment.rewards import build_reward_fn
    from alignment.rl.ppo import PPOSettings, PPOTrainer

    settings = PPOSettings(
        learning_rate=args.lr,
        value_learning_rate=args.lr,
        rollout_batch_size=args.rollout_batch_size,
        mini_batch_size=args.mini_batch_size,
        ppo_epochs=args.ppo_epochs,
        max_steps=args.steps,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        kl_coef=args.kl_coef,
        kl_estimator="k1",
        missing_eos_penalty=args.missing_eos_penalty,
        seed=args.seed,
        group_by_length=args.group_by_length,
    )
    rm = {"type": "model", "path": args.rm, "batch_size": args.rollout_batch_size}
    reward_fn = build_reward_fn([rm | {"group_by_length": args.group_by_length}])
    trainer = PPOTrainer(
        policy=policy,
        ref_policy=ref,
        value_model=value,
        tokenizer=tokenizer,
        reward_fn=reward_fn,
        train_dataset=train,
        settings=settings,
        stop_token_ids=turn_end_token_ids(tokenizer),
    )
    start = time.perf_counter()
    trainer.train()
    phases = {k: sum(h[k] for h in trainer.history) / len(trainer.history) for k in ("time_rollout", "time_update")}
    return time.perf_counter() - start, trainer.step, phases


def run_trl19(args, cfg, tokenizer, policy, ref, value, train) -> tuple[float, int, dict]:
    """Train with trl 1.9.0's experimental PPOTrainer on the same models and prompts."""
    import trl
    from transformers import AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from alignment.data import turn_end_token_ids

    if trl.__version__ != "1.9.0":
        raise SystemExit(f"--impl trl19 needs trl==1.9.0, found {trl.__version__}; use the separate venv")
    if args.mini_batch_size != args.rollout_batch_size:
        # trl 1.9 accumulates gradients over `gradient_accumulation_steps` micro-batches *across* its minibatches, so
        # only one minibatch per rollout gives the same optimiser steps as ours.
        raise SystemExit("--impl trl19 compares like for like only with --mini-batch-size == --rollout-batch-size")
    tokenizer.padding_side = "left"  # trl's collator pads prompts on the tokenizer's side; generation needs left
    reward_model = AutoModelForSequenceClassification.from_pretrained(args.rm, num_labels=1)
    stop = turn_end_token_ids(tokenizer)[0]  # trl takes one stop id: the end-of-turn token
    config = PPOConfig(
        output_dir=str(Path(args.out) / "trl19"),
        learning_rate=args.lr,
        per_device_train_batch_size=args.rollout_batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=args.ppo_epochs,
        total_episodes=args.steps * args.rollout_batch_size,
        local_rollout_forward_batch_size=args.rollout_batch_size,
        response_length=args.max_new_tokens,
        stop_token_id=stop,
        temperature=1.0,
        kl_coef=args.kl_coef,
        kl_estimator="k1",
        missing_eos_penalty=args.missing_eos_penalty,
        num_sample_generations=0,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        seed=args.seed,
        bf16=False,
        use_cpu=True,
    )
    dataset = train.rename_column("prompt_ids", "input_ids").select_columns(["input_ids"])
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value,
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, trainer.state.global_step, {}


def main() -> None:
    import torch

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = eval_config(args.sft, args.eval_prompts)
    tokenizer, policy, ref, value = load_models(args)
    train = prompts(cfg, tokenizer, args.max_prompts)
    runner = run_ours if args.impl == "ours" else run_trl19
    seconds, steps, phases = runner(args, cfg, tokenizer, policy, ref, value, train)

    from alignment.oracle.evaluate import oracle_reward

    reward = oracle_reward(policy, tokenizer, cfg)
    result = {
        "impl": args.impl,
        "group_by_length": args.group_by_length if args.impl == "ours" else None,
        "steps": steps,
        "train_seconds": round(seconds, 2),
        "steps_per_second": round(steps / seconds, 4),
        "oracle_reward": round(reward, 4) if reward is not None else None,
    } | {f"mean_{k}": round(v, 3) for k, v in phases.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

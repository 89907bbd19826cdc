"""One run of scripts/bench.py, in its own process: our stage through the command line's code, or plain TRL.

``ours`` runs ``python -m alignment stage=<stage> ...`` in this process (``alignment.__main__.main``, the same code).
``trl`` is the same TRL trainer as a user writes it: its stock collator, no packing, no length grouping, defaults
everywhere except what both sides share (model, data, learning-rate schedule, rows per step, steps, max_length, and
the objective's own settings: DPO's beta and loss, GRPO's group size, reply length and KL coefficient).

Both sides are measured by the same hooks, installed on every ``transformers.Trainer`` built in the process: tokens
per optimiser step from the batches ``compute_loss`` sees (real tokens, loss-bearing tokens, padded positions,
rows), the time of each step (``on_step_end``), peak memory at the end of training, then one held-out measure
computed the same way for both (:func:`held_out`). Writes one JSON object to the path given.

    python scripts/bench_worker.py SPEC.json RESULT.json      # SPEC: {"side", "stage", "overrides" | trl settings}
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_held_out import dpo_held_out, read_rows, sft_loss  # noqa: E402


def count_batch(inputs: dict) -> dict[str, int]:
    """Tokens in one training batch: ``tokens`` (not padding), ``loss_tokens`` (with a loss), ``padded`` (positions
    computed, padding included) and ``rows`` (sequences; a DPO or RM pair counts as two)."""
    if "input_ids" not in inputs:  # GRPO/RLOO: prompts and sampled completions
        prompt, completion = inputs["prompt_mask"], inputs["completion_mask"]
        tokens = int(prompt.sum() + completion.sum())
        padded = prompt.numel() + completion.numel()
        return {"tokens": tokens, "loss_tokens": int(completion.sum()), "padded": padded, "rows": prompt.shape[0]}
    ids = inputs["input_ids"]
    mask, positions = inputs.get("attention_mask"), inputs.get("position_ids")
    if mask is not None:
        tokens, rows = int(mask.sum()), ids.shape[0]
    else:  # padding-free: one flattened sequence, each row starting at position 0
        tokens = ids.numel()
        rows = int((positions == 0).sum()) if positions is not None else ids.shape[0]
    if "completion_mask" in inputs:
        loss_tokens = int(inputs["completion_mask"].sum())
    elif "labels" in inputs:
        loss_tokens = int((inputs["labels"][..., 1:] != -100).sum())
    else:  # reward model: the score reads the whole sequence
        loss_tokens = tokens
    return {"tokens": tokens, "loss_tokens": loss_tokens, "padded": ids.numel(), "rows": rows}


# Trainer arguments a run reports, for the other side to share.
SHARED_ARGS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_steps",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "beta",
    "loss_type",
    "num_generations",
    "max_completion_length",
    "temperature",
)


class Meter:
    """Per-step token counts and times of the trainer that trains in this process."""

    def __init__(self, evaluate) -> None:
        self.evaluate = evaluate
        self.totals = {"tokens": 0, "loss_tokens": 0, "padded": 0, "rows": 0}
        self.steps: list[dict] = []
        self.first_step_at: float | None = None
        self.result: dict = {}
        self.result_extra: dict = {}

    def attach(self, trainer) -> None:
        from transformers import TrainerCallback

        meter = self
        compute_loss, train = trainer.compute_loss, trainer.train

        def counted_compute_loss(model, inputs, *args, **kwargs):
            if model.training:
                for k, v in count_batch(inputs).items():
                    meter.totals[k] += v
            return compute_loss(model, inputs, *args, **kwargs)

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if meter.first_step_at is None:
                    meter.first_step_at = time.time()

            def on_step_end(self, args, state, control, **kwargs):
                meter.steps.append({"t": time.perf_counter(), **meter.totals})

        def measured_train(*args, **kwargs):
            out = train(*args, **kwargs)
            meter.finish(trainer)
            return out

        trainer.compute_loss, trainer.train = counted_compute_loss, measured_train
        trainer.add_callback(Clock())
        dataset = getattr(trainer, "train_dataset", None)
        if "seq_lengths" in (getattr(dataset, "column_names", None) or []):  # packed: rows in each sequence
            lengths = dataset["seq_lengths"]
            self.result_extra = {"rows_per_sequence": sum(map(len, lengths)) / len(lengths)}

    def finish(self, trainer) -> None:
        import torch

        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        args = trainer.args
        self.result = {
            "rates": rates(self.steps),
            "peak_memory_mb": round(peak, 1),
            "args": {k: getattr(args, k, None) for k in SHARED_ARGS}
            | {"lr_scheduler_type": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)},
        }
        self.result |= self.result_extra
        trainer.model.eval()
        with torch.no_grad():
            self.result["held_out"] = self.evaluate(trainer)


def rates(steps: list[dict]) -> dict[str, float]:
    """Tokens/s and time per step over every step after the first (the first carries one-off set-up)."""
    if len(steps) < 2:
        return {}
    first, last = steps[0], steps[-1]
    seconds, n = last["t"] - first["t"], len(steps) - 1
    times = sorted(b["t"] - a["t"] for a, b in zip(steps, steps[1:], strict=False))
    return {
        "steps": len(steps),
        "tokens_per_s": (last["tokens"] - first["tokens"]) / seconds,
        "loss_tokens_per_s": (last["loss_tokens"] - first["loss_tokens"]) / seconds,
        "s_per_step": seconds / n,
        "median_s_per_step": times[len(times) // 2],
        "rows_per_step": (last["rows"] - first["rows"]) / n,
        "tokens_per_step": (last["tokens"] - first["tokens"]) / n,
        "padding_share": 1 - (last["tokens"] - first["tokens"]) / max(1, last["padded"] - first["padded"]),
    }


def held_out(stage: str, spec: dict):
    """The measure both sides are judged by, computed by the same code on the trained model."""

    def sft(trainer) -> dict:
        return sft_loss(trainer.model, trainer.processing_class, read_rows(spec["data"]), spec["max_length"])

    def trainer_eval(trainer) -> dict:  # the trainer's own evaluation, same eval batch size on both sides
        metrics = trainer.evaluate()
        keep = ("eval_loss", "eval_accuracy", "eval_rewards/accuracies", "eval_rewards/margins")
        return {k.replace("eval_rewards/", "eval_"): metrics[k] for k in keep if k in metrics}

    def dpo(trainer) -> dict:  # the shared DPO measure; the trainer's own numbers kept aside (not the same quantity)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = trainer.model
        param = next(model.parameters())
        reference = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=param.dtype).to(param.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        rows = read_rows(spec["data"])
        shared = dpo_held_out(model, reference, tokenizer, rows, spec["max_length"], trainer.args.beta)
        return shared | {"trainer_eval": trainer_eval(trainer)}

    def online(trainer) -> dict:  # GRPO: the mean reward of the last logged steps
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        return {"reward_last": sum(rewards[-3:]) / len(rewards[-3:])} if rewards else {}

    return {"sft": sft, "dpo": dpo, "rm": trainer_eval, "grpo": online}[stage]


def run_ours(spec: dict) -> None:
    from alignment.__main__ import main

    sys.argv = ["alignment", *spec["overrides"]]
    main()


def run_trl(spec: dict) -> None:
    """The plain TRL run: about twenty lines per stage, as in TRL's own examples."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    stage, data = spec["stage"], Path(spec["data"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    common = {
        "output_dir": spec["output_dir"],
        "learning_rate": spec["learning_rate"],
        "lr_scheduler_type": spec["lr_scheduler_type"],
        "warmup_steps": spec["warmup_steps"],
        "weight_decay": spec["weight_decay"],
        "per_device_train_batch_size": spec["batch_rows"],
        "per_device_eval_batch_size": spec.get("eval_batch", 8),
        "max_steps": spec["steps"],
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "seed": spec["seed"],
        "bf16": spec.get("bf16", False),
        "disable_tqdm": True,
    }
    if stage in ("sft", "dpo", "rm"):
        files = {"train": str(data / "train.jsonl"), "test": str(data / "test.jsonl")}
        raw = datasets.load_dataset("json", data_files=files)
    if stage == "sft":
        from trl import SFTConfig, SFTTrainer

        from alignment.data import tokenize_sft

        # The same tokens and loss masks as ours (assistant turns and their end-of-turn), from the shared encoder.
        train = tokenize_sft(raw["train"], tokenizer, max_length=spec["max_length"])[0]
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(spec["model"]),
            args=SFTConfig(**common, max_length=spec["max_length"]),
            train_dataset=train.select_columns(["input_ids", "labels"]),
            processing_class=tokenizer,
        )
    elif stage == "dpo":
        from trl import DPOConfig, DPOTrainer

        cols = ["prompt", "chosen", "rejected"]
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(spec["model"]),
            args=DPOConfig(**common, max_length=spec["max_length"], beta=spec["beta"], loss_type=spec["loss_type"]),
            train_dataset=raw["train"].select_columns(cols),
            eval_dataset=raw["test"].select_columns(cols),
            processing_class=tokenizer,
        )
    elif stage == "rm":
        from trl import RewardConfig, RewardTrainer

        cols = ["prompt", "chosen", "rejected"]
        model = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**common, max_length=spec["max_length"]),
            train_dataset=raw["train"].select_columns(cols),
            eval_dataset=raw["test"].select_columns(cols),
            processing_class=tokenizer,
        )
    elif stage == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        from alignment.oracle import score

        def oracle_reward(completions, oracle, **_):
            return [score(o, c) or 0.0 for o, c in zip(oracle, completions, strict=True)]

        prompts = datasets.load_dataset("json", data_files=str(data / "train.jsonl"))["train"]
        settings = {k: spec[k] for k in ("num_generations", "max_completion_length", "temperature", "beta")}
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(spec["model"]),
            reward_funcs=oracle_reward,
            args=GRPOConfig(**common, **settings),
            train_dataset=prompts.select_columns(["prompt", "oracle"]),
            processing_class=tokenizer,
        )
    else:
        raise SystemExit(f"no TRL baseline for stage {stage}")
    trainer.train()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out = Path(sys.argv[2])
    import torch

    torch.manual_seed(spec["seed"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from transformers import Trainer

    meter = Meter(held_out(spec["stage"], spec))
    init = Trainer.__init__

    def measured_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        meter.attach(self)

    Trainer.__init__ = measured_init
    (run_ours if spec["side"] == "ours" else run_trl)(spec)
    if not meter.result:
        raise SystemExit("no trainer trained in this run")
    launched = float(os.environ.get("BENCH_LAUNCHED_AT", "nan"))
    meter.result["seconds_to_first_step"] = round(meter.first_step_at - launched, 2)
    out.write_text(json.dumps(meter.result), encoding="utf-8")


if __name__ == "__main__":
    main()

"""scripts/bench.py and its pieces: the skewed data, token counting on TRL's own batches, rates, the TRL side's
settings, the table's last line, the config our side runs, the shared held-out measures, and the GPU flag without a
GPU. No timings."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _load_script(name: str):
    sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_script("bench")
bench_data = _load_script("bench_data")
worker = _load_script("bench_worker")
held_out = _load_script("bench_held_out")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_skewed_sft_rows_are_long_tailed_multi_turn_and_deterministic(tmp_path):
    a = bench_data.write("sft", tmp_path / "a", 400, 20, seed=3)
    b = bench_data.write("sft", tmp_path / "b", 400, 20, seed=3)
    assert (a / "train.jsonl").read_bytes() == (b / "train.jsonl").read_bytes()
    rows = _rows(a / "train.jsonl")
    assert len(rows) == 400 and len(_rows(a / "test.jsonl")) == 20
    turns = sorted(sum(m["role"] == "assistant" for m in r["messages"]) for r in rows)
    # Most rows short, a tail many times longer than the median.
    assert turns[len(turns) // 2] <= 3 and turns[-1] >= 4 * turns[len(turns) // 2]
    for r in rows:
        roles = [m["role"] for m in r["messages"]]
        assert "system" not in roles[1:], "only the first joined chat keeps its system prompt"
        assert roles[-1] == "assistant"
    assert any(any("\u4e00" <= ch <= "\u9fff" for m in r["messages"] for ch in m["content"]) for r in rows)


def test_join_count_follows_the_zipf_law():
    import random

    rng = random.Random(0)
    counts = Counter(bench_data.join_count(rng, 12) for _ in range(20000))
    total = sum(k**-bench_data.ZIPF_EXPONENT for k in range(1, 13))
    assert abs(counts[1] / 20000 - 1 / total) < 0.02
    assert counts[1] > counts[2] > counts[4] > counts[8] > 0 and max(counts) == 12


def test_skewed_preference_rows_end_with_the_pairs_prompt(tmp_path):
    out = bench_data.write("preference", tmp_path, 200, 10, seed=1)
    prompts: dict[str, list] = {}
    for p in _rows(REPO / "data" / "preference" / "train.jsonl"):
        tail = [m for m in p["prompt"] if m["role"] != "system"]
        prompts.setdefault(json.dumps([p["chosen"], p["rejected"]]), []).append(tail)
    rows = _rows(out / "train.jsonl")
    assert max(len(r["prompt"]) for r in rows) > 8
    for r in rows:
        tails = prompts[json.dumps([r["chosen"], r["rejected"]])]
        assert any(r["prompt"][-len(t) :] == t for t in tails)


def test_counts_of_trl_padded_and_padding_free_batches():
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = [{"input_ids": list(range(1, 6)), "labels": [-100, -100, 3, 4, 5]}, {"input_ids": [7, 8], "labels": [7, 8]}]
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(rows)
    # Loss-bearing: labels past the first position (the model shifts): 3 + 1.
    assert worker.count_batch(padded) == {"tokens": 7, "loss_tokens": 4, "padded": 10, "rows": 2}
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    # Padding-free: no padding; the second row's first label is dropped by TRL at the row boundary.
    assert worker.count_batch(flat) == {"tokens": 7, "loss_tokens": 4, "padded": 7, "rows": 2}


def test_counts_of_preference_and_online_batches():
    dpo = {
        "input_ids": torch.ones(4, 6, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0], [1] * 3 + [0] * 3]),
        "completion_mask": torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0], [0] * 6]),
    }
    assert worker.count_batch(dpo) == {"tokens": 18, "loss_tokens": 10, "padded": 24, "rows": 4}
    rm = {k: dpo[k] for k in ("input_ids", "attention_mask")}
    assert worker.count_batch(rm)["loss_tokens"] == 18
    grpo = {"prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]), "completion_mask": torch.tensor([[1, 1], [1, 0]])}
    assert worker.count_batch(grpo) == {"tokens": 8, "loss_tokens": 3, "padded": 10, "rows": 2}


def test_rates_skip_the_first_step():
    steps = [
        {"t": 10.0, "tokens": 100, "loss_tokens": 40, "padded": 200, "rows": 4},
        {"t": 12.0, "tokens": 300, "loss_tokens": 140, "padded": 400, "rows": 8},
        {"t": 16.0, "tokens": 500, "loss_tokens": 240, "padded": 600, "rows": 12},
    ]
    r = worker.rates(steps)
    assert r["tokens_per_s"] == 400 / 6 and r["loss_tokens_per_s"] == 200 / 6
    assert r["s_per_step"] == 3.0 and r["median_s_per_step"] == 4.0 and r["rows_per_step"] == 4.0
    assert r["padding_share"] == 0.0
    assert worker.rates(steps[:1]) == {}


def test_trl_side_shares_our_schedule_and_rows_per_step():
    args = {"learning_rate": 5e-4, "lr_scheduler_type": "cosine", "warmup_steps": 10, "weight_decay": 0.0}
    args |= {"per_device_eval_batch_size": 32, "beta": 0.2, "loss_type": ["sigmoid", "sft"]}
    warm = {"args": args, "rates": {"rows_per_step": 32.0}}
    spec = bench.trl_spec("dpo", warm, {"stage": "dpo", "steps": 7})
    assert spec["side"] == "trl" and spec["batch_rows"] == 16 and spec["steps"] == 7  # 32 sequences = 16 pairs
    assert spec["learning_rate"] == 5e-4 and spec["beta"] == 0.2 and spec["loss_type"] == ["sigmoid", "sft"]
    assert bench.trl_spec("sft", warm | {"rates": {"rows_per_step": 6.4}}, {})["batch_rows"] == 6
    # Packed SFT: rows per sequence over the whole packed train set, times the sequences per step.
    packed = {"rows_per_sequence": 3.6, "rates": {"rows_per_step": 5.0}}
    packed["args"] = args | {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}
    assert bench.trl_spec("sft", packed, {})["batch_rows"] == 7


def test_table_last_line_is_the_loss_bearing_ratio():
    def run(loss_tps, eval_loss):
        rates = {"loss_tokens_per_s": loss_tps, "tokens_per_s": 2 * loss_tps, "s_per_step": 1.0}
        return {"rates": rates, "held_out": {"eval_loss": eval_loss}, "peak_memory_mb": 100.0}

    runs = {"ours": [run(300, 1.0), run(200, 1.0), run(250, 1.0)], "trl": [run(100, 1.1), run(150, 1.2), run(90, 1.1)]}
    text = bench.table("sft", runs, params=1000, gpu_peak=None)
    assert text.splitlines()[-1] == "sft tokens/s ours=250 trl=100 ratio=2.50"
    assert "3.00, 1.33, 2.78" in text and "| ours | 250 | 500 |" in text and "1.1000" in text


def test_our_overrides_compose_into_a_valid_config(tmp_path):
    from hydra import compose, initialize_config_dir

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR

    register_configs()
    for stage in ("sft", "dpo", "rm", "grpo"):
        overrides = bench.our_overrides(stage, "/m", tmp_path, 5, 256, tmp_path / "out")
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        assert cfg.trainer.max_steps == 5 and cfg.data.max_length == 256 and cfg.stage == stage
        assert cfg.oracle_eval.enabled is False and cfg.evaluate_before is False
        assert cfg.data.eval_split == "test"  # both sides train on every train row, judged on test.jsonl


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs the GPU benchmark on a GPU")
def test_gpu_flag_skips_cleanly_without_a_gpu(capsys):
    bench.main(["sft", "--gpu"])
    assert "no CUDA device here; skipped" in capsys.readouterr().out


def test_dpo_measures_from_reply_log_probs():
    # Pair 1: chosen up 1 nat, rejected down 1 nat against the reference: margin beta * 2 = 1. Pair 2: the reverse.
    policy, reference = [(-1.0, -3.0), (-4.0, -1.0)], [(-2.0, -2.0), (-3.0, -2.0)]
    m = held_out.dpo_measures(policy, reference, chosen_tokens=10, beta=0.5)
    assert m["eval_margin"] == pytest.approx((1.0 - 1.0) / 2) and m["eval_accuracy"] == 0.5 and m["eval_pairs"] == 2
    assert m["eval_loss"] == pytest.approx((math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2)
    assert m["eval_chosen_nll"] == pytest.approx(5.0 / 10)
    # A very negative margin: the loss is the margin's size, not an overflow.
    assert held_out.dpo_measures([(-100.0, 0.0)], [(0.0, 0.0)], 1, 1.0)["eval_loss"] == pytest.approx(100.0)


def _pair_rows() -> list[dict]:
    rows = [json.loads(line) for line in (REPO / "data" / "preference" / "test.jsonl").read_text().splitlines()]
    return rows[:3]


def test_shared_pairs_end_at_end_of_turn_and_log_probs_are_the_replies():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.tiny_model import tiny_model_dir

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir()).eval()
    pairs = held_out.encode_pairs(tokenizer, _pair_rows(), max_length=512)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(pairs) == 3 and all(p["chosen_ids"][-1] == end and p["rejected_ids"][-1] == end for p in pairs)
    p = pairs[0]
    ids = torch.tensor([p["prompt_ids"] + p["chosen_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    n = len(p["prompt_ids"])
    expected = sum(float(logp[i - 1, ids[0, i]]) for i in range(n, ids.shape[1]))
    assert held_out.pair_log_probs(model, pairs[:1])[0][0] == pytest.approx(expected, abs=1e-4)
    # A model against itself: every margin 0, so loss log 2, accuracy 0 (a tie is not a win), margin 0.
    same = held_out.dpo_held_out(model, model, tokenizer, _pair_rows(), 512, beta=0.1)
    assert same["eval_loss"] == pytest.approx(math.log(2)) and same["eval_margin"] == 0.0
    assert same["eval_accuracy"] == 0.0 and same["eval_pairs"] == 3
    chosen_tokens = sum(len(q["chosen_ids"]) for q in pairs)
    nll = -sum(c for c, _ in held_out.pair_log_probs(model, pairs)) / chosen_tokens
    assert same["eval_chosen_nll"] == pytest.approx(nll)


def test_table_shows_the_shared_measure_and_the_trainers_own_apart():
    def run(loss):
        rates = {"loss_tokens_per_s": 100.0, "tokens_per_s": 200.0, "s_per_step": 1.0}
        own = {"eval_loss": loss + 3, "eval_accuracy": 0.6}
        return {"rates": rates, "held_out": {"eval_loss": loss, "trainer_eval": own}, "peak_memory_mb": 1.0}

    text = bench.table("dpo", {"ours": [run(0.5)], "trl": [run(0.6)]}, params=1, gpu_peak=None)
    header = text.splitlines()[0]
    assert "eval_loss" in header and "trainer_" not in header
    assert "| ours |" in text and "0.5000 |" in text and "0.6000 |" in text
    assert "ours eval_loss=3.5000 eval_accuracy=0.6000; trl eval_loss=3.6000 eval_accuracy=0.6000" in text

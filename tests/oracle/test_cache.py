"""An oracle evaluation identical to an earlier one (same weights, tokenizer, prompts and settings) is read back from
the cache, scores and samples file alike, without sampling; any change to what decides the replies samples again."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.config import register_configs
from alignment.oracle import cache
from alignment.oracle import evaluate as oracle_evaluate
from alignment.oracle.evaluate import evaluate_oracle
from alignment.paths import CONF_DIR, DATA_DIR
from alignment.tiny_model import SHIPPED_DIR

register_configs()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return AutoTokenizer.from_pretrained(SHIPPED_DIR), AutoModelForCausalLM.from_pretrained(SHIPPED_DIR)


@pytest.fixture
def prompts_dir(tmp_path):
    """Four held-out prompt rows (with their oracle column) in a folder of their own, to edit."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    lines = (DATA_DIR / "prompts" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_warned", False)
    return tmp_path / "cache" / "oracle"


@pytest.fixture
def sampler_calls(monkeypatch) -> list[int]:
    """Each call of the sampler, recorded (the number of prompts it was given); the real sampler still runs."""
    calls: list[int] = []
    real = oracle_evaluate.sample_replies

    def spy(model, tokenizer, prompts, **kwargs):
        calls.append(len(prompts))
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(oracle_evaluate, "sample_replies", spy)
    return calls


def _cfg(prompts, *overrides: str):
    fast = [f"oracle_eval.path={prompts}", "oracle_eval.samples_per_prompt=2", "oracle_eval.max_new_tokens=16"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["stage=sft", *fast, *overrides])


def test_the_same_evaluation_again_is_read_back_without_sampling(
    tiny, prompts_dir, tmp_path, own_cache, sampler_calls
):
    tokenizer, model = tiny
    cfg = _cfg(prompts_dir)
    first = evaluate_oracle(model, tokenizer, cfg, samples_path=tmp_path / "first.jsonl")
    assert sampler_calls == [4] and not first.from_cache
    assert first.scores["oracle_samples"] == 8  # 4 prompts x 2 samples, all scored
    assert len(list(own_cache.glob("*.json"))) == 1

    second = evaluate_oracle(model, tokenizer, cfg, samples_path=tmp_path / "second.jsonl")
    assert sampler_calls == [4]  # not sampled again
    assert second.from_cache and second.scores == first.scores
    assert (tmp_path / "second.jsonl").read_bytes() == (tmp_path / "first.jsonl").read_bytes()
    rows = [json.loads(line) for line in (tmp_path / "second.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(r["score"] for r in rows) / len(rows) == pytest.approx(second.scores["oracle_reward"])


def test_a_changed_weight_temperature_or_prompt_samples_again(tiny, prompts_dir, tmp_path, own_cache, sampler_calls):
    tokenizer, model = tiny
    cfg = _cfg(prompts_dir)
    evaluate_oracle(model, tokenizer, cfg)
    assert len(sampler_calls) == 1

    evaluate_oracle(model, tokenizer, _cfg(prompts_dir, "oracle_eval.temperature=0.7"))
    assert len(sampler_calls) == 2

    changed = AutoModelForCausalLM.from_pretrained(SHIPPED_DIR)
    with torch.no_grad():
        weight = changed.get_input_embeddings().weight
        weight[5, 3] = torch.nextafter(weight[5, 3], torch.tensor(float("inf")))  # one float, one ulp
    assert evaluate_oracle(changed, tokenizer, cfg).from_cache is False
    assert len(sampler_calls) == 3

    assert evaluate_oracle(model, tokenizer, _cfg(prompts_dir, "oracle_eval.temperature=0.7")).from_cache
    assert len(sampler_calls) == 3  # the earlier entries are all still there

    path = prompts_dir / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows[2]["prompt"][-1]["content"] += " Please."
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert evaluate_oracle(model, tokenizer, cfg).from_cache is False
    assert len(sampler_calls) == 4
    assert len(list(own_cache.glob("*.json"))) == 4  # one entry per distinct evaluation


def test_cache_false_always_samples_and_stores_nothing(tiny, prompts_dir, tmp_path, own_cache, sampler_calls):
    tokenizer, model = tiny
    cfg = _cfg(prompts_dir, "oracle_eval.cache=false")
    a = evaluate_oracle(model, tokenizer, cfg, samples_path=tmp_path / "a.jsonl")
    b = evaluate_oracle(model, tokenizer, cfg, samples_path=tmp_path / "b.jsonl")
    assert sampler_calls == [4, 4]
    assert not a.from_cache and not b.from_cache
    assert a.scores == b.scores  # the sampler is seeded: the cache stores what sampling would give
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert not own_cache.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: json.dumps(json.loads(text) | {"scores": {"oracle_reward": "high"}}),
        lambda text: json.dumps(json.loads(text) | {"key": "0" * 64}),
    ],
    ids=["truncated", "non-numeric-score", "other-key"],
)
def test_a_corrupt_cache_file_is_a_miss(tiny, prompts_dir, tmp_path, own_cache, sampler_calls, caplog, damage):
    tokenizer, model = tiny
    cfg = _cfg(prompts_dir)
    first = evaluate_oracle(model, tokenizer, cfg, samples_path=tmp_path / "first.jsonl")
    (entry,) = own_cache.glob("*.json")
    entry.write_text(damage(entry.read_text(encoding="utf-8")), encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="alignment"):
        again = evaluate_oracle(model, tokenizer, cfg, samples_path=tmp_path / "again.jsonl")
    assert sampler_calls == [4, 4] and not again.from_cache
    assert again.scores == first.scores
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "first.jsonl").read_bytes()
    (warning,) = [r.getMessage() for r in caplog.records if "oracle evaluation cache" in r.getMessage()]
    assert warning.startswith(f"oracle evaluation cache: could not read {entry} (")
    assert warning.endswith("; evaluating without it")
    # The sampled evaluation replaced the damaged entry: the next one is a hit.
    assert evaluate_oracle(model, tokenizer, cfg).from_cache and sampler_calls == [4, 4]


def test_several_ranks_always_sample(tiny, prompts_dir, own_cache, sampler_calls, monkeypatch):
    """Under DDP or ZeRO-3 every rank samples (ZeRO-3 needs them all for each forward): no rank reads the cache."""
    tokenizer, model = tiny
    cfg = _cfg(prompts_dir)
    evaluate_oracle(model, tokenizer, cfg)
    assert len(list(own_cache.glob("*.json"))) == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert evaluate_oracle(model, tokenizer, cfg).from_cache is False
    assert sampler_calls == [4, 4]

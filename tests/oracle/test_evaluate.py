"""``oracle_reward`` measures the policy's own distribution: a checkpoint's generation_config.json (top_k,
repetition_penalty, ...) does not change the replies it is scored on, sampled or greedy."""

from __future__ import annotations

import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from alignment.config import register_configs
from alignment.oracle.evaluate import oracle_scores, summarize
from alignment.paths import CONF_DIR
from alignment.tiny_model import SHIPPED_DIR

register_configs()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def plain_and_opinionated(tmp_path_factory):
    """The tiny base model saved twice: with its plain generation config, and with one that sets top_k=1 and
    repetition_penalty=2.0 (with do_sample=true, as Hub checkpoints ship sampling defaults)."""
    root = tmp_path_factory.mktemp("gen-config")
    plain, opinionated = root / "plain", root / "opinionated"
    shutil.copytree(SHIPPED_DIR, plain)
    shutil.copytree(SHIPPED_DIR, opinionated)
    saved = GenerationConfig.from_pretrained(plain)
    saved.do_sample, saved.top_k, saved.repetition_penalty = True, 1, 2.0
    saved.save_pretrained(opinionated)
    assert GenerationConfig.from_pretrained(opinionated).repetition_penalty == 2.0
    load = AutoModelForCausalLM.from_pretrained
    return AutoTokenizer.from_pretrained(plain), load(plain), load(opinionated)


def _cfg(*overrides: str):
    fast = ["oracle_eval.num_prompts=6", "oracle_eval.samples_per_prompt=2", "oracle_eval.max_new_tokens=24"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["stage=sft", *fast, *overrides])


def _replies(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("greedy", [False, True])
def test_a_checkpoints_generation_defaults_do_not_change_oracle_reward(plain_and_opinionated, tmp_path, greedy):
    tokenizer, plain, opinionated = plain_and_opinionated
    # Same weights, tokenizer and settings: without cache=false the second would be read back, not sampled.
    cfg = _cfg(f"oracle_eval.greedy={str(greedy).lower()}", "oracle_eval.cache=false")
    a = oracle_scores(plain, tokenizer, cfg, samples_path=tmp_path / "plain.jsonl")
    b = oracle_scores(opinionated, tokenizer, cfg, samples_path=tmp_path / "opinionated.jsonl")
    assert a["oracle_reward"] > 0  # the base model solves some prompts: equal scores are not two zeros
    assert a == b
    assert _replies(tmp_path / "plain.jsonl") == _replies(tmp_path / "opinionated.jsonl")
    assert opinionated.generation_config.repetition_penalty == 2.0  # the model's own config is left as it was


def test_the_saved_defaults_would_change_replies_if_generate_used_them(plain_and_opinionated):
    """What the test above guards against: plain ``generate`` applies the checkpoint's settings."""
    tokenizer, plain, opinionated = plain_and_opinionated
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Repeat the word 'cat' five times."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    outputs = [m.generate(**ids, do_sample=False, max_new_tokens=24) for m in (plain, opinionated)]
    assert not torch.equal(outputs[0], outputs[1])


def test_oracle_reward_is_the_mean_of_scored_replies_and_per_task_the_mean_of_each_family():
    tasks = ["identity", "identity", "chat", "chat", "chat", "sentiment"]
    scores = [1.0, 0.5, 0.0, None, 1.0, 0.25]  # None: the oracle could not score that reply
    got = summarize(tasks, scores)
    assert got == {
        "oracle_reward": (1.0 + 0.5 + 0.0 + 1.0 + 0.25) / 5,
        "oracle_reward/chat": 0.5,
        "oracle_reward/identity": 0.75,
        "oracle_reward/sentiment": 0.25,
    }
    assert summarize(["chat", "chat"], [0.5, 1.0]) == {"oracle_reward": 0.75}  # one family: no breakdown
    assert summarize([None, None], [0.5, 1.0]) == {"oracle_reward": 0.75}  # specs without a task
    assert summarize(["chat"], [None]) == {}  # nothing scored: no metric

"""Every stage through the CLI on stand-ins for real model families (Llama 3, Mistral, Gemma 3, Phi-3, Qwen3).

One ``python -m alignment`` per family runs a pipeline of all stages, chained as users chain them: rm, dpo, kto and
orpo from the SFT model; ppo and grpo from it with the rm as reward (ppo's value model too), rloo with the oracle.
The stand-ins (tests/families.py) carry each family's tokenizer conventions: no pad token (Llama 3, Mistral), bos
written by the template and prepended by the tokenizer, end of turn other than eos (Gemma 3, Phi-3), <think> blocks
(Qwen3).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli_env, read_metrics, run_cli
from tests.families import FAMILIES, base_tokenizer, build_family, chat_template, corpus

pytestmark = pytest.mark.slow

STAGES = ("sft", "rm", "ppo", "dpo", "kto", "orpo", "grpo", "rloo")
# pipeline=rlhf is sft -> rm -> ppo; the other stages are added as steps, each with its inputs.
EXTRA_STEPS = [
    "+pipeline.steps.dpo={stage:dpo,inputs:{model:sft,ref_model:sft}}",
    "+pipeline.steps.kto={stage:kto,inputs:{model:sft,ref_model:sft}}",
    "+pipeline.steps.orpo={stage:orpo,inputs:{model:sft}}",
    "+pipeline.steps.grpo={stage:grpo,inputs:{model:sft,reward_model:rm}}",
    "+pipeline.steps.rloo={stage:rloo,inputs:{model:sft}}",
]
SFT_STEPS = 30
# Two steps of every stage but SFT, on small batches; SFT trains long and fast enough for its loss to fall clearly.
SETTINGS = [
    "pipeline.compare=false",
    "trainer.max_steps=2",
    "data.max_train_rows=64",
    "data.max_eval_rows=8",
    "data.max_length=256",
    "oracle_eval.num_prompts=4",
    "oracle_eval.samples_per_prompt=1",
    "oracle_eval.max_new_tokens=8",
    f"+pipeline.steps.sft.trainer.max_steps={SFT_STEPS}",
    "+pipeline.steps.sft.trainer.logging_steps=5",
    "+pipeline.steps.sft.trainer.warmup_steps=0",
    "+pipeline.steps.sft.trainer.learning_rate=0.01",
    "+pipeline.steps.sft.trainer.lr_scheduler_type=constant",
    *(f"+pipeline.steps.{s}.trainer.per_device_train_batch_size=4" for s in ("rm", "dpo", "kto", "orpo")),
    "+pipeline.steps.ppo.trainer.rollout_batch_size=4",
    "+pipeline.steps.ppo.trainer.mini_batch_size=2",
    "+pipeline.steps.ppo.trainer.ppo_epochs=1",
    "+pipeline.steps.ppo.trainer.max_new_tokens=8",
    *(f"+pipeline.steps.{s}.trainer.per_device_train_batch_size=4" for s in ("grpo", "rloo")),
    *(f"+pipeline.steps.{s}.trainer.num_generations=2" for s in ("grpo", "rloo")),
    *(f"+pipeline.steps.{s}.trainer.max_completion_length=8" for s in ("grpo", "rloo")),
]
LORA_FAMILY = "llama3"  # every stage of this family trains LoRA adapters


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """Builds one family's model dir on demand; the BPE vocabulary is trained once for all."""
    root = tmp_path_factory.mktemp("families")
    base = base_tokenizer(corpus())
    return lambda name: build_family(FAMILIES[name], root / name, base)


def _losses(stage_dir) -> list[float]:
    rows = [json.loads(line) for line in (stage_dir / "log_history.jsonl").read_text(encoding="utf-8").splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_stage_runs_on_the_family_and_sft_learns(family, stand_in, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from alignment.data import encode_chat, encode_prompt, turn_end_token_ids

    spec = FAMILIES[family]
    peft = ["peft=lora"] if family == LORA_FAMILY else []
    args = ["pipeline=rlhf", "model=hf", f"model.path={stand_in(family)}", f"output_dir={tmp_path}"]
    run_cli(*args, *EXTRA_STEPS, *SETTINGS, *peft, env=cli_env(OMP_NUM_THREADS="1"))

    manifest = json.loads((tmp_path / "pipeline.json").read_text(encoding="utf-8"))
    assert [(s["name"], s["status"]) for s in manifest["steps"]] == [(s, "done") for s in STAGES]
    for stage in STAGES:
        metrics = read_metrics(tmp_path / stage)
        assert metrics["global_step"] == (SFT_STEPS if stage == "sft" else 2), stage
        if peft:
            assert (tmp_path / stage / "adapter" / "adapter_config.json").exists(), stage
            assert metrics["trainable_params"] < metrics["total_params"], stage

    losses = _losses(tmp_path / "sft")
    assert len(losses) == SFT_STEPS // 5
    assert losses[-1] < losses[0] - 0.2, losses

    # The saved SFT model keeps the family's conventions and can be used: a pad token that is neither eos nor the
    # end of turn (Llama 3 and Mistral ship none), inside the embeddings; bos once at the start where it has one.
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "sft" / "model")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "model")
    assert type(model).__name__ == spec.model_class
    stops = {tokenizer.convert_tokens_to_ids(t) for t in (spec.eos, spec.end_of_turn)}
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in stops
    assert tokenizer.pad_token_id < model.get_input_embeddings().num_embeddings
    assert tokenizer.chat_template == chat_template(spec.template)
    # The reward model reads its score at the last token that is not pad: its config must name the same pad.
    rm_config = AutoConfig.from_pretrained(tmp_path / "rm" / "model")
    assert rm_config.pad_token_id == AutoTokenizer.from_pretrained(tmp_path / "rm" / "model").pad_token_id
    # Every reply is trained through its end of turn, which is also what generation stops on first.
    end = tokenizer.convert_tokens_to_ids(spec.end_of_turn)
    chat = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "答案 is 42."}] * 2
    encoded = encode_chat(tokenizer, chat)
    trained = [t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != -100]
    assert trained.count(end) == 2 and trained[-1] == end
    assert turn_end_token_ids(tokenizer)[0] == end
    prompt = encode_prompt(tokenizer, chat[:1])
    if spec.bos:  # the template writes it and the tokenizer would prepend it again; Phi-3's template writes none
        bos = tokenizer.convert_tokens_to_ids(spec.bos)
        assert prompt.count(bos) == (1 if spec.tokenizer_adds_bos else 0)
        assert prompt[0] == bos or not spec.tokenizer_adds_bos

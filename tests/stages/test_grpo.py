"""stage=grpo through the CLI: LoRA policy, a weighted reward model + user function, oracle before and after."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignment.stages import grpo
from tests.conftest import FAST, read_metrics, run_cli
from tests.stages.test_ppo import changed_fraction, make_reward_model, write_reward_function
from tests.stages.trainers import compose

pytestmark = pytest.mark.slow

SMALL_GROUP = [
    "trainer.max_steps=2",
    "trainer.per_device_train_batch_size=8",
    "trainer.num_generations=4",
    "trainer.max_completion_length=16",
    "trainer.logging_steps=1",
]


def test_grpo_with_lora_and_a_weighted_reward_model_plus_function(sft_run, tmp_path):
    rm = make_reward_model(sft_run / "model", tmp_path / "rm")
    function = write_reward_function(tmp_path)
    sources = f'[{{type:model,path:"{rm}",weight:1.0}},{{type:function,path:"{function}",weight:0.5}}]'
    run_cli(
        "stage=grpo",
        f"model.path={sft_run / 'model'}",
        f"output_dir={tmp_path / 'run'}",
        "peft=lora",
        f"reward.sources={sources}",
        *SMALL_GROUP,
        *FAST,
    )
    out = tmp_path / "run" / "grpo"
    metrics = read_metrics(out)
    for key in ("oracle_reward", "oracle_reward_before", "global_step", "trainable_params", "total_params"):
        assert key in metrics, key
    assert metrics["global_step"] == 2
    assert metrics["trainable_params"] < 0.5 * metrics["total_params"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    rows = [json.loads(line) for line in (out / "log_history.jsonl").read_text(encoding="utf-8").splitlines()]
    # One logged row per step (logging_steps=1), each with the weighted reward of that step's sampled groups.
    logged = [r for r in rows if "reward" in r]
    assert [r["step"] for r in logged] == [1, 2]
    assert all(math.isfinite(r["reward"]) and math.isfinite(r["reward_std"]) for r in logged)
    before = AutoModelForCausalLM.from_pretrained(sft_run / "model").state_dict()
    merged = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert 0 < changed_fraction(before, merged) < 1  # the merged LoRA moved the adapted projections only


def test_grpo_raises_the_probability_of_the_rewarded_replies(sft_run, tmp_path):
    """Reward the replies whose first token is one of each prompt's second most likely first tokens: four GRPO steps
    (one pass over the prompts) must raise the policy's probability of starting a reply with one of them. Advantages
    of the wrong sign, or a loss that ignores them, would lower it or leave it."""
    cfg = compose(
        "stage=grpo",
        f"model.path={sft_run}",
        f"output_dir={tmp_path}",
        "trainer.num_generations=4",
        "trainer.per_device_train_batch_size=8",
        "trainer.max_completion_length=3",
        "trainer.mask_truncated_completions=false",  # every 3-token reply is cut off: keep them in the loss
        "trainer.max_steps=4",
        "trainer.learning_rate=5e-4",
        "trainer.warmup_steps=0",
        "trainer.logging_steps=1",
        "trainer.save_strategy=no",
        "data.max_train_rows=8",
        "oracle_eval.enabled=false",
    )
    trainer, _ = grpo.build_trainer(cfg, grpo.StageRun(cfg), "grpo")
    prompts = [list(row["prompt_ids"]) for row in trainer.train_dataset]

    @torch.no_grad()
    def first_token_probs() -> torch.Tensor:
        trainer.model.eval()
        probs = torch.stack([trainer.model(input_ids=torch.tensor([p])).logits[0, -1].softmax(-1) for p in prompts])
        trainer.model.train()
        return probs

    before = first_token_probs()
    rewarded = torch.unique(before.topk(2, dim=-1).indices[:, 1])
    chosen = set(rewarded.tolist())

    def reward(prompts, responses, oracle=None, *, prompt_ids=None, completion_ids=None):
        return [1.0 if len(ids) and int(ids[0]) in chosen else 0.0 for ids in completion_ids]

    trainer.reward_funcs[0] = grpo.trl_reward_func(reward)
    trainer.train()
    mass_before, mass_after = before[:, rewarded].sum(-1), first_token_probs()[:, rewarded].sum(-1)
    assert trainer.state.global_step == 4
    assert mass_after.mean() > mass_before.mean() + 0.05, (mass_before.tolist(), mass_after.tolist())
    assert int((mass_after > mass_before).sum()) >= 6, (mass_before.tolist(), mass_after.tolist())
    logged = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    assert len(logged) == 4 and all(0.0 <= r <= 1.0 for r in logged)


@pytest.mark.parametrize(
    ("stage_name", "setting", "masked"),
    [("grpo", None, True), ("rloo", None, True), ("grpo", "trainer.mask_truncated_completions=false", False)],
)
def test_a_truncated_completion_is_left_out_of_the_loss_by_default(sft_run, tmp_path, stage_name, setting, masked):
    """The stage's trainer, built from the stage's default config, gives a reply cut off at max_completion_length
    no loss tokens, and a finished reply every token up to and including its stop token."""

    cfg = compose(
        f"stage={stage_name}",
        f"model.path={sft_run}",
        f"output_dir={tmp_path}",
        "trainer.num_generations=4",
        "trainer.per_device_train_batch_size=8",
        "trainer.max_completion_length=10",
        "data.max_train_rows=8",
        "oracle_eval.enabled=false",
        *([setting] if setting else []),
    )
    trainer, _ = grpo.build_trainer(cfg, grpo.StageRun(cfg), stage_name)
    assert trainer.args.mask_truncated_completions is masked
    trainer.model.train()
    rows = [trainer.train_dataset[i] for i in range(4) for _ in range(4)]
    out = trainer._generate_and_score_completions(rows)
    ids, mask = out["completion_ids"], out["completion_mask"]
    is_stop = torch.isin(ids, torch.tensor(trainer.eos_token_ids))
    finished = is_stop.any(dim=1)
    assert finished.any() and (~finished).any(), "need both finished and cut-off replies to compare"
    first_stop = is_stop.int().argmax(dim=1)
    assert mask[finished].sum(dim=1).tolist() == (first_stop[finished] + 1).tolist()
    truncated_tokens = mask[~finished].sum(dim=1).tolist()
    assert truncated_tokens == ([0] * len(truncated_tokens) if masked else [ids.shape[1]] * len(truncated_tokens))


@pytest.mark.parametrize("stage_name", ["grpo", "rloo"])
def test_sampling_stops_at_the_template_turn_end_when_the_checkpoint_lists_only_eos(tmp_path, stage_name):
    """A Gemma-3 checkpoint whose generation config lists only <eos>: TRL would stop at <eos> alone, never at the
    template's <end_of_turn>. The stage makes TRL stop where oracle evaluation and PPO stop (``stop_token_ids``)."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.data import turn_end_token_ids
    from alignment.generation import stop_token_ids
    from tests.families import build_families

    path = build_families(tmp_path / "families", ["gemma3"])["gemma3"]
    config_file = path / "generation_config.json"
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    eos, end_of_turn = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")
    config_file.write_text(json.dumps({**saved, "eos_token_id": [eos]}), encoding="utf-8")
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.generation_config.eos_token_id == [eos]
    assert stop_token_ids(tokenizer, model) == turn_end_token_ids(tokenizer) == [end_of_turn, eos]
    model.generation_config.eos_token_id = [eos, 7]  # an id only the checkpoint lists is kept, after the turn ends
    assert stop_token_ids(tokenizer, model) == [end_of_turn, eos, 7]

    cfg = compose(
        f"stage={stage_name}",
        f"model.path={path}",
        f"output_dir={tmp_path / 'run'}",
        "model=hf",
        "trainer.num_generations=2",
        "trainer.per_device_train_batch_size=2",
        "data.max_train_rows=4",
        "oracle_eval.enabled=false",
    )
    trainer, _ = grpo.build_trainer(cfg, grpo.StageRun(cfg), stage_name)
    assert end_of_turn in trainer.eos_token_ids and eos in trainer.eos_token_ids


@pytest.mark.parametrize("stage_name", ["grpo", "rloo"])
def test_trl_samples_from_the_data_layer_prompt_ids_and_rewards_receive_the_tokens(sft_run, tmp_path, stage_name):
    """Generation starts from each row's ``prompt_ids`` (encoded once by the data layer, tools included), and the
    reward function receives those ids and the sampled completion ids (a reward model then scores the tokens)."""

    cfg = compose(
        f"stage={stage_name}",
        f"model.path={sft_run}",
        f"output_dir={tmp_path}",
        "trainer.num_generations=2",
        "trainer.per_device_train_batch_size=4",
        "trainer.max_completion_length=6",
        "data.max_train_rows=4",
        "oracle_eval.enabled=false",
    )
    trainer, _ = grpo.build_trainer(cfg, grpo.StageRun(cfg), stage_name)
    rows = [dict(trainer.train_dataset[i]) for i in range(2) for _ in range(2)]
    for row in rows:  # a visibly different encoding: generation must start from exactly these ids
        row["prompt_ids"] = list(row["prompt_ids"])[-5:]
    sampled_from, seen = [], {}
    generate = trainer._generate_single_turn

    def spy_generate(prompt_ids, *args, **kwargs):
        sampled_from.extend(list(p) for p in prompt_ids)
        return generate(prompt_ids, *args, **kwargs)

    def spy_reward(prompts, responses, oracle=None, *, prompt_ids=None, completion_ids=None):
        seen.update(prompt_ids=prompt_ids, completion_ids=completion_ids)
        return [0.0] * len(responses)

    trainer._generate_single_turn = spy_generate
    trainer.reward_funcs[0] = grpo.trl_reward_func(spy_reward)
    trainer.model.train()
    out = trainer._generate_and_score_completions(rows)
    assert sampled_from == [r["prompt_ids"] for r in rows]
    assert [list(p) for p in seen["prompt_ids"]] == [r["prompt_ids"] for r in rows]
    completion_mask = out["completion_mask"]
    got = [list(c) for c in seen["completion_ids"]]
    assert got == [out["completion_ids"][i][: len(got[i])].tolist() for i in range(len(rows))]
    assert all(len(g) >= int(m.sum()) for g, m in zip(got, completion_mask, strict=True))

"""GRPO with TRL's GRPOTrainer: groups of sampled replies per prompt, scored by the configured reward sources.

Prompts go through the shared data layer (``encode_prompt``), so the tokens sampled from are the ones every other
stage uses; rewards come from ``reward.sources`` (reward model, oracle, ``module:function``, weighted). A reply cut
off at ``trainer.max_completion_length`` is left out of the loss by default (``trainer.mask_truncated_completions``):
its reward scores an unfinished answer as if it were finished.
"""

from __future__ import annotations

from omegaconf import DictConfig

from alignment import adapters
from alignment.generation import stop_token_ids
from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path
from alignment.stages.online import SharedPromptEncoding, prompt_data, reward_function, trl_reward_func
from alignment.stages.runner import StageRun


def run(cfg: DictConfig, trainer_name: str = "grpo") -> dict:
    stage = StageRun(cfg)
    trainer, tokenizer = build_trainer(cfg, stage, trainer_name)
    trainable, total = adapters.count_parameters(trainer.model)
    stage.record({"trainable_params": trainable, "total_params": total})

    stage.measure_oracle(trainer.model, tokenizer, suffix="_before")
    stage.train(trainer)
    stage.measure_oracle(trainer.model, tokenizer)
    stage.save_model(trainer.model, tokenizer)
    return stage.finish()


def build_trainer(cfg: DictConfig, stage: StageRun, trainer_name: str = "grpo"):
    """(TRL's GRPO or RLOO trainer on the run's policy, prompts and reward, the tokenizer)."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if trainer_name == "grpo" else (RLOOConfig, RLOOTrainer)

    class Trainer(SharedPromptEncoding, trainer_cls):
        prompt_max_length = cfg.data.max_length

    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, cfg.model)
    policy = load_causal_lm(path, cfg.model, cfg.peft, tokenizer=tokenizer)
    # TRL stops sampling at the generation config's eos ids (plus the tokenizer's eos): make those the template's turn
    # ends too, or a Gemma/Phi-3 checkpoint listing only eos would never stop at end of turn (and, with
    # mask_truncated_completions, every reply would be masked out).
    policy.generation_config.eos_token_id = stop_token_ids(tokenizer, policy)
    adapter = adapters.prepare(policy, cfg.peft, stage=trainer_name)
    train_ds, _ = prompt_data(cfg, tokenizer, stage)
    reward = trl_reward_func(reward_function(cfg, tokenizer))
    reward.__name__ = "reward"
    trainer = Trainer(
        model=policy,
        reward_funcs=[reward],
        args=stage.trainer_args(config_cls),
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=adapter,
    )
    return trainer, tokenizer

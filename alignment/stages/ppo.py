"""PPO, our own (TRL 1.16 has no PPOTrainer): policy from SFT, frozen reference, reward sources, value model.

Recipe: policy and reference (the policy's start, or the adapter-free base under LoRA) -> value model (from the
reward model by default, else ``value_model``, else the policy) -> prompts from the data layer -> rollouts and clipped
updates (``alignment.rl.ppo``) -> oracle reward before and after -> save the policy (``model/``) and the value model
(``value_model/``).
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig, OmegaConf

from alignment.data import turn_end_token_ids
from alignment.errors import AlignmentError
from alignment.models import (
    count_parameters,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
    peft_config,
    resolve_model_path,
)
from alignment.rl.ppo import PPOTrainer, settings_from_dict
from alignment.stages.online import prompt_data, reward_function
from alignment.stages.stage_run import StageRun, write_atomic

log = logging.getLogger("alignment")


def value_model_path(cfg: DictConfig, policy_path: str) -> str:
    """``value_model`` if set, else the first reward model, else the policy (a fresh value head)."""
    if cfg.value_model:
        return str(cfg.value_model)
    for source in cfg.reward.sources:
        if source.type == "model" and source.path:
            return str(source.path)
    return policy_path


def run(cfg: DictConfig) -> dict:
    from peft import get_peft_model

    stage = StageRun(cfg)
    settings = settings_from_dict(OmegaConf.to_container(cfg.trainer, resolve=True) | {"seed": int(cfg.seed)})
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, cfg.model)
    policy = load_causal_lm(path, cfg.model)
    value = load_sequence_classifier(value_model_path(cfg, path), cfg.model, tokenizer)
    adapter = peft_config(cfg.peft)
    reference = None
    if adapter is not None:
        policy = get_peft_model(policy, adapter)
        value = get_peft_model(value, peft_config(cfg.peft, task_type="SEQ_CLS"))
    else:
        reference = load_causal_lm(str(cfg.ref_model) if cfg.ref_model else path, cfg.model)
    if not cfg.reward.sources:
        raise AlignmentError("stage=ppo needs a reward: reward=oracle, reward=model reward.sources.0.path=RUN/rm, ...")
    reward_fn = reward_function(cfg, tokenizer)
    train_ds, _ = prompt_data(cfg, tokenizer, stage)

    trainer = PPOTrainer(
        policy=policy,
        ref_policy=reference,
        value_model=value,
        tokenizer=tokenizer,
        reward_fn=reward_fn,
        train_dataset=train_ds,
        settings=settings,
        stop_token_ids=turn_end_token_ids(tokenizer),
    )
    trainable, total = count_parameters(policy)
    stage.record({"trainable_params": trainable, "total_params": total})

    stage.measure_oracle(policy, tokenizer, suffix="_before")
    final = trainer.train()
    history = trainer.history
    write_atomic(stage.dir / "log_history.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    tail = history[-max(1, len(history) // 10) :]
    stage.record({k: v for k, v in final.items()})
    for key in ("kl", "score", "response_length"):
        if tail and key in tail[0]:
            # the mean over the last tenth of training: one step's value is noisy
            stage.metrics[key] = sum(h[key] for h in tail) / len(tail)
    stage.metrics["global_step"] = trainer.step
    stage.metrics["world_size"] = trainer.accelerator.num_processes
    stage.measure_oracle(policy, tokenizer)
    stage.save_model(policy, tokenizer)
    stage.save_model(value, tokenizer, subdir="value_model")
    return stage.finish()

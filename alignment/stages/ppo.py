"""PPO, our own (TRL 1.16 has no PPOTrainer): policy from SFT, frozen reference, reward sources, value model.

Recipe: policy and reference (the policy's start, or the adapter-free base under LoRA) -> value model (from the
reward model by default, else ``value_model``, else the policy) -> prompts from the data layer -> rollouts and clipped
updates (``alignment.rl.ppo``) -> oracle reward before and after -> save the policy (``model/``) and the value model
(``value_model/``). A reward model that shares the policy's tokenizer scores the sampled tokens themselves, so a reply
cut short is not given an end-of-turn it never produced; one with another tokenizer scores the decoded text.
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig, OmegaConf

from alignment import adapters, interrupt
from alignment.errors import AlignmentError
from alignment.generation import stop_token_ids
from alignment.models import load_causal_lm, load_sequence_classifier, load_tokenizer, locate_model, resolve_model_path
from alignment.rl import checkpoint as checkpoints
from alignment.rl.ppo import PPOTrainer
from alignment.rl.settings import stage_settings
from alignment.secrets import scrub
from alignment.stages.online import prompt_data, reward_function
from alignment.stages.runner import StageRun
from alignment.trainer.args import report_to

log = logging.getLogger("alignment")


def value_model_path(cfg: DictConfig, policy_path: str) -> str:
    """``value_model`` if set, else the first reward model, else the policy (a fresh value head)."""
    if cfg.value_model:
        return locate_model(cfg.value_model, "value_model")
    for i, source in enumerate(cfg.reward.sources):
        if source.type == "model" and source.path:
            return locate_model(source.path, f"reward.sources.{i}.path")
    return policy_path


class StepLog:
    """Each PPO step's stats, as they come: appended to ``log_history.jsonl`` and sent to ``tracking.backend``.

    TRL's trackers hang off its Trainer, which PPO does not use, so wandb (offline unless logged in) and TensorBoard
    (``<stage>/runs``) are driven here directly, with the stats under ``ppo/<name>`` at the PPO step. Not through
    ``Accelerator(log_with=...)``: its TensorBoard tracker nests the run dir and writes an hparams event, and
    log_history.jsonl and the train.log lines would still be written here.
    """

    def __init__(self, stage: StageRun, cfg: DictConfig) -> None:
        self.path = stage.dir / "log_history.jsonl"
        self.name = stage.name
        self.path.write_text("", encoding="utf-8")
        self.writer = self.wandb_run = None
        # Validates the backend and sets the wandb/tensorboard environment, as for the other stages.
        backend = report_to(stage.cfg, stage.dir)
        run_name = cfg.tracking.get("run_name") or f"{stage.dir.parent.name}-{stage.name}"
        if backend == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(stage.dir / "runs"))
        elif backend == "wandb":
            import wandb

            config = OmegaConf.to_container(cfg, resolve=True)
            self.wandb_run = wandb.init(
                project=str(cfg.tracking.project), name=run_name, dir=str(stage.dir), config=scrub(config)
            )

    def __call__(self, stats: dict) -> None:
        from alignment.callbacks import metrics_log

        step = int(stats["step"])
        metrics_log.info("%s step %d: %s", self.name, step, json.dumps(stats))
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(stats, ensure_ascii=False) + "\n")
        scalars = {f"ppo/{k}": float(v) for k, v in stats.items() if k != "step"}
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(scalars, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def run(cfg: DictConfig) -> dict:
    from peft import get_peft_model

    stage = StageRun(cfg)
    settings = stage_settings(OmegaConf.to_container(cfg.trainer, resolve=True), int(cfg.seed))
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, cfg.model)
    policy = load_causal_lm(path, cfg.model, tokenizer=tokenizer)
    value = load_sequence_classifier(value_model_path(cfg, path), cfg.model, tokenizer)
    adapter = adapters.prepare(policy, cfg.peft, stage="ppo")
    reference = None
    if adapter is not None:
        policy = get_peft_model(policy, adapter)
        value = get_peft_model(value, adapters.prepare(value, cfg.peft, stage="ppo"))
    else:
        ref_path = locate_model(cfg.ref_model, "ref_model") if cfg.ref_model else path
        reference = load_causal_lm(ref_path, cfg.model, tokenizer=tokenizer)  # the policy's vocabulary and pad
    if not cfg.reward.sources:
        raise AlignmentError("stage=ppo needs a reward: reward=oracle, reward=model reward.sources.0.path=RUN/rm, ...")
    reward_fn = reward_function(cfg, tokenizer)
    train_ds, _ = prompt_data(cfg, tokenizer, stage)

    step_log = StepLog(stage, cfg)
    trainer = PPOTrainer(
        policy=policy,
        ref_policy=reference,
        value_model=value,
        tokenizer=tokenizer,
        reward_fn=reward_fn,
        train_dataset=train_ds,
        settings=settings,
        stop_token_ids=stop_token_ids(tokenizer, policy),
        callbacks=step_log,
    )
    trainable, total = adapters.count_parameters(policy)
    stage.record({"trainable_params": trainable, "total_params": total})

    stage.measure_oracle(policy, tokenizer, suffix="_before")
    checkpoints.resume(trainer, stage)  # checkpoint-<step>/ every trainer.save_steps; restore the newest one
    with interrupt.during_training():  # the first Ctrl-C saves a checkpoint after this step and stops
        try:
            final = trainer.train()
        finally:
            step_log.close()
        if interrupt.stop_requested():
            raise checkpoints.stopped(trainer, stage)
    history = trainer.history
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

"""What the online RL stages (PPO, GRPO, RLOO) share: prompts from the data layer and the reward sources."""

from __future__ import annotations

from datasets import Dataset
from omegaconf import DictConfig, OmegaConf

from alignment.data import encode_prompt, load_train_eval, tokenize_prompts
from alignment.data.sources import data_source
from alignment.rewards import RewardFunction, build_reward_fn
from alignment.stages.runner import StageRun


def prompt_data(cfg: DictConfig, tokenizer, stage: StageRun) -> tuple[Dataset, Dataset | None]:
    """Encoded prompts (``prompt_ids``, plus ``prompt`` and ``oracle`` when present), train and held-out."""
    train_rows, eval_rows = load_train_eval(cfg.data, kind="prompt", seed=cfg.seed)
    length = cfg.data.max_length
    train, stats = tokenize_prompts(
        train_rows, tokenizer, max_length=length, source=data_source(cfg.data, "prompt", "train")
    )
    stage.record({f"data_{k}": v for k, v in stats.items()})
    held_out = None
    if eval_rows is not None:
        source = data_source(cfg.data, "prompt", "held-out")
        held_out = tokenize_prompts(eval_rows, tokenizer, max_length=length, source=source)[0]
    return train, held_out


def reward_function(cfg: DictConfig, tokenizer=None) -> RewardFunction:
    """The weighted reward of ``reward.sources`` (reward model, oracle, ``module:function``). Reward models load with
    the run's ``model.trust_remote_code``, like the policy."""
    sources = OmegaConf.to_container(cfg.reward.sources, resolve=True)
    trust = bool(cfg.model.get("trust_remote_code", False))
    return build_reward_fn(sources, tokenizer=tokenizer, trust_remote_code=trust)


def trl_reward_func(reward_fn: RewardFunction):
    """Adapt our ``reward_fn(prompts, responses, oracle)`` to TRL's ``f(prompts, completions, **columns)``."""

    def reward(prompts, completions, oracle=None, prompt_ids=None, completion_ids=None, **_):
        # TRL passes the sampled tokens (``completion_ids``) and every dataset column (our ``prompt_ids``): a reward
        # model sharing the policy's tokenizer scores those tokens, not a re-rendering of the decoded text.
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return reward_fn(prompts, texts, oracle, prompt_ids=prompt_ids, completion_ids=completion_ids)

    return reward


class SharedPromptEncoding:
    """Mixin for TRL's GRPO/RLOO trainers: TRL samples from the ``prompt_ids`` the data layer encoded (with the row's
    tools), the same ids the rewards receive, instead of templating the prompt a second time."""

    prompt_max_length: int | None = None
    _batch_prompt_ids: list | None = None

    def _generate_and_score_completions(self, inputs):
        has_ids = bool(inputs) and "prompt_ids" in inputs[0]
        self._batch_prompt_ids = [list(x["prompt_ids"]) for x in inputs] if has_ids else None
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._batch_prompt_ids = None

    def _tokenize_prompts(self, prompts: list):
        ids = self._batch_prompt_ids  # TRL tokenises the prompts of the inputs it was given, in their order
        if ids is None or len(ids) != len(prompts):
            ids = [encode_prompt(self.processing_class, p, max_length=self.prompt_max_length) for p in prompts]
        return ids, None, {}

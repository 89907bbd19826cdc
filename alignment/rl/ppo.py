"""PPO for RLHF (TRL 1.16 removed its PPOTrainer): rollouts, KL-shaped rewards, GAE, clipped policy/value updates.

One step = sample a response for ``rollout_batch_size`` prompts, score them, then ``ppo_epochs`` passes of clipped
updates over shuffled minibatches. Policy and value model train together through one wrapper module so the same loop
runs under DDP or DeepSpeed via ``accelerate``; each has its own AdamW parameter group (own learning rate).

With ``group_by_length`` the scoring forwards and the update's forward + backward passes run over rows grouped by
length, each group trimmed to its own padding (:mod:`alignment.rl.padding`); an update's groups accumulate gradients
into one optimiser step with the same loss as the dense micro-batch. Only where that is safe: DeepSpeed and FSDP
gather sharded parameters in every forward, a collective that needs the same number of forwards on every rank, so
they stay dense; under DDP a second backward pass in one optimiser step would all-reduce again, so updates with more
than one process stay dense (their rollout scoring, on the unwrapped models, is grouped).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import nn
from transformers import get_scheduler

from alignment.errors import AlignmentError
from alignment.generation import left_pad, sample
from alignment.rewards import RewardFunction
from alignment.rl import ops
from alignment.rl.padding import group_rows, grouped_response_forward, trim_padding
from alignment.rl.rollout import response_logits, response_logprobs, response_values, score_head
from alignment.rl.settings import DEFAULT_SEED, PPOSettings, settings_from_dict

logger = logging.getLogger(__name__)
RewardFn = Callable[[list | None, list[str], list], list[float]]


class PolicyAndValue(nn.Module):
    """Both trained models behind one ``forward``, so DDP/DeepSpeed wrap (and sync) them as a single module."""

    def __init__(self, policy: nn.Module, value_model: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        score_head(value_model)  # fail now, with a clear message, if the value head cannot be found

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int, temperature: float):
        """Temperature-scaled logits and values at the positions that predict each response token."""
        logits = response_logits(self.policy, input_ids, attention_mask, prompt_width, temperature)
        values = response_values(self.value_model, input_ids, attention_mask, prompt_width)
        return logits, values


class PPOTrainer:
    """Train ``policy`` with PPO against ``reward_fn``, KL-regularised to ``ref_policy`` (see module docstring).

    ``ref_policy=None`` requires a peft ``PeftModel`` policy: reference log-probs then come from the same model with
    its adapter disabled. ``callbacks`` is a function or list of functions called with each step's stats dict.
    """

    def __init__(
        self,
        policy: nn.Module,
        ref_policy: nn.Module | None,
        value_model: nn.Module,
        tokenizer,
        reward_fn: RewardFn,
        train_dataset,
        settings: PPOSettings,
        stop_token_ids: Sequence[int],
        accelerator=None,
        callbacks: Callable[[dict], None] | Sequence[Callable[[dict], None]] | None = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        settings.validate()
        self.settings = settings
        if accelerator is None:
            accelerator = Accelerator(gradient_accumulation_steps=settings.gradient_accumulation_steps)
        elif accelerator.gradient_accumulation_steps != settings.gradient_accumulation_steps:
            raise AlignmentError(
                f"the Accelerator accumulates {accelerator.gradient_accumulation_steps} micro-batches but ppo setting "
                f"`gradient_accumulation_steps` is {settings.gradient_accumulation_steps}; create it with "
                "Accelerator(gradient_accumulation_steps=settings.gradient_accumulation_steps)"
            )
        self.accelerator = accelerator
        if ref_policy is None and not hasattr(policy, "disable_adapter"):
            raise AlignmentError(
                "ref_policy is None but the policy is not a peft model: pass a frozen reference model"
            )
        if "prompt_ids" not in train_dataset.column_names:
            raise AlignmentError(f"the PPO dataset needs a `prompt_ids` column; it has {train_dataset.column_names}")
        if len(train_dataset) == 0:
            raise AlignmentError("the PPO dataset is empty: it needs at least one prompt in its `prompt_ids` column")
        self.tokenizer, self.reward_fn, self.train_dataset = tokenizer, reward_fn, train_dataset
        self.stop_token_ids = [int(i) for i in stop_token_ids]
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_token_ids[0]
        self.callbacks = [] if callbacks is None else [callbacks] if callable(callbacks) else list(callbacks)
        self.history: list[dict] = []

        policy.eval()  # eval mode throughout: dropout would make the PPO ratio noisy even before any update
        value_model.eval()
        policy_params = [p for p in policy.parameters() if p.requires_grad]
        value_params = [p for p in value_model.parameters() if p.requires_grad]
        if {id(p) for p in policy_params} & {id(p) for p in value_params}:
            raise AlignmentError("the policy and the value model share parameters; load the value model separately")
        if not policy_params or not value_params:
            raise AlignmentError("the policy or the value model has no trainable parameter (requires_grad)")
        self._params = (policy_params, value_params)
        value_lr = settings.value_learning_rate if settings.value_learning_rate is not None else settings.learning_rate
        optimizer = torch.optim.AdamW(
            [{"params": policy_params, "lr": settings.learning_rate}, {"params": value_params, "lr": value_lr}],
            weight_decay=settings.weight_decay,
        )
        updates = settings.max_steps * settings.ppo_epochs * (settings.rollout_batch_size // settings.mini_batch_size)
        # Not prepared: stepped by hand once per real optimiser step (accelerate's wrapper would step it once per
        # process). At least one training step, so a run of 0 steps starts at the full rate, as a linear decay should.
        self.scheduler = get_scheduler(
            settings.lr_scheduler_type, optimizer, num_warmup_steps=0, num_training_steps=max(updates, 1)
        )
        plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        if plugin is not None:  # DeepSpeed's "auto" sizes come from a dataloader and model.config, which PPO lacks
            from alignment.launch import fill_deepspeed_auto

            micro = settings.mini_batch_size // settings.gradient_accumulation_steps
            fill_deepspeed_auto(plugin, policy.config.hidden_size, micro)
        self.model, self.optimizer = accelerator.prepare(PolicyAndValue(policy, value_model), optimizer)
        from accelerate.utils import DistributedType

        sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
        self._group_scoring = settings.group_by_length and not sharded  # why not sharded: see the module docstring
        self._group_update = self._group_scoring and accelerator.num_processes == 1
        self.ref_policy = ref_policy
        if ref_policy is not None:
            ref_policy.eval().requires_grad_(False)
            ref_policy.to(accelerator.device)
        if settings.adaptive_kl:
            self.kl_ctl = ops.AdaptiveKLController(settings.kl_coef, settings.kl_target, settings.kl_horizon)
        else:
            self.kl_ctl = ops.FixedKLController(settings.kl_coef)
        seed = DEFAULT_SEED if settings.seed is None else settings.seed
        set_seed(seed + accelerator.process_index)
        self._order = torch.Generator().manual_seed(seed)  # same on every process: shards stay disjoint
        self._queue: list[int] = []
        self.step = 0
        self.should_stop = False  # a callback sets it (Ctrl-C: after saving a checkpoint) to end train() early

    def train(self) -> dict:
        """Run ``max_steps`` rollout + update iterations; return the last step's stats (all are in ``history``)."""
        from alignment.progress import Progress

        stats: dict = {}
        main = self.accelerator.is_main_process
        bar = Progress(self.settings.max_steps, "ppo", disable=not main, initial=self.step)
        while self.step < self.settings.max_steps and not self.should_stop:
            start = time.perf_counter()
            batch, stats = self._rollout(self._next_rows())
            rollout_done = time.perf_counter()
            stats.update(self._update(batch))
            stats = self._reduce(stats)
            # After the reduce, so every process moves the coefficient identically.
            self.kl_ctl.update(stats["kl"], self.settings.rollout_batch_size * self.accelerator.num_processes)
            self.step += 1
            end = time.perf_counter()
            stats.update(
                step=self.step,
                episodes=self.step * self.settings.rollout_batch_size * self.accelerator.num_processes,
                time_rollout=rollout_done - start,
                time_update=end - rollout_done,
                time_step=end - start,
            )
            self.history.append(stats)
            for callback in self.callbacks:
                callback(stats)
            if self.step % self.settings.logging_steps == 0 and self.accelerator.is_main_process:
                logger.info("ppo step %d: %s", self.step, ", ".join(f"{k}={v:.4g}" for k, v in stats.items()))
            bar.update(1, score=stats["score"], kl=stats["kl"])
        bar.close()
        return stats

    def _next_rows(self) -> dict:
        """This process's share of the next rollout's prompts, walking reshuffled passes over the dataset.

        A dataset smaller than a rollout is fine: passes are concatenated, so prompts then repeat within it.
        """
        n = self.settings.rollout_batch_size
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        while len(self._queue) < n * world:
            self._queue.extend(torch.randperm(len(self.train_dataset), generator=self._order).tolist())
        indices, self._queue = self._queue[: n * world], self._queue[n * world :]
        return self.train_dataset[indices[rank * n : (rank + 1) * n]]

    @torch.no_grad()
    def _rollout(self, rows: dict) -> tuple[dict, dict]:
        """Sample, score and shape rewards for one batch of prompts; returns ``(tensors, stats)``."""
        s, device = self.settings, self.accelerator.device
        prompt_ids, prompt_mask = left_pad(rows["prompt_ids"], self.pad_token_id)
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        width = prompt_ids.shape[1]
        wrapper = self.accelerator.unwrap_model(self.model)
        chunk = s.forward_batch_size or len(prompt_ids)
        parts = [
            sample(
                wrapper.policy,
                prompt_ids[i : i + chunk],
                prompt_mask[i : i + chunk],
                stop_token_ids=self.stop_token_ids,
                pad_token_id=self.pad_token_id,
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
            )
            for i in range(0, len(prompt_ids), chunk)
        ]
        length = max(p.responses.shape[1] for p in parts)
        pad = lambda t, v: nn.functional.pad(t, (0, length - t.shape[1]), value=v)  # noqa: E731
        responses = torch.cat([pad(p.responses, self.pad_token_id) for p in parts])
        mask = torch.cat([pad(p.mask, 0) for p in parts])
        finished = torch.cat([p.finished for p in parts])
        input_ids = torch.cat([prompt_ids, responses], dim=1)
        attention_mask = torch.cat([prompt_mask, mask], dim=1)

        def chunked(fn) -> torch.Tensor:
            """``fn(ids, attention_mask, prompt_width)`` over every row, 0 at response padding."""
            if self._group_scoring:
                return grouped_response_forward(
                    fn, input_ids, attention_mask, width, mask, s.forward_batch_size or None
                )
            n = len(input_ids)
            out = torch.cat(
                [fn(input_ids[i : i + chunk], attention_mask[i : i + chunk], width) for i in range(0, n, chunk)]
            )
            return out.masked_fill(mask == 0, 0)

        def logprobs_of(model):
            return chunked(lambda ids, am, w: response_logprobs(model, ids, am, w, s.temperature))

        logprobs = logprobs_of(wrapper.policy)
        if self.ref_policy is not None:
            ref_logprobs = logprobs_of(self.ref_policy)
        else:
            with wrapper.policy.disable_adapter():
                ref_logprobs = logprobs_of(wrapper.policy)
        values = chunked(lambda ids, am, w: response_values(wrapper.value_model, ids, am, w))

        completion_ids = [r[m.bool()].tolist() for r, m in zip(responses, mask, strict=True)]
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        n = len(texts)
        oracle = rows.get("oracle") or [None] * n
        if isinstance(self.reward_fn, RewardFunction):  # its reward models score these very tokens where they can
            raw = self.reward_fn(
                rows.get("prompt"), texts, oracle, prompt_ids=rows["prompt_ids"], completion_ids=completion_ids
            )
        else:
            raw = self.reward_fn(rows.get("prompt"), texts, oracle)
        if len(raw) != n or not all(math.isfinite(float(x)) for x in raw):
            raise AlignmentError(f"the reward function must return {n} finite floats, one per response; got {raw!r}")
        scores = torch.tensor([float(x) for x in raw], device=device)
        penalised = scores.clone()
        if s.missing_eos_penalty is not None:
            penalised[~finished] -= s.missing_eos_penalty

        maskf = mask.float()
        kl = ops.kl_penalty(logprobs, ref_logprobs, s.kl_estimator) * maskf
        non_score = -self.kl_ctl.value * kl
        rewards = non_score.clone()
        last = ops.last_token_index(mask)
        rewards[torch.arange(n, device=device), last.clamp_min(0)] += penalised * (last >= 0)
        if s.whiten_rewards:
            rewards = ops.masked_whiten(rewards, maskf, shift_mean=False)
        advantages, returns = ops.gae(rewards, values, maskf, s.gamma, s.lam)
        if s.whiten_advantages:
            advantages = ops.masked_whiten(advantages, maskf)
        batch = dict(input_ids=input_ids, attention_mask=attention_mask, mask=maskf, logprobs=logprobs, values=values)
        batch.update(advantages=advantages, returns=returns, width=width)
        stats = {
            "score": scores.mean().item(),
            "non_score_reward": non_score.sum(1).mean().item(),
            "kl": ((logprobs - ref_logprobs) * maskf).sum(1).mean().item(),
            "kl_coef": self.kl_ctl.value,
            "response_length": maskf.sum(1).mean().item(),
            "finished": finished.float().mean().item(),
            "value_mean": ops.masked_mean(values, maskf).item(),
            "return_mean": ops.masked_mean(returns, maskf).item(),
        }
        for name, per_row in (getattr(self.reward_fn, "last_scores", None) or {}).items():
            stats[f"score/{name}"] = sum(per_row) / max(len(per_row), 1)
        return batch, stats

    def _update(self, batch: dict) -> dict:
        """``ppo_epochs`` passes of clipped policy + value updates over shuffled minibatches of the rollout.

        Each micro-batch (``mini_batch_size / gradient_accumulation_steps`` rows) runs as one trimmed forward +
        backward, or, with ``group_by_length``, as several length groups whose gradients add up to the same one.
        """
        s, acc = self.settings, self.accelerator
        micro = s.mini_batch_size // s.gradient_accumulation_steps
        sums: dict[str, list[float]] = {}
        for _ in range(s.ppo_epochs):
            order = torch.randperm(s.rollout_batch_size, generator=self._order).tolist()
            for start in range(0, s.rollout_batch_size, micro):
                idx = torch.tensor(order[start : start + micro], device=acc.device)
                mb = {k: v[idx] if torch.is_tensor(v) else v for k, v in batch.items()}
                count = mb["mask"].sum().clamp_min(1.0)  # every part's sums over this count: micro-batch token means
                parts = group_rows(mb) if self._group_update else [trim_padding(mb)]
                with acc.accumulate(self.model):
                    terms: dict[str, torch.Tensor] = {}
                    for part in parts:
                        part_terms = self._compute_losses(part, count)
                        acc.backward(part_terms["loss"])
                        for key, value in part_terms.items():
                            terms[key] = terms[key] + value.detach() if key in terms else value.detach()
                    step_stats = {}
                    if acc.sync_gradients:
                        step_stats = self._clip_gradients()
                    self.optimizer.step()
                    if acc.sync_gradients:
                        self.scheduler.step()
                    self.optimizer.zero_grad()
                for key, value in dict(step_stats, **terms).items():
                    sums.setdefault(key, []).append(value.item() if torch.is_tensor(value) else float(value))
        stats = {k: sum(v) / len(v) for k, v in sums.items()}
        lrs = self.scheduler.get_last_lr()
        stats.update(lr=lrs[0], value_lr=lrs[1])
        return stats

    def _compute_losses(self, part: dict, count: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss and stats of rows of a micro-batch: sums over their valid tokens divided by the micro-batch's ``count``.

        So the parts of a micro-batch add up to its token means: the loss, and the logged stats with it.
        """
        s = self.settings
        logits, values = self.model(part["input_ids"], part["attention_mask"], part["width"], s.temperature)
        logprobs = ops.logprobs_from_logits(logits, part["input_ids"][:, part["width"] :])
        with nullcontext() if s.entropy_coef else torch.no_grad():
            entropy = ops.masked_mean(ops.entropy_from_logits(logits.float()), part["mask"], count=count)
        pg_loss, pg_clipfrac, approx_kl = ops.clipped_policy_loss(
            logprobs, part["logprobs"], part["advantages"], part["mask"], s.cliprange, count=count
        )
        vf_loss, vf_clipfrac = ops.clipped_value_loss(
            values, part["values"], part["returns"], part["mask"], s.cliprange_value, count=count
        )
        loss = pg_loss + s.vf_coef * vf_loss - s.entropy_coef * entropy
        return dict(
            loss=loss,
            policy_loss=pg_loss,
            value_loss=vf_loss,
            entropy=entropy,
            policy_clipfrac=pg_clipfrac,
            value_clipfrac=vf_clipfrac,
            approx_kl=approx_kl,
        )

    def _clip_gradients(self) -> dict:
        """Clip policy and value gradients separately (jointly under DeepSpeed/FSDP, which own clipping)."""
        from accelerate.utils import DistributedType

        acc, max_norm = self.accelerator, self.settings.max_grad_norm
        if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)
            return {} if norm is None else {"grad_norm": float(norm)}
        acc.unscale_gradients()  # once: a second unscale of the fp16 scaler in the same step would raise
        policy_params, value_params = self._params
        return {
            "policy_grad_norm": float(torch.nn.utils.clip_grad_norm_(policy_params, max_norm)),
            "value_grad_norm": float(torch.nn.utils.clip_grad_norm_(value_params, max_norm)),
        }

    def _reduce(self, stats: dict) -> dict:
        """Average every numeric stat over processes (a no-op on one process)."""
        if self.accelerator.num_processes == 1:
            return stats
        keys = sorted(stats)
        values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=self.accelerator.device)
        values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(keys, values.tolist(), strict=True))


__all__ = ["PPOSettings", "PPOTrainer", "PolicyAndValue", "settings_from_dict"]

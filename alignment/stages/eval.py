"""Evaluate any model: ``python -m alignment stage=eval model.path=RUN/dpo [eval.against=RUN/sft]``.

Recipe: the model (``model.path``: a model dir, a stage dir or a Hub id) and what it is (``eval.kind``; a sequence
classifier is a reward model) ->
- a reward model: pair accuracy and margin on the held-out pairs, by TRL's RewardTrainer as ``stage=rm`` measures;
- a policy: held-out loss and perplexity by TRL's SFTTrainer with SFT's masks, packing and batches (the number
  ``stage=sft`` reports as its final ``eval_loss``); replies sampled to the held-out prompts as ``oracle_eval.*``
  decodes them, scored by ``reward.sources`` (oracle, reward model, function), their mean length; with
  ``eval.against``, the win rate over that model's replies judged by ``eval.judge`` (oracle or a reward model),
  with a 95% interval and a length-controlled variant (alignment/evaluation/scoring.py);
  ``eval.lm_eval.tasks`` through EleutherAI lm-eval ->
``metrics.json`` and ``samples.jsonl`` (one line per prompt: its replies and their scores). No model is saved.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from alignment.errors import AlignmentError

log = logging.getLogger("alignment")
SAMPLES = "samples.jsonl"
KINDS = ("auto", "policy", "reward_model")


def model_kind(path: str, kind: str) -> str:
    """``policy`` or ``reward_model``: as given, or read from the model's config.json (a sequence classifier)."""
    if kind not in KINDS:
        raise AlignmentError(f"eval.kind={kind} must be one of: {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    config = Path(path) / "config.json"
    if not config.exists():
        return "policy"
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return "reward_model" if any(a.endswith("ForSequenceClassification") for a in architectures) else "policy"


def _other_model(cfg: DictConfig, path: str):
    from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path

    model_cfg = OmegaConf.merge(cfg.model, {"path": path})
    resolved = resolve_model_path(model_cfg)
    tokenizer = load_tokenizer(resolved, model_cfg)
    return load_causal_lm(resolved, model_cfg, tokenizer=tokenizer), tokenizer


def _sample(model, tokenizer, prompts: list, cfg: DictConfig):
    """Replies as the oracle evaluation decodes them (``oracle_eval.*``: samples per prompt, temperature, seed)."""
    from alignment.generation import sample_replies

    oe = cfg.oracle_eval
    return sample_replies(
        model,
        tokenizer,
        prompts,
        samples_per_prompt=1 if oe.greedy else int(oe.samples_per_prompt),
        temperature=oe.temperature,
        top_p=oe.top_p,
        max_new_tokens=int(oe.max_new_tokens),
        batch_size=int(oe.batch_size),
        seed=int(oe.seed),
        greedy=bool(oe.greedy),
        max_prompt_length=int(cfg.data.max_length),
        desc="eval: generate",
    )


def _judge(cfg: DictConfig):
    """The win-rate judge, ``(prompts, replies, oracles) -> scores``: the oracle, or a reward model dir."""
    judge = str(cfg.eval.judge)
    if judge == "oracle":
        from alignment.rewards import oracle_reward

        return oracle_reward
    from alignment.models import resolve_model_path
    from alignment.rewards import ModelReward

    path = resolve_model_path(OmegaConf.merge(cfg.model, {"path": judge}))
    reward_model = ModelReward(path, trust_remote_code=bool(cfg.model.trust_remote_code))
    return lambda prompts, replies, oracles: reward_model(prompts, replies)


def score_policy(cfg: DictConfig, stage, model, tokenizer) -> list[dict]:
    """Sample the held-out prompts, score the replies, and (``eval.against``) judge them against the other model's;
    record the metrics on ``stage`` and return the samples.jsonl lines."""
    from alignment.evaluation.prompts import held_out_prompts
    from alignment.evaluation.scoring import win_rate
    from alignment.oracle.evaluate import summarize
    from alignment.rewards import build_reward_fn

    rows = held_out_prompts(cfg, int(cfg.oracle_eval.num_prompts))
    if rows is None or len(rows) == 0:
        log.warning("eval: no held-out prompts (oracle_eval.* / data.*); no replies sampled")
        return []
    prompts = [list(p) for p in rows["prompt"]]
    has_oracle = "oracle" in rows.column_names
    replies = _sample(model, tokenizer, prompts, cfg)
    k = len(replies.texts) // len(prompts)
    each = [p for p in prompts for _ in range(k)]
    oracles = [o for o in rows["oracle"] for _ in range(k)] if has_oracle else [None] * len(each)
    n = len(replies.texts)
    stage.record(
        {
            "prompts": len(prompts),
            "replies": n,
            "mean_reply_tokens": sum(replies.num_tokens) / n,
            "mean_reply_chars": sum(len(t) for t in replies.texts) / n,
            "finished_fraction": sum(replies.finished) / n,
        }
    )
    sources = [
        s for s in OmegaConf.to_container(cfg.reward.sources, resolve=True) if has_oracle or s["type"] != "oracle"
    ]
    per_source: dict[str, list[float]] = {}
    if sources:
        reward_fn = build_reward_fn(sources, tokenizer, trust_remote_code=bool(cfg.model.trust_remote_code))
        total = reward_fn(each, replies.texts, oracles)
        per_source = dict(reward_fn.last_scores)
        stage.record({"reward": sum(total) / n} | {f"reward/{name}": sum(v) / n for name, v in per_source.items()})
        if "oracle" in per_source:
            tasks = [json.loads(o).get("task") for o in oracles]
            stage.record(summarize(tasks, per_source["oracle"]) | {"oracle_samples": n})
    else:
        log.warning("eval: the prompts have no oracle and reward.sources names no other source; replies unscored")

    against = None
    if cfg.eval.against:
        other, other_tokenizer = _other_model(cfg, str(cfg.eval.against))
        against = _sample(other, other_tokenizer, prompts, cfg)
        del other
        judge = _judge(cfg)
        mine, theirs = judge(each, replies.texts, oracles), judge(each, against.texts, oracles)
        result = win_rate(mine, theirs, replies.num_tokens, against.num_tokens, per_prompt=k)
        stage.record(result.metrics())
        log.info(
            "[eval] win rate over %s (judge %s): %.3f [%.3f, %.3f], length-controlled %.3f",
            cfg.eval.against,
            cfg.eval.judge,
            result.rate,
            result.low,
            result.high,
            result.length_controlled,
        )

    lines = []
    for i, prompt in enumerate(prompts):
        part = slice(i * k, (i + 1) * k)
        line = {"prompt": prompt, "task": rows["task"][i] if "task" in rows.column_names else None}
        line |= {"replies": replies.texts[part], "reply_tokens": replies.num_tokens[part]}
        line["scores"] = {name: values[part] for name, values in per_source.items()}
        if against is not None:
            line |= {"against_replies": against.texts[part], "judge": {"model": mine[part], "against": theirs[part]}}
        lines.append(json.dumps(line, ensure_ascii=False) + "\n")
    return lines


def run(cfg: DictConfig) -> dict:
    from alignment.atomic import write_atomic
    from alignment.distributed import is_main_process
    from alignment.evaluation.held_out import policy_loss, reward_model_accuracy
    from alignment.models import load_causal_lm, load_sequence_classifier, load_tokenizer, resolve_model_path
    from alignment.stages.runner import StageRun

    ev = cfg.eval
    if ev.batch_size < 1:
        raise AlignmentError(f"eval.batch_size={ev.batch_size} must be at least 1")
    if ev.against and ev.judge != "oracle" and not Path(str(ev.judge)).expanduser().exists():
        raise AlignmentError(f"eval.judge={ev.judge}: give 'oracle' or a reward model dir (e.g. RUN/rm)")
    with open_dict(cfg):
        cfg.resume = "fresh"  # nothing to resume: an evaluation is made whole again
    stage = StageRun(cfg)
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, cfg.model)
    kind = model_kind(path, str(ev.kind))
    stage.metrics["reward_model"] = int(kind == "reward_model")
    lines: list[str] = []
    if kind == "reward_model":
        if ev.against or ev.lm_eval.tasks:
            raise AlignmentError(
                f"{path} is a reward model: eval.against and eval.lm_eval.tasks need a policy (eval.kind=policy "
                "if it is one)"
            )
        model = load_sequence_classifier(path, cfg.model, tokenizer)
        stage.record(reward_model_accuracy(cfg, stage, model, tokenizer))
    else:
        model = load_causal_lm(path, cfg.model)
        if ev.loss:
            stage.record(policy_loss(cfg, stage, model, tokenizer))
        if ev.generate:
            lines = score_policy(cfg, stage, model, tokenizer)
        if ev.lm_eval.tasks:
            from alignment.evaluation.lm_eval_tasks import lm_eval_scores

            stage.record(lm_eval_scores(model.eval(), tokenizer, ev.lm_eval))
    if is_main_process() and lines:
        write_atomic(stage.dir / SAMPLES, "".join(lines))
    summary = {k: v for k, v in stage.metrics.items() if not k.startswith("lm_eval/") or k.endswith("/acc")}
    log.info("[eval] %s", ", ".join(f"{k}={v:.4g}" for k, v in sorted(summary.items())))
    return stage.finish()

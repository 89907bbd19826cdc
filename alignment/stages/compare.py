"""Several models answer the same prompts, side by side: ``compare.md``, ``compare.html`` and a table on stdout.

Recipe: the models (``compare.models``, else every model stage of ``output_dir`` in the order it ran, after the base
model the first one started from) -> the prompts (:func:`alignment.evaluation.prompts.compare_prompts`) -> each model
answers greedily, one model in memory at a time -> scores: the oracle where a prompt has one, and a reward model
(``compare.reward_model``, else the run's own ``rm`` step) -> ``compare.md``, ``compare.html``, ``compare.jsonl``
(every prompt with each model's reply and scores) and ``metrics.json`` (``oracle/<label>``, ``reward_model/<label>``:
the means; ``reply_tokens/<label>``). Pipelines end with this step unless ``compare: false``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from alignment.errors import AlignmentError

log = logging.getLogger("alignment")
# Stages whose model is a policy worth a column; a reward model scores the answers instead.
POLICY_STAGES = ("sft", "dpo", "kto", "orpo", "ppo", "grpo", "rloo")


def _parse_entry(entry, i: int) -> tuple[str, str]:
    """(label, path) of one ``compare.models`` entry: 'path', 'label=path' or {label, path}."""
    if OmegaConf.is_config(entry):
        entry = OmegaConf.to_container(entry, resolve=True)
    if isinstance(entry, dict):
        if not entry.get("path"):
            raise AlignmentError(f"compare.models.{i}: {entry} needs a path, e.g. {{label: sft, path: RUN/sft}}")
        return str(entry.get("label") or Path(str(entry["path"])).name), str(entry["path"])
    text = str(entry)
    label, sep, path = text.partition("=")
    if not sep:
        path = text
        label = Path(text.rstrip("/")).name
        label = Path(text.rstrip("/")).parent.name if label == "model" else label
    return label, path


def _stage_model(stage_dir: Path) -> Path | None:
    """A finished stage's model dir, or None (still running, a data stage, a reward model)."""
    model = stage_dir / "model"
    if not (stage_dir / "metrics.json").exists() or not (model / "config.json").exists():
        return None
    return model


def _is_reward_model(model_dir: Path) -> bool:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def run_models(run_dir: Path, skip: str) -> tuple[list[tuple[str, str]], str | None]:
    """The run's finished policy stages in the order they ran, led by the base model the first started from, and
    its reward model if it trained one: ([(label, model dir)], reward model dir or None)."""
    manifest = run_dir / "pipeline.json"
    if manifest.exists():
        steps = json.loads(manifest.read_text(encoding="utf-8")).get("steps", [])
        dirs = [Path(s["output"]) for s in steps if s.get("name") != skip]
    else:
        dirs = [p.parent for p in run_dir.glob("*/metrics.json") if p.parent.name != skip]
        dirs.sort(key=lambda d: (d / "metrics.json").stat().st_mtime)
    policies: list[tuple[str, str]] = []
    reward_model = None
    for stage_dir in dirs:
        model = _stage_model(stage_dir)
        if model is None:
            continue
        if _is_reward_model(model):
            reward_model = reward_model or str(model)
        else:
            policies.append((stage_dir.name, str(model)))
    if policies:
        base = _base_model(Path(policies[0][1]).parent)
        if base is not None:
            policies.insert(0, ("base", base))
    return policies, reward_model


def _base_model(stage_dir: Path) -> str | None:
    """The model a stage started from, as its resolved config.yaml names it (the tiny model when unset)."""
    from alignment.models import resolve_model_path

    config = stage_dir / "config.yaml"
    if not config.exists():
        return None
    return resolve_model_path(OmegaConf.load(config).model)


def _models(cfg: DictConfig, name: str) -> tuple[list[tuple[str, str]], str | None]:
    if cfg.compare.models:
        models = [_parse_entry(entry, i) for i, entry in enumerate(cfg.compare.models)]
        reward_model = None
    else:
        models, reward_model = run_models(Path(cfg.output_dir), skip=name)
        if not models:
            raise AlignmentError(
                f"stage=compare found no finished model stage in output_dir={cfg.output_dir}; point output_dir at a "
                "finished run or pipeline, or list models: compare.models=[RUN/sft,RUN/dpo]"
            )
    labels = [label for label, _ in models]
    if len(set(labels)) != len(labels):
        raise AlignmentError(f"compare.models: labels {labels} repeat; name them, e.g. 'a=RUN1/sft'")
    return models, cfg.compare.reward_model or reward_model


def run(cfg: DictConfig) -> dict:
    import torch

    from alignment.atomic import write_atomic
    from alignment.evaluation.compare_page import Comparison, html_page, markdown, print_table
    from alignment.evaluation.prompts import compare_prompts
    from alignment.evaluation.scoring import mean, oracle_scores
    from alignment.generation import sample_replies
    from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path
    from alignment.rewards import ModelReward
    from alignment.stages.runner import StageRun

    cc = cfg.compare
    if cc.max_new_tokens < 1 or cc.batch_size < 1:
        raise AlignmentError("compare.max_new_tokens and compare.batch_size must be at least 1")
    with open_dict(cfg):
        cfg.resume = "fresh"  # nothing to resume: a comparison is made whole again, replacing the last one
    stage = StageRun(cfg)
    models, reward_path = _models(cfg, stage.name)
    asked = compare_prompts(cfg)
    prompts = [p for p, _ in asked]
    log.info("compare: %d models x %d prompts (%s)", len(models), len(prompts), ", ".join(m[0] for m in models))

    replies: dict[str, list[str]] = {}
    for label, path in models:
        model_cfg = OmegaConf.merge(cfg.model, {"path": path})
        resolved = resolve_model_path(model_cfg)
        tokenizer = load_tokenizer(resolved, model_cfg)
        model = load_causal_lm(resolved, model_cfg)
        out = sample_replies(
            model,
            tokenizer,
            prompts,
            greedy=True,
            max_new_tokens=int(cc.max_new_tokens),
            batch_size=int(cc.batch_size),
            max_prompt_length=int(cfg.data.max_length),
            desc=f"compare: {label}",
        )
        replies[label] = out.texts
        stage.metrics[f"reply_tokens/{label}"] = sum(out.num_tokens) / len(out.num_tokens)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    scores: dict[str, dict[str, list[float | None]]] = {}
    oracles = [o for _, o in asked]
    if any(oracles):
        scores["oracle"] = {label: oracle_scores(oracles, replies[label]) for label in replies}
    if reward_path:
        rm = ModelReward(resolve_model_path(OmegaConf.merge(cfg.model, {"path": reward_path})))
        scores["reward_model"] = {label: rm(prompts, replies[label]) for label in replies}
    for scorer, per in scores.items():
        stage.record({f"{scorer}/{label}": mean(values) for label, values in per.items() if mean(values) is not None})

    note = f"{len(prompts)} prompts, greedy replies of at most {cc.max_new_tokens} tokens"
    note += "; scores: " + (", ".join(scores) if scores else "none (no oracle, no reward model)")
    if reward_path:
        note += f" (reward model {reward_path})"
    comp = Comparison([m[0] for m in models], prompts, replies, scores, note=note)
    lines = []
    for i, prompt in enumerate(prompts):
        row = {"prompt": prompt, "oracle": oracles[i], "replies": {label: replies[label][i] for label in replies}}
        row["scores"] = {s: {label: per[label][i] for label in per} for s, per in scores.items()}
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    from alignment.distributed import is_main_process

    if is_main_process():
        write_atomic(stage.dir / "compare.jsonl", "".join(lines))
        write_atomic(stage.dir / "compare.md", markdown(comp))
        write_atomic(stage.dir / "compare.html", html_page(comp))
        print_table(comp)
        print(f"[compare] wrote {stage.dir / 'compare.md'} and {stage.dir / 'compare.html'}")
    stage.metrics["prompts"] = len(prompts)
    stage.metrics["models"] = len(models)
    return stage.finish()

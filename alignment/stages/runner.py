"""What every stage does the same way: output layout, resume, evaluation, training, saving and metrics.

A stage writes ``<output_dir>/<stage>/``: ``config.yaml`` (resolved, secrets scrubbed), ``train.log``,
``log_history.jsonl``, HF Trainer ``checkpoint-<step>/`` dirs while it trains, then ``model/`` and last of all
``metrics.json``. ``model/`` and ``metrics.json`` are written to temporary paths and renamed when complete, so a
killed run never leaves output that looks finished.

``train.log`` and ``log_history.jsonl`` grow as the run goes (a killed run keeps its curve); checkpoints come every
``trainer.save_steps`` steps and every ``save_every_minutes``; Ctrl-C saves a checkpoint and stops with
:class:`~alignment.errors.RunInterrupted` (see :mod:`alignment.interrupt`).

Beside it: the stage dir itself, its config hash and whether it may resume (stages/stage_dir.py), its
``checkpoint-<step>/`` dirs (stages/checkpoints.py), TRL arguments and tracking (trainer/args.py; their checks
in trainer/checks.py), train.log and the trainer's live records (stages/live_run.py), the saved model
(stages/saved_model.py), per-task metrics (stages/task_metrics.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alignment import interrupt
from alignment.atomic import write_atomic
from alignment.config import Resume
from alignment.distributed import (
    barrier,
    defer_evaluation,
    forget_previous_stage,
    gathered_params,
    is_main_process,
    peak_rss_mb,
)
from alignment.errors import RunInterrupted
from alignment.paths import DATA_DIR
from alignment.progress import interactive, quiet_library_bars
from alignment.stages.checkpoints import CHECKPOINT_NAME
from alignment.stages.live_run import TrainLog, attach_live_records, held_out_rows
from alignment.stages.saved_model import save_model
from alignment.stages.stage_dir import StageDir
from alignment.stages.task_metrics import evaluate_by_task
from alignment.trainer import args as trainer_args
from alignment.trainer import checks as trainer_checks

log = logging.getLogger("alignment")
# Stages that expect a chat fine-tuned model to start from (an SFT model), not a base model.
CHAT_STAGES = ("dpo", "kto", "orpo", "ppo", "grpo", "rloo")


class StageRun:
    """One stage's run: its directory, its TRL arguments, its metrics."""

    def __init__(self, cfg: DictConfig, name: str | None = None) -> None:
        forget_previous_stage()  # a pipeline's earlier stage must not make this one's models load ZeRO-3-sharded
        self.cfg = cfg
        self.name = name or str(cfg.get("step") or cfg.stage)
        self.metrics: dict[str, float] = {}
        # (held-out row indices per task, metric keys to break down): set by stages whose metrics mean something per
        # task, e.g. ``stage.per_task = (task_indices(eval_rows), ["eval_accuracy"])``.
        self.per_task: tuple[dict[str, list[int]], list[str]] = ({}, [])
        # Fail on a bad value before loading models or data, and before touching earlier output.
        trainer_checks.validate_trainer_values(OmegaConf.to_container(cfg.trainer, resolve=True))
        # Hashed, checked, cleared and its config written; only rank 0 writes, the others wait for its outputs.
        self.state = StageDir.prepare(cfg, self.name, fresh=self.fresh)
        self.dir = self.state.path
        # Seed before the stage loads models: new heads (reward/value ``score``) and adapters (LoRA A) are initialised
        # at load or wrap time, before any Trainer seeds; unseeded, two runs of one config would differ.
        from transformers import set_seed

        set_seed(int(cfg.seed))
        self._train_log = TrainLog(self.name, self.dir)
        interrupt.set_stage(self.name, self.dir)
        if not interactive():
            quiet_library_bars()
        warn_if_base_model(cfg)

    @property
    def fresh(self) -> bool:
        return self.cfg.resume == Resume.fresh

    @property
    def config_hash(self) -> str:
        return self.state.config_hash

    # -- layout -------------------------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    def last_checkpoint(self) -> str | None:
        """The newest intact ``checkpoint-<step>`` dir to resume from, unless ``resume=fresh``.

        Newer ones that are half-written or damaged are removed, each with a one-line warning saying why
        (:meth:`StageDir.last_checkpoint`).
        """
        if self.fresh:
            return None
        ckpt = self.state.last_checkpoint(model_only=bool(self.cfg.trainer.get("save_only_model", False)))
        return str(ckpt) if ckpt is not None else None

    # -- TRL arguments ------------------------------------------------------------------------------------------
    def trainer_args(self, config_cls: type, **overrides: Any):
        """Build the stage's TRL config from ``trainer.*``, with output, seed and tracking set by the run."""
        return trainer_args.trainer_args(self.cfg, self.name, self.dir, config_cls, **overrides)

    def evaluate(self, trainer, suffix: str = "") -> None:
        """Held-out metrics of the trainer's model (same masks as training), recorded as ``<key><suffix>``; also
        per task family for the keys ``self.per_task`` names (see stages/task_metrics.py)."""
        if suffix == "_before" and not self.cfg.get("evaluate_before", True):
            return
        if trainer.eval_dataset is not None:
            attach_live_records(trainer, self.name, self.dir, self.cfg.get("save_every_minutes"))
            groups, keys = self.per_task
            run = evaluate_by_task(trainer, groups, keys) if groups else trainer.evaluate
            rows = held_out_rows(trainer.eval_dataset)

            def keep(metrics: dict) -> None:
                self.record(metrics, suffix)
                self.metrics["eval_rows"] = rows
                from alignment.callbacks import eval_summary

                log.info(eval_summary(self.name, trainer.state.global_step, metrics, rows))

            if defer_evaluation(trainer, keep, run):
                return
            keep(run())

    def measure_oracle(self, model, tokenizer, suffix: str = "") -> None:
        """Record ``oracle_reward<suffix>`` (and ``oracle_reward/<task><suffix>``) when the data has an oracle; keep
        the scored samples beside it."""
        if suffix == "_before" and not self.cfg.get("evaluate_before", True):
            return
        from alignment.oracle.evaluate import evaluate_oracle

        # Every rank generates (ZeRO-3 needs them all for each forward); rank 0 keeps the samples.
        samples = self.dir / f"oracle_samples{suffix}.jsonl" if is_main_process() else None
        # A model loaded ZeRO-3-partitioned has no DeepSpeed engine to gather its layers (module ``ds_id``) until
        # training starts: gather it whole on each rank for this evaluation.
        with gathered_params(model) if not hasattr(model, "ds_id") else contextlib.nullcontext():
            evaluation = evaluate_oracle(model, tokenizer, self.cfg, samples_path=samples)
        scores = evaluation.scores
        if "oracle_reward" in scores:
            log.info(
                "[oracle] %s: oracle_reward%s %.4g (n=%d)%s",
                self.name,
                suffix,
                scores["oracle_reward"],
                scores.get("oracle_samples", 0),
                ", from the cache: same weights, prompts and settings as an earlier evaluation"
                if evaluation.from_cache
                else "",
            )
        self.metrics |= {f"{key}{suffix}": value for key, value in scores.items()}

    # -- training ---------------------------------------------------------------------------------------------
    def train(self, trainer) -> None:
        """Train, resuming from the last checkpoint when there is one, and record the train metrics.

        ``log_history.jsonl`` is appended at every logging step; a resume first drops the rows after its checkpoint.
        After a Ctrl-C the trainer saves a checkpoint and stops, and this raises :class:`RunInterrupted`.
        """
        ckpt = self.last_checkpoint()
        step = 0
        if ckpt:
            step = int(CHECKPOINT_NAME.match(Path(ckpt).name).group(1))
            log.info("resuming %s from %s", self.name, ckpt)
            self.metrics["resumed_from_step"] = step
        from alignment.callbacks import CheckpointManifest, NonFiniteGuard, any_rank, truncate_log_history

        if is_main_process():
            truncate_log_history(self.dir / "log_history.jsonl", step)
        trainer.add_callback(NonFiniteGuard(self.dir))
        trainer.add_callback(CheckpointManifest())
        # TRL drafts a card into the stage dir at every checkpoint, naming a local base model "None"; the stage writes
        # the model's own card into model/ when it finishes.
        trainer.create_model_card = _no_trl_card
        attach_live_records(trainer, self.name, self.dir, self.cfg.get("save_every_minutes"))
        with interrupt.during_training():
            try:
                result = trainer.train(resume_from_checkpoint=ckpt)
            except Exception as err:
                if (full := self.state.out_of_disk(err)) is not None:  # it freed what the failed save took
                    raise full from err
                raise
            if any_rank(interrupt.stop_requested(), trainer.args.device):
                raise self._stopped(trainer)
        self.record({k: v for k, v in result.metrics.items() if k != "total_flos"})
        self.metrics["global_step"] = trainer.state.global_step
        tokens = getattr(trainer.state, "num_input_tokens_seen", 0) or 0
        runtime = result.metrics.get("train_runtime") or 0.0
        if tokens and runtime:
            self.metrics["tokens_per_second"] = tokens / runtime
        self.metrics["world_size"] = trainer.args.world_size
        args = trainer.args
        self.metrics["global_batch_size"] = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        self.metrics["peak_rss_mb"] = _peak_rss_all_ranks(trainer)
        log.info(
            "%s: world size %d, global batch size %d, peak RSS per rank %.0f MiB",
            self.name,
            args.world_size,
            self.metrics["global_batch_size"],
            self.metrics["peak_rss_mb"],
        )

    def _stopped(self, trainer) -> RunInterrupted:
        """The error for a run stopped by Ctrl-C, after making sure its last step is in a checkpoint."""
        kept = self.dir / f"checkpoint-{trainer.state.global_step}"
        if trainer.state.global_step and not (kept / "trainer_state.json").exists():
            # Ctrl-C came after the last step's end, so the loop ended without the stop's save: save now.
            trainer._save_checkpoint(trainer.model_wrapped, trial=None)
            trainer.control = trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)
        barrier()
        return interrupt.interrupted((self.name, self.dir), kept if trainer.state.global_step else None)

    def record(self, metrics: dict[str, Any], suffix: str = "") -> None:
        """Keep the numeric metrics (``eval_loss`` -> ``eval_loss<suffix>``)."""
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            self.metrics[f"{key}{suffix}"] = value

    # -- saving ------------------------------------------------------------------------------------------------
    def save_model(self, model, tokenizer, subdir: str = "model") -> Path:
        """Save model and tokenizer to ``<subdir>/`` atomically; a PEFT model also its adapter (see
        :func:`alignment.stages.saved_model.save_model`; ``peft.merge`` says whether ``<subdir>/`` is merged)."""
        lineage = None
        if subdir == "model":  # the stage's own model: where it came from (alignment/lineage.py), for its card
            from alignment.lineage import stage_lineage
            from alignment.models import resolve_model_path

            lineage = stage_lineage(self.cfg, self.name, resolve_model_path(self.cfg.model))
        return save_model(self.dir, model, tokenizer, subdir, merge=self.cfg.peft.get("merge", True), lineage=lineage)

    def fit(self, trainer, tokenizer, oracle: bool = True) -> dict[str, float]:
        """The recipe every TRL stage shares: held-out metrics (and oracle reward) before, train (resuming when a
        checkpoint exists), the same after, save the model, write ``metrics.json``."""
        from alignment.adapters import count_parameters

        trainable, total = count_parameters(trainer.model)
        self.record({"trainable_params": trainable, "total_params": total})
        self.evaluate(trainer, suffix="_before")
        if oracle:
            self.measure_oracle(trainer.model, tokenizer, suffix="_before")
        self.train(trainer)
        self.evaluate(trainer)
        if oracle:
            self.measure_oracle(trainer.model, tokenizer)
        self.save_model(trainer.model, tokenizer)
        return self.finish()

    def finish(self) -> dict[str, float]:
        """Write the saved model's card (``model/README.md``, alignment/model_card.py), then ``metrics.json``
        (atomically, last): the stage is complete."""
        if is_main_process():
            from alignment.model_card import write_cards

            write_cards(self.dir, self.metrics)  # the repo id goes in when the model is pushed (alignment/publish.py)
            write_atomic(self.dir / "metrics.json", json.dumps(self.metrics, indent=2, sort_keys=True) + "\n")
        log.info("%s finished: %s", self.name, self.dir)
        self.close()
        return dict(self.metrics)

    def close(self, err: BaseException | None = None) -> None:
        """Detach this stage's ``train.log``; with ``err``, write it there first (the traceback at debug level)."""
        self._train_log.close(err)


def _no_trl_card(*args: Any, **kwargs: Any) -> None:
    return None


def warn_if_base_model(cfg: DictConfig) -> None:
    """Warn when a stage that expects a chat fine-tuned model starts from the shipped base model.

    (A tokenizer with no chat template is refused when it loads, ``alignment.models.load_tokenizer``.)
    """
    stage = str(cfg.stage)
    if stage not in CHAT_STAGES:
        return
    path = cfg.model.get("path")
    if not path:
        reason = "model.path is unset: it starts from the shipped tiny base model"
    elif Path(str(path)).expanduser().resolve() == (DATA_DIR / "tiny-base").resolve():
        reason = "model.path is the shipped tiny base model"
    else:
        return
    log.warning(
        "stage=%s: %s, which has no chat fine-tuning; run stage=sft first and pass model.path=<run dir>/sft "
        "(or run pipeline=rlhf)",
        stage,
        reason,
    )


def _peak_rss_all_ranks(trainer) -> float:
    """The largest peak resident memory (MiB) over all ranks so far."""
    import torch

    acc = trainer.accelerator
    peak = torch.tensor([peak_rss_mb()], dtype=torch.float64, device=acc.device)
    return float(acc.gather(peak).max()) if acc.num_processes > 1 else float(peak)

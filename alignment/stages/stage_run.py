"""What every stage does the same way: output layout, TRL arguments, tracking, resume, saving and metrics.

A stage writes ``<output_dir>/<stage>/``: ``config.yaml`` (resolved, secrets scrubbed), ``train.log``,
``log_history.jsonl``, HF Trainer ``checkpoint-<step>/`` dirs while it trains, then ``model/`` and last of all
``metrics.json``. ``model/`` and ``metrics.json`` are written to temporary paths and renamed when complete, so a
killed run never leaves output that looks finished.

``train.log`` and ``log_history.jsonl`` grow as the run goes (a killed run keeps its curve); checkpoints come every
``trainer.save_steps`` steps and every ``save_every_minutes``; Ctrl-C saves a checkpoint and stops with
:class:`~alignment.errors.RunInterrupted` (see :mod:`alignment.interrupt`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alignment import interrupt
from alignment.atomic import replace_dir, write_atomic
from alignment.errors import AlignmentError, RunInterrupted
from alignment.launch import (
    barrier,
    defer_evaluation,
    forget_previous_stage,
    full_state_dict,
    gathered_params,
    is_main_process,
    merge_adapter,
    peak_rss_mb,
    trainer_values,
)
from alignment.paths import DATA_DIR
from alignment.progress import interactive, quiet_library_bars
from alignment.secrets import SecretFilter, scrub
from alignment.stages.run_state import (
    CHECKPOINT_NAME,
    OUTPUT_DIRS,
    RUN_STATE,
    changed_keys,
    checkpoint_steps,
    incomplete_checkpoints,
    is_out_of_disk,
    out_of_disk,
    previous_config,
    remove_path,
    stage_config_hash,
)
from alignment.stages.task_metrics import evaluate_by_task

log = logging.getLogger("alignment")
# Stages that expect a chat fine-tuned model to start from (an SFT model), not a base model.
CHAT_STAGES = ("dpo", "kto", "orpo", "ppo", "grpo", "rloo")
_ACTIVE: list[StageRun] = []  # the stage whose train.log is open, for stage_scope to write a failure into


@contextlib.contextmanager
def stage_scope() -> Iterator[None]:
    """What ``run_stage`` runs a stage in: Ctrl-C handling (:mod:`alignment.interrupt`) and, when the stage fails,
    its error written to its ``train.log`` (the message; the traceback at debug level)."""
    with interrupt.handled():
        try:
            yield
        except BaseException as err:
            for run in list(_ACTIVE):
                run.close(err)
            raise
        for run in list(_ACTIVE):  # a stage that returned without finish(): its train.log handler must not leak
            run.close()


class StageRun:
    """One stage's run: its directory, its TRL arguments, its metrics."""

    def __init__(self, cfg: DictConfig, name: str | None = None) -> None:
        forget_previous_stage()  # a pipeline's earlier stage must not make this one's models load ZeRO-3-sharded
        self.cfg = cfg
        self.name = name or str(cfg.get("step") or cfg.stage)
        self.dir = Path(cfg.output_dir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics: dict[str, float] = {}
        # (held-out row indices per task, metric keys to break down): set by stages whose metrics mean something per
        # task, e.g. ``stage.per_task = (task_indices(eval_rows), ["eval_accuracy"])``.
        self.per_task: tuple[dict[str, list[int]], list[str]] = ({}, [])
        if str(cfg.resume) not in ("auto", "fresh", "true", "false", "True", "False"):
            raise AlignmentError(f"resume='{cfg.resume}' must be auto (or true) or fresh (or false)")
        # Fail on a bad value before loading models or data, and before touching earlier output.
        validate_trainer_values(OmegaConf.to_container(cfg.trainer, resolve=True))
        self.config_hash, self._hashed = stage_config_hash(cfg)
        # Seed before the stage loads models: new heads (reward/value ``score``) and adapters (LoRA A) are initialised
        # at load or wrap time, before any Trainer seeds; unseeded, two runs of one config would differ.
        from transformers import set_seed

        set_seed(int(cfg.seed))
        if self.fresh:
            self._clear()
        else:
            self._check_resumable()
            self._clear_unfinished()
        self._write_config()
        self._log_handler = (
            logging.FileHandler(self.dir / "train.log", encoding="utf-8")
            if is_main_process()
            else logging.NullHandler()
        )
        self._log_handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        self._log_handler.addFilter(SecretFilter())
        for stale in list(_ACTIVE):  # a StageRun that was never finished nor closed (used outside run_stage)
            stale.close()
        logging.getLogger().addHandler(self._log_handler)
        from alignment.callbacks import metrics_log

        metrics_log.addHandler(self._log_handler)
        metrics_log.setLevel(logging.INFO)
        _ACTIVE.append(self)
        interrupt.set_stage(self.name, self.dir)
        if not interactive():
            quiet_library_bars()
        warn_if_base_model(cfg)

    @property
    def fresh(self) -> bool:
        return str(self.cfg.resume) in ("fresh", "false", "False")

    # -- layout -------------------------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    def _clear(self) -> None:
        if not is_main_process():  # only rank 0 touches files; the others wait for its outputs
            return
        for child in self.dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _write_config(self) -> None:
        if not is_main_process():
            return
        resolved = OmegaConf.to_container(self.cfg, resolve=True)
        text = OmegaConf.to_yaml(OmegaConf.create(scrub(resolved)))
        write_atomic(self.dir / "config.yaml", text)
        state = {"config_hash": self.config_hash, "config": self._hashed}
        write_atomic(self.dir / RUN_STATE, json.dumps(state, indent=2, ensure_ascii=False, default=str) + "\n")

    def _check_resumable(self) -> None:
        """Refuse to resume checkpoints (or overwrite outputs) that were made under another config or inputs."""
        if not checkpoint_steps(self.dir) and not (self.dir / "metrics.json").exists():
            return
        old = previous_config(self.dir)
        if old is None or old.get("config_hash") == self.config_hash:
            return
        changed = changed_keys(old.get("config") or {}, self._hashed)
        raise AlignmentError(
            f"{self.dir} holds a run made under a different config or inputs (changed: {', '.join(changed[:6])}); "
            "resuming it would mix the two. Re-run with resume=fresh to start this stage over, or pick another "
            "output_dir"
        )

    def _clear_unfinished(self) -> None:
        """Drop what a killed run may have left: temp files/dirs, half-written checkpoints, outputs of an older run.

        Outputs are only trusted with a ``metrics.json`` beside them; a resumed run rewrites them all.
        """
        if not is_main_process():
            return
        for child in self.dir.iterdir():
            if child.name.startswith(".") or child.name in ("metrics.json", *OUTPUT_DIRS):
                remove_path(child)
        for step in incomplete_checkpoints(self.dir):
            remove_path(self.dir / f"checkpoint-{step}")

    def last_checkpoint(self) -> str | None:
        """The newest complete ``checkpoint-<step>`` dir to resume from, unless ``resume=fresh``."""
        if self.fresh:
            return None
        steps = checkpoint_steps(self.dir)
        return str(self.dir / f"checkpoint-{steps[-1]}") if steps else None

    # -- TRL arguments ------------------------------------------------------------------------------------------
    def trainer_args(self, config_cls: type, **overrides: Any):
        """Build the stage's TRL config from ``trainer.*``, with output, seed and tracking set by the run."""
        values = OmegaConf.to_container(self.cfg.trainer, resolve=True)
        validate_trainer_values(values)
        # Pass only what differs from TRL's defaults: TRL then derives the rest itself, and deprecated aliases
        # (gradient_checkpointing -> activation_checkpointing) are not set twice.
        values = trainer_values(values, self.cfg.distributed)
        values = {k: v for k, v in values.items() if v != _trl_default(config_cls, k)}
        if values.get("bf16") is None and "bf16" in {f.name for f in dataclasses.fields(config_cls)}:
            values["bf16"] = _bf16_supported()
        values.update(
            output_dir=str(self.dir),
            seed=int(self.cfg.seed),
            report_to=self._report_to(),
            run_name=self.cfg.tracking.get("run_name") or f"{Path(self.cfg.output_dir).name}-{self.name}",
        )
        if any(f.name == "max_length" for f in dataclasses.fields(config_cls)):
            values["max_length"] = int(self.cfg.data.max_length)
        if values.get("disable_tqdm") is None and not interactive():
            values["disable_tqdm"] = True  # no bar redraws in a log file: ProgressLog prints plain lines instead
        values.update(overrides)
        # HF pickles these arguments into every checkpoint (training_args.bin): no secret may ride along.
        values = scrub(values)
        try:
            return config_cls(**values)
        except (ValueError, TypeError) as err:
            raise AlignmentError(f"invalid trainer settings for stage {self.name}: {err}") from err

    def evaluate(self, trainer, suffix: str = "") -> None:
        """Held-out metrics of the trainer's model (same masks as training), recorded as ``<key><suffix>``; also
        per task family for the keys ``self.per_task`` names (see stages/task_metrics.py)."""
        if suffix == "_before" and not self.cfg.get("evaluate_before", True):
            return
        if trainer.eval_dataset is not None:
            self._attach(trainer)
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
        from alignment.oracle_eval import oracle_scores

        # Every rank generates (ZeRO-3 needs them all for each forward); rank 0 keeps the samples.
        samples = self.dir / f"oracle_samples{suffix}.jsonl" if is_main_process() else None
        # A model loaded ZeRO-3-partitioned has no DeepSpeed engine to gather its layers (module ``ds_id``) until
        # training starts: gather it whole on each rank for this evaluation.
        with gathered_params(model) if not hasattr(model, "ds_id") else contextlib.nullcontext():
            scores = oracle_scores(model, tokenizer, self.cfg, samples_path=samples)
        if "oracle_reward" in scores:
            log.info(
                "[oracle] %s: oracle_reward%s %.4g (n=%d)",
                self.name,
                suffix,
                scores["oracle_reward"],
                scores.get("oracle_samples", 0),
            )
        self.metrics |= {f"{key}{suffix}": value for key, value in scores.items()}

    def _report_to(self) -> str:
        backend = self.cfg.tracking.backend
        if backend == "none":
            return "none"
        if backend == "wandb":
            os.environ.setdefault("WANDB_PROJECT", str(self.cfg.tracking.project))
            os.environ.setdefault("WANDB_DIR", str(self.dir))
            if not _wandb_configured():
                os.environ["WANDB_MODE"] = "offline"
            return "wandb"
        if backend == "tensorboard":
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.dir / "runs")
            return "tensorboard"
        raise AlignmentError(f"tracking.backend='{backend}' must be none, wandb or tensorboard")

    # -- training ---------------------------------------------------------------------------------------------
    def _attach(self, trainer) -> None:
        """Once per trainer: live records, checkpoints by time, the Ctrl-C stop, and progress lines off a terminal."""
        if getattr(trainer, "_alignment_callbacks", False):
            return
        trainer._alignment_callbacks = True
        from transformers import PrinterCallback

        from alignment.callbacks import InterruptStop, LiveLog, ProgressLog, TimedSave

        rows = held_out_rows(trainer.eval_dataset) if trainer.eval_dataset is not None else None
        trainer.add_callback(LiveLog(self.name, self.dir / "log_history.jsonl", eval_rows=rows))
        trainer.add_callback(TimedSave(self.cfg.get("save_every_minutes")))
        trainer.add_callback(InterruptStop())
        if trainer.args.disable_tqdm and not interactive():
            trainer.remove_callback(PrinterCallback)  # it prints every metrics dict; train.log has them
            trainer.add_callback(ProgressLog())

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
        from alignment.callbacks import NonFiniteGuard, any_rank, truncate_log_history

        if is_main_process():
            truncate_log_history(self.dir / "log_history.jsonl", step)
        trainer.add_callback(NonFiniteGuard(self.dir))
        self._attach(trainer)
        with interrupt.during_training():
            try:
                result = trainer.train(resume_from_checkpoint=ckpt)
            except Exception as err:
                if is_out_of_disk(err, self.dir):
                    for step in incomplete_checkpoints(self.dir):  # free what the failed save took
                        remove_path(self.dir / f"checkpoint-{step}")
                    raise out_of_disk(self.dir, err) from err
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
        """Save model and tokenizer to ``<subdir>/`` atomically (a temp dir renamed when complete).

        A PEFT model also saves its adapter to ``adapter/`` (with the base model's id); with ``peft.merge=true``
        ``<subdir>/`` then holds the merged plain HF model, else (or for prompt learning, which cannot merge) the
        adapter, which ``load_causal_lm`` loads on its base.
        """
        if hasattr(model, "peft_config"):
            from alignment.adapters import can_merge

            self._save_dir(self.dir / ("adapter" if subdir == "model" else f"{subdir}_adapter"), model, tokenizer)
            if not self.cfg.peft.get("merge", True) or not can_merge(model):
                return self._save_dir(self.dir / subdir, model, tokenizer)
            model, state = merge_adapter(model)  # under ZeRO-3 the merge gathers the weights and returns them
            return self._save_dir(self.dir / subdir, model, tokenizer, state)
        return self._save_dir(self.dir / subdir, model, tokenizer)

    def _save_dir(self, target: Path, model, tokenizer, state: dict | None = None) -> Path:
        # Under ZeRO-3 every rank takes part in gathering the whole weights onto rank 0, which alone writes them.
        state = full_state_dict(model) if state is None else state
        if not is_main_process():
            barrier()  # wait for rank 0's files: the next stage reads them
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=self.dir))
        try:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            replace_dir(tmp, target)
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_out_of_disk(err, self.dir):
                raise out_of_disk(target, err) from err
            if isinstance(err, OSError):
                raise AlignmentError(f"could not save the model to {target}: {err}") from err
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        barrier()
        return target

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
        """Write ``metrics.json`` (atomically, last): the stage is complete."""
        if is_main_process():
            write_atomic(self.dir / "metrics.json", json.dumps(self.metrics, indent=2, sort_keys=True) + "\n")
        log.info("%s finished: %s", self.name, self.dir)
        self.close()
        return dict(self.metrics)

    def close(self, err: BaseException | None = None) -> None:
        """Detach this stage's ``train.log``; with ``err``, write it there first (the traceback at debug level)."""
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if err is not None:
            interrupted = isinstance(err, RunInterrupted | KeyboardInterrupt)
            level = logging.WARNING if interrupted else logging.ERROR
            text = str(err) or type(err).__name__
            self._file_record(level, text if interrupted else f"{self.name} failed: {text}")
            trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            self._file_record(logging.DEBUG, trace.rstrip())
        from alignment.callbacks import metrics_log

        metrics_log.removeHandler(self._log_handler)
        logging.getLogger().removeHandler(self._log_handler)
        self._log_handler.close()

    def _file_record(self, level: int, message: str) -> None:
        """Write straight to train.log, whatever the loggers' levels: the console shows the error once, by the CLI."""
        record = logging.LogRecord("alignment", level, __file__, 0, message, None, None)
        self._log_handler.handle(record)


def held_out_rows(dataset) -> int:
    """How many held-out rows an evaluation covers: a packed dataset (TRL's ``seq_lengths``) counts the rows packed
    into its sequences, not the sequences."""
    if "seq_lengths" in (getattr(dataset, "column_names", None) or []):
        return sum(len(lengths) for lengths in dataset["seq_lengths"])
    return len(dataset)


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


def validate_trainer_values(values: dict[str, Any]) -> None:
    """Reject values TRL would accept silently but that cannot train."""
    for key in ("learning_rate", "value_learning_rate"):
        lr = values.get(key)
        if lr is not None and lr <= 0:
            raise AlignmentError(f"trainer.{key} must be positive, got {lr}")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        n = values.get(key)
        if n is not None and n <= 0:
            raise AlignmentError(f"trainer.{key} must be a positive integer, got {n}")


def _trl_default(config_cls: type, name: str) -> Any:
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return getattr(f.default, "value", f.default)
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return dataclasses.MISSING


def _bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _wandb_configured() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="ignore")

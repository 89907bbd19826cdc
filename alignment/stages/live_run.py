"""What a stage's run writes while it goes: its ``train.log`` (a failure written into it), the trainer's live records
(``log_history.jsonl``, checkpoints by time, the Ctrl-C stop, progress lines off a terminal), and the scope
``run_stage`` runs a stage in.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

from alignment import interrupt
from alignment.distributed import is_main_process
from alignment.errors import RunInterrupted
from alignment.progress import interactive
from alignment.secrets import SecretFilter

_OPEN: list[TrainLog] = []  # the train.log of the running stage, for stage_scope to write a failure into


@contextlib.contextmanager
def stage_scope() -> Iterator[None]:
    """What ``run_stage`` runs a stage in: Ctrl-C handling (:mod:`alignment.interrupt`) and, when the stage fails,
    its error written to its ``train.log`` (the message; the traceback at debug level)."""
    with interrupt.handled():
        try:
            yield
        except BaseException as err:
            for train_log in list(_OPEN):
                train_log.close(err)
            raise
        for train_log in list(_OPEN):  # a stage that returned without finish(): its train.log handler must not leak
            train_log.close()


class TrainLog:
    """A stage's ``train.log``: every log record (and the metrics lines) while the stage runs, secrets masked; only
    rank 0 writes it."""

    def __init__(self, name: str, stage_dir: Path) -> None:
        self.name = name
        self.handler = (
            logging.FileHandler(stage_dir / "train.log", encoding="utf-8")
            if is_main_process()
            else logging.NullHandler()
        )
        self.handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        self.handler.addFilter(SecretFilter())
        for stale in list(_OPEN):  # a stage run that was never finished nor closed (used outside run_stage)
            stale.close()
        logging.getLogger().addHandler(self.handler)
        from alignment.callbacks import metrics_log

        metrics_log.addHandler(self.handler)
        metrics_log.setLevel(logging.INFO)
        _OPEN.append(self)

    def close(self, err: BaseException | None = None) -> None:
        """Detach ``train.log``; with ``err``, write it there first (the traceback at debug level)."""
        if self in _OPEN:
            _OPEN.remove(self)
        if err is not None:
            interrupted = isinstance(err, RunInterrupted | KeyboardInterrupt)
            level = logging.WARNING if interrupted else logging.ERROR
            text = str(err) or type(err).__name__
            self._file_record(level, text if interrupted else f"{self.name} failed: {text}")
            trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            self._file_record(logging.DEBUG, trace.rstrip())
        from alignment.callbacks import metrics_log

        metrics_log.removeHandler(self.handler)
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()

    def _file_record(self, level: int, message: str) -> None:
        """Write straight to train.log, whatever the loggers' levels: the console shows the error once, by the CLI."""
        record = logging.LogRecord("alignment", level, __file__, 0, message, None, None)
        self.handler.handle(record)


def attach_live_records(trainer, name: str, stage_dir: Path, save_every_minutes: float | None) -> None:
    """Once per trainer: live records, checkpoints by time, the Ctrl-C stop, and progress lines off a terminal."""
    if getattr(trainer, "_alignment_callbacks", False):
        return
    trainer._alignment_callbacks = True
    from transformers import PrinterCallback

    from alignment.callbacks import InterruptStop, LiveLog, ProgressLog, TimedSave

    rows = held_out_rows(trainer.eval_dataset) if trainer.eval_dataset is not None else None
    trainer.add_callback(LiveLog(name, stage_dir / "log_history.jsonl", eval_rows=rows))
    trainer.add_callback(TimedSave(save_every_minutes))
    trainer.add_callback(InterruptStop())
    if trainer.args.disable_tqdm and not interactive():
        trainer.remove_callback(PrinterCallback)  # it prints every metrics dict; train.log has them
        trainer.add_callback(ProgressLog())


def held_out_rows(dataset) -> int:
    """How many held-out rows an evaluation covers: a packed dataset (TRL's ``seq_lengths``) counts the rows packed
    into its sequences, not the sequences."""
    if "seq_lengths" in (getattr(dataset, "column_names", None) or []):
        return sum(len(lengths) for lengths in dataset["seq_lengths"])
    return len(dataset)

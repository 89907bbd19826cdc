"""Ctrl-C (SIGINT) while a stage runs: stop cleanly, keep what can be resumed, and say so in one line.

During training the first Ctrl-C only sets a flag: the trainer saves a checkpoint at the end of the current step and
stops (``alignment.callbacks.InterruptStop``, PPO's checkpoint callback), and the stage raises
:class:`~alignment.errors.RunInterrupted` naming that checkpoint. A second Ctrl-C, or one outside training (loading,
evaluation, generation, saving), raises it at once: nothing new is kept. Saves are atomic or checked on resume
(a half-written checkpoint is removed), so an abort never leaves output that looks finished.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from alignment.errors import RunInterrupted


class _Guard:
    installed = False
    previous = None
    training = False
    requested = False
    stage: tuple[str, Path] | None = None  # (name, dir) of the running stage, for the message


_GUARD = _Guard()


def interrupted(stage: tuple[str, Path] | None, kept: Path | None = None) -> RunInterrupted:
    """The one-line error for a stopped run: what was kept, and that the same command resumes from it."""
    if stage is None:
        return RunInterrupted("interrupted before the stage started; nothing was kept")
    name, stage_dir = stage
    if kept is not None:
        return RunInterrupted(f"{name} interrupted: kept {kept}; run the same command again to resume from it")
    from alignment.stages.checkpoints import checkpoint_steps

    steps = checkpoint_steps(Path(stage_dir))
    if steps:
        last = Path(stage_dir) / f"checkpoint-{steps[-1]}"
        return RunInterrupted(
            f"{name} interrupted: nothing new was kept; run the same command again to resume from {last}"
        )
    return RunInterrupted(f"{name} interrupted: nothing was kept; run the same command again to start it over")


def _on_sigint(signum, frame) -> None:
    if _GUARD.training and not _GUARD.requested:
        _GUARD.requested = True
        print(
            "\nCtrl-C: saving a checkpoint at the end of this step, then stopping (Ctrl-C again aborts at once, "
            "without saving)",
            file=sys.stderr,
            flush=True,
        )
        return
    raise interrupted(_GUARD.stage)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Handle SIGINT as this module says while the block runs; restore the previous handler after it.

    Nested blocks share the outer handler. Only the main thread can set signal handlers: elsewhere this does nothing.
    """
    if _GUARD.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    _GUARD.previous = signal.signal(signal.SIGINT, _on_sigint)
    _GUARD.installed = True
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, _GUARD.previous)
        _GUARD.installed, _GUARD.training, _GUARD.requested, _GUARD.stage = False, False, False, None


def set_stage(name: str, stage_dir: Path) -> None:
    """Name the running stage and its dir in interrupt messages."""
    _GUARD.stage = (name, Path(stage_dir))


@contextlib.contextmanager
def during_training() -> Iterator[None]:
    """While the block runs, the first Ctrl-C asks for a stop (:func:`stop_requested`) instead of raising."""
    with handled():
        _GUARD.training, _GUARD.requested = True, False
        try:
            yield
        finally:
            _GUARD.training = False


def stop_requested() -> bool:
    """Whether a Ctrl-C asked the training loop to save and stop."""
    return _GUARD.requested


def request_stop() -> None:
    """What the first Ctrl-C does during training (tests call it to simulate one)."""
    _GUARD.requested = True


def stage() -> tuple[str, Path] | None:
    return _GUARD.stage

"""Ctrl-C handling: during training the first SIGINT asks for a stop, a second or one outside training raises
RunInterrupted (exit code 130) with a one-line message saying what was kept; the previous handler comes back."""

from __future__ import annotations

import os
import signal

import pytest

from alignment import interrupt
from alignment.errors import AlignmentError, RunInterrupted


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread before the next bytecode


def test_outside_training_ctrl_c_raises_at_once_and_says_nothing_new_was_kept(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RunInterrupted) as err, interrupt.handled():
        interrupt.set_stage("dpo", tmp_path)
        ctrl_c()
    assert err.value.exit_code == 130 and isinstance(err.value, AlignmentError)
    assert str(err.value) == (
        f"dpo interrupted: nothing new was kept; run the same command again to resume from {tmp_path}/checkpoint-4"
    )


def test_during_training_the_first_ctrl_c_asks_for_a_stop_and_the_second_aborts(tmp_path, capsys):
    with interrupt.handled():
        interrupt.set_stage("sft", tmp_path)
        with pytest.raises(RunInterrupted) as err, interrupt.during_training():
            ctrl_c()
            assert interrupt.stop_requested()
            assert "saving a checkpoint at the end of this step" in capsys.readouterr().err
            ctrl_c()
    assert str(err.value) == "sft interrupted: nothing was kept; run the same command again to start it over"


def test_the_previous_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    with interrupt.handled():
        assert signal.getsignal(signal.SIGINT) is not before
        with interrupt.during_training():  # nested: shares the outer handler
            pass
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
    assert interrupt.stage() is None and not interrupt.stop_requested()


def test_messages(tmp_path):
    kept = tmp_path / "checkpoint-7"
    assert str(interrupt.interrupted(("rm", tmp_path), kept)) == (
        f"rm interrupted: kept {kept}; run the same command again to resume from it"
    )
    assert str(interrupt.interrupted(None)) == "interrupted before the stage started; nothing was kept"

"""The callbacks every Trainer stage gets: checkpoints by time, the Ctrl-C stop, live log rows, resume truncation."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from alignment import interrupt
from alignment.callbacks import InterruptStop, LiveLog, TimedSave, truncate_log_history

ARGS = SimpleNamespace(device="cpu")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def step_end(callback, control: TrainerControl | None = None) -> TrainerControl:
    control = control or TrainerControl()
    callback.on_step_end(ARGS, TrainerState(), control)
    return control


def test_timed_save_asks_for_a_checkpoint_once_the_minutes_passed_since_the_start_or_the_last_save():
    clock = FakeClock()
    save = TimedSave(0.5, clock=clock)
    save.on_train_begin(ARGS, TrainerState(), TrainerControl())
    clock.now += 29.9
    assert step_end(save).should_save is False
    clock.now += 0.1  # 30 s since the start
    assert step_end(save).should_save is True
    save.on_save(ARGS, TrainerState(), TrainerControl())  # any save (step-based too) restarts the clock
    clock.now += 20
    assert step_end(save).should_save is False
    clock.now += 10
    assert step_end(save).should_save is True


def test_timed_save_counts_from_the_start_of_training_not_from_construction():
    clock = FakeClock()
    save = TimedSave(1.0, clock=clock)
    clock.now += 300  # model loading, evaluation before training
    save.on_train_begin(ARGS, TrainerState(), TrainerControl())
    clock.now += 59
    assert step_end(save).should_save is False


@pytest.mark.parametrize("minutes", [None, 0, 0.0])
def test_timed_save_off(minutes):
    clock = FakeClock()
    save = TimedSave(minutes, clock=clock)
    clock.now += 1e6
    assert step_end(save).should_save is False


def test_timed_save_leaves_a_step_based_save_alone():
    clock = FakeClock()
    save = TimedSave(5, clock=clock)
    control = TrainerControl(should_save=True)  # DefaultFlowCallback asked for a save_steps checkpoint
    assert step_end(save, control).should_save is True


def test_interrupt_stop_saves_and_stops_only_after_a_ctrl_c():
    stop = InterruptStop()
    with interrupt.during_training():
        control = step_end(stop)
        assert (control.should_save, control.should_training_stop) == (False, False)
        interrupt.request_stop()
        control = step_end(stop)
        assert (control.should_save, control.should_training_stop) == (True, True)
    assert not interrupt.stop_requested()  # the flag does not outlive the stage


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_truncate_log_history_keeps_the_rows_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "log_history.jsonl"
    history = [
        {"loss": 2.0, "train_runtime": 1.0, "step": 1},  # step rows may carry train_runtime (tokens/s logging)
        {"loss": 1.5, "step": 2},
        {"eval_loss": 1.7, "step": 2},
        {"loss": 1.2, "step": 3},
        {"loss": 1.1, "step": 4},
        {"train_runtime": 9.0, "train_loss": 1.4, "step": 4},  # summary row of a run stopped by Ctrl-C
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in history) + '{"loss": 1.0, "st', encoding="utf-8")
    truncate_log_history(path, 2)
    assert rows(path) == history[:3]
    truncate_log_history(path, 0)  # a fresh start (no checkpoint): nothing is kept
    assert path.read_text(encoding="utf-8") == ""
    truncate_log_history(tmp_path / "missing.jsonl", 3)  # no file yet: nothing to do
    assert not (tmp_path / "missing.jsonl").exists()


def test_truncate_then_resume_gives_no_duplicate_steps(tmp_path):
    path = tmp_path / "log_history.jsonl"
    first = [{"loss": 3.0 - s / 10, "step": s} for s in range(1, 6)]  # killed after step 5, checkpoint at step 3
    path.write_text("".join(json.dumps(r) + "\n" for r in first), encoding="utf-8")
    truncate_log_history(path, 3)
    log = LiveLog("sft", path)
    state = TrainerState()
    log.on_train_begin(ARGS, state, TrainerControl())
    for s in range(4, 7):
        state.global_step = s
        state.log_history.append({"loss": 9.0, "step": s})
        log.on_log(ARGS, state, TrainerControl(), logs={"loss": 9.0})
    assert [r["step"] for r in rows(path)] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows(path)] == [2.9, 2.8, 2.7, 9.0, 9.0, 9.0]


def test_live_log_appends_each_training_row_as_logged_but_not_evaluations_outside_training(tmp_path):
    path = tmp_path / "log_history.jsonl"
    log = LiveLog("dpo", path)
    state = TrainerState()
    state.log_history.append({"eval_loss": 0.7, "step": 0})  # the evaluation before training
    log.on_log(ARGS, state, TrainerControl(), logs={})
    assert not path.exists()
    log.on_train_begin(ARGS, state, TrainerControl())
    state.log_history = [{"loss": 0.69, "epoch": 0.1, "step": 1}]
    log.on_log(ARGS, state, TrainerControl(), logs={})
    assert rows(path) == [{"loss": 0.69, "epoch": 0.1, "step": 1}]  # on disk at once, before training ends
    state.log_history.append({"train_runtime": 3.0, "train_loss": 0.69, "step": 1})
    log.on_log(ARGS, state, TrainerControl(), logs={})
    log.on_train_end(ARGS, state, TrainerControl())
    state.log_history.append({"eval_loss": 0.6, "step": 1})  # the evaluation after training
    log.on_log(ARGS, state, TrainerControl(), logs={})
    assert rows(path) == state.log_history[:2]


def test_live_log_skips_the_summary_row_of_a_run_stopped_by_ctrl_c(tmp_path):
    path = tmp_path / "log_history.jsonl"
    log = LiveLog("sft", path)
    state = TrainerState()
    with interrupt.during_training():
        log.on_train_begin(ARGS, state, TrainerControl())
        interrupt.request_stop()
        state.log_history = [{"loss": 1.0, "train_runtime": 2.0, "step": 3}]
        log.on_log(ARGS, state, TrainerControl(), logs={})
        state.log_history.append({"train_runtime": 2.0, "train_loss": 1.0, "step": 3})
        log.on_log(ARGS, state, TrainerControl(), logs={})
    assert [r.get("loss") for r in rows(path)] == [1.0]


def test_eval_summary_names_the_headline_metrics_and_n():
    from alignment.callbacks import eval_summary

    metrics = {"eval_loss": 0.41234, "eval_rewards/accuracies": 0.9375, "eval_rewards/accuracies/chat": 1.0}
    assert eval_summary("dpo", 300, metrics, 600) == (
        "[eval] dpo step 300: eval_loss 0.4123, eval_rewards/accuracies 0.9375 (n=600)"
    )
    assert eval_summary("rm", 0, {"eval_accuracy": 1}, None) == "[eval] rm step 0: eval_accuracy 1"

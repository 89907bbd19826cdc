"""PPO's checkpoint callback: saves every save_steps steps, every save_every_minutes, and on Ctrl-C (then stops)."""

from __future__ import annotations

from types import SimpleNamespace

from alignment import interrupt
from alignment.rl import checkpoint


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_trainer():
    return SimpleNamespace(step=0, should_stop=False, accelerator=SimpleNamespace(num_processes=1))


def run_steps(callback, trainer, clock, steps: int, seconds_per_step: float) -> None:
    for _ in range(steps):
        clock.now += seconds_per_step
        trainer.step += 1
        callback({"loss": 0.5, "policy_loss": 0.1, "value_loss": 0.2})


def test_saves_by_steps_and_by_time(monkeypatch, tmp_path):
    saved = []
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda trainer, d, limit: saved.append(trainer.step))
    clock, trainer = FakeClock(), fake_trainer()
    callback = checkpoint.CheckpointCallback(trainer, tmp_path, 4, 2, save_every_minutes=0.5, clock=clock)
    run_steps(callback, trainer, clock, 10, seconds_per_step=7.0)
    # by steps at 4 (28 s) and 8; each save restarts the clock, so 30 s never pass between saves
    assert saved == [4, 8]
    saved.clear()
    clock, trainer = FakeClock(), fake_trainer()
    callback = checkpoint.CheckpointCallback(trainer, tmp_path, 0, 2, save_every_minutes=0.5, clock=clock)
    run_steps(callback, trainer, clock, 10, seconds_per_step=7.0)
    assert saved == [5, 10]  # by time alone: 35 s, then 35 s after that save
    saved.clear()
    clock, trainer = FakeClock(), fake_trainer()
    callback = checkpoint.CheckpointCallback(trainer, tmp_path, 0, 2, save_every_minutes=None, clock=clock)
    run_steps(callback, trainer, clock, 10, seconds_per_step=700.0)
    assert saved == []


def test_ctrl_c_saves_this_step_and_stops_the_loop(monkeypatch, tmp_path):
    saved = []
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda trainer, d, limit: saved.append(trainer.step))
    clock, trainer = FakeClock(), fake_trainer()
    callback = checkpoint.CheckpointCallback(trainer, tmp_path, 0, 2, save_every_minutes=5, clock=clock)
    with interrupt.during_training():
        run_steps(callback, trainer, clock, 2, seconds_per_step=1.0)
        assert (saved, trainer.should_stop) == ([], False)
        interrupt.request_stop()
        run_steps(callback, trainer, clock, 1, seconds_per_step=1.0)
    assert (saved, trainer.should_stop) == ([3], True)


def test_ctrl_c_without_saving_under_sharded_training(monkeypatch, tmp_path):
    saved = []
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda trainer, d, limit: saved.append(trainer.step))
    clock, trainer = FakeClock(), fake_trainer()
    callback = checkpoint.CheckpointCallback(trainer, tmp_path, 0, 2, 0.01, can_save=False, clock=clock)
    with interrupt.during_training():
        run_steps(callback, trainer, clock, 2, seconds_per_step=60.0)  # no saves by time either
        interrupt.request_stop()
        run_steps(callback, trainer, clock, 1, seconds_per_step=1.0)
    assert (saved, trainer.should_stop) == ([], True)

"""Plain progress lines where stderr is not a terminal: at most every ~10% or 30 s, with rate and ETA."""

from __future__ import annotations

import io

from alignment.progress import ProgressLines, duration, progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_duration():
    assert [duration(s) for s in (0, 42.4, 60, 910, 7500)] == ["0s", "42s", "1m00s", "15m10s", "2h05m"]


def test_lines_every_tenth_of_the_work_with_rate_and_eta():
    clock, out = FakeClock(), io.StringIO()
    lines = ProgressLines(100, clock=clock, stream=out)
    lines.update(0)
    printed = []
    for step in range(1, 101):
        clock.now += 2.0
        if line := lines.update(step, {"loss": 1.23456}):
            printed.append(line)
    assert len(printed) == 10
    assert printed[0] == "step 10/100 (10%), loss 1.235, 2 s/step, eta 3m00s"
    assert printed[-1] == "step 100/100 (100%), loss 1.235, 2 s/step, eta 0s"
    assert out.getvalue().splitlines() == printed


def test_lines_every_30_seconds_when_steps_are_slow_and_eta_counts_from_a_resumed_step():
    clock, out = FakeClock(), io.StringIO()
    lines = ProgressLines(549, clock=clock, stream=out)
    lines.update(100)  # resumed at step 100: the rate covers this session only
    clock.now += 29
    assert lines.update(101) is None
    clock.now += 2  # 31 s since the last line
    assert lines.update(102) == "step 102/549 (18%), 15.5 s/step, eta 1h55m"
    clock.now += 10
    assert lines.update(103) is None


def test_progress_iterates_everything_and_prints_plain_lines_off_a_terminal(capsys):
    assert list(progress(range(5), 5, "oracle eval: scoring")) == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err  # pytest's stderr is not a terminal
    assert err.splitlines()[0].startswith("oracle eval: scoring: batch 1/5 (20%)")
    assert "\r" not in err and len(err.splitlines()) == 5

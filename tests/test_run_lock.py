"""One run per output dir: a second run on a busy dir is refused in one line naming the first; a lock left by a
killed run is taken over; launched ranks do not lock; a sweep job's collision record does not outlive the holder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignment.errors import AlignmentError
from alignment.run_lock import LOCK_FILE, acquire, held_message, release, run_lock
from tests.conftest import REPO, cli_env, cli_in_one_process, read_metrics, run_cli


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale_lock(run_dir: Path) -> None:
    """The lock file a SIGKILLed run leaves: its record, and no flock (that died with the process)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = {"pid": _dead_pid(), "host": socket.gethostname(), "command": "python -m alignment", "started": "then"}
    (run_dir / LOCK_FILE).write_text(json.dumps(holder) + "\n", encoding="utf-8")


def test_a_second_holder_is_refused_with_the_first_named(tmp_path):
    fd = acquire(tmp_path)
    try:
        holder = json.loads((tmp_path / LOCK_FILE).read_text(encoding="utf-8"))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(AlignmentError) as err:  # flock is per open file: a second open in this process conflicts
            acquire(tmp_path)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{tmp_path} is in use by another run (pid {os.getpid()} ")
        assert holder["started"] in message and holder["command"] in message
    finally:
        release(tmp_path, fd)
    assert not (tmp_path / LOCK_FILE).exists()  # released: nothing left that would look stale


def test_a_stale_lock_is_taken_over_with_a_notice(tmp_path, caplog):
    _stale_lock(tmp_path)
    with caplog.at_level("WARNING", logger="alignment"), run_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text(encoding="utf-8"))["pid"] == os.getpid()
    notices = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert len(notices) == 1 and "is no longer running" in notices[0]


def test_a_lock_held_by_an_orphan_of_a_dead_run_is_taken_over(tmp_path, caplog):
    # A forked child of the killed run (a data-loader worker) still holds the flock; the pid on record is gone.
    import fcntl

    _stale_lock(tmp_path)
    orphan = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    fcntl.flock(orphan, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with caplog.at_level("WARNING", logger="alignment"), run_lock(tmp_path):
            assert json.loads((tmp_path / LOCK_FILE).read_text(encoding="utf-8"))["pid"] == os.getpid()
    finally:
        os.close(orphan)
    assert any("took over" in r.getMessage() for r in caplog.records)


def test_launched_ranks_do_not_lock(tmp_path, monkeypatch):
    fd = acquire(tmp_path)  # the launching process holds it ...
    try:
        monkeypatch.setenv("ALIGNMENT_LAUNCHED", "1")
        with run_lock(tmp_path):  # ... and its ranks run under it, without trying to take it
            pass
    finally:
        release(tmp_path, fd)


def test_a_sweep_jobs_collision_record_is_dropped_when_the_holder_ends(tmp_path):
    fd = acquire(tmp_path)
    holder = json.loads((tmp_path / LOCK_FILE).read_text(encoding="utf-8"))
    # What the other sweep's job records (alignment.sweep.record_failure) after it found this dir busy.
    (tmp_path / "failed.json").write_text(json.dumps({"error": held_message(tmp_path, holder)}), encoding="utf-8")
    release(tmp_path, fd)
    assert not (tmp_path / "failed.json").exists()
    fd = acquire(tmp_path)
    (tmp_path / "failed.json").write_text(json.dumps({"error": "something else"}), encoding="utf-8")
    release(tmp_path, fd)
    assert (tmp_path / "failed.json").exists()  # a real failure stays


# -- through the CLI ------------------------------------------------------------------------------------------------
ARGS = [
    "stage=sft",
    "data.max_train_rows=16",
    "data.max_eval_rows=8",
    "data.max_length=64",
    "oracle_eval.enabled=false",
    "evaluate_before=false",
    "trainer.max_steps=6",
    "trainer.per_device_train_batch_size=4",
    "trainer.logging_steps=1",
]
ENV = cli_env(OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_a_second_run_on_a_busy_output_dir_is_refused_and_the_first_finishes(tmp_path):
    out, log = tmp_path / "run", tmp_path / "first.log"
    with log.open("w") as sink:
        first = subprocess.Popen(
            [sys.executable, "-m", "alignment", *ARGS, f"output_dir={out}"],
            cwd=REPO,
            env=ENV,
            stdout=sink,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK_FILE).exists() or f'"pid": {first.pid}' not in (out / LOCK_FILE).read_text():
            assert first.poll() is None, f"the first run ended ({first.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        second = run_cli(*ARGS, f"output_dir={out}", check=False, env=ENV)
        assert first.poll() is None, "the first run ended before the second tried: make it longer"
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, log.read_text()[-3000:]
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert lines[0].startswith(f"error: {out} is in use by another run (pid {first.pid} on {socket.gethostname()}, ")
    assert "python -m alignment stage=sft" in lines[0]
    # The first finished intact, and released its lock.
    assert read_metrics(out / "sft")["global_step"] == 6
    assert (out / "sft" / "model" / "model.safetensors").exists()
    assert not (out / LOCK_FILE).exists()

    # A lock left by a killed run is taken over with a one-line notice, and the run goes on.
    _stale_lock(out)
    (again,) = cli_in_one_process([[*ARGS, f"output_dir={out}"]], ENV)
    assert again["code"] == 0, again["stderr"][-3000:]
    output = again["stdout"] + again["stderr"]
    assert len([line for line in output.splitlines() if "took over" in line]) == 1, output[-3000:]
    assert "finished earlier" in again["stdout"] and not (out / LOCK_FILE).exists()

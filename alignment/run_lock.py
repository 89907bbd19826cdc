"""One run per output dir: ``<output_dir>/.alignment.lock``, an OS lock held for the run's lifetime.

The lock is ``fcntl.flock`` on that file, so it dies with its process: a killed run never blocks the next one. The
file also says who holds it (pid, host, command line, start time) for the error a second run gets. A lock file whose
flock nobody holds, or whose pid is gone on this host, was left by a killed run: it is taken over with a one-line
notice. Processes started by ``accelerate launch`` (``alignment.distributed.is_launched``) run under their parent's
lock and do not take it. In a sweep each job locks its own job dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from alignment.errors import AlignmentError
from alignment.secrets import scrub_text

log = logging.getLogger("alignment")

LOCK_FILE = ".alignment.lock"


@contextlib.contextmanager
def run_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold ``output_dir``'s lock while the block runs; raise AlignmentError at once when another run holds it."""
    from alignment.distributed import is_launched

    if is_launched():  # the launching process holds it for its ranks
        yield
        return
    fd = acquire(Path(output_dir))
    try:
        yield
    finally:
        release(Path(output_dir), fd)


def acquire(output_dir: Path) -> int:
    """Take ``output_dir``'s lock and record this process in it; return the open file descriptor holding it."""
    path = output_dir / LOCK_FILE
    for _ in range(5):  # a lock file replaced under us (a takeover, a release) is opened again
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise AlignmentError(
                f"cannot create the run lock {path} ({err.strerror}); is output_dir writable?"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            if not _gone(holder):
                raise AlignmentError(held_message(output_dir, holder)) from None
            # Its flock lives on in a child of the dead run (a forked worker): replace the file, whose inode it holds.
            _notice(path, holder)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        if not _same_file(fd, path):
            os.close(fd)
            continue
        holder = _read(fd)
        _write(fd, _this_process())
        if not _same_file(fd, path):  # replaced meanwhile by a run that took the old record for an orphan's
            os.close(fd)
            continue
        if holder:  # a record without a flock: its run was killed
            _notice(path, holder)
        return fd
    raise AlignmentError(f"could not take the lock {path}: it keeps being replaced; is another run starting there?")


def release(output_dir: Path, fd: int) -> None:
    """Remove the lock file (a leftover one means a killed run) and drop the flock."""
    path = output_dir / LOCK_FILE
    try:
        _drop_collision_record(output_dir)
        if _same_file(fd, path):
            os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def _drop_collision_record(output_dir: Path) -> None:
    """Remove the ``failed.json`` another sweep's job wrote here when it found this run holding the dir: that job
    failed, not this one (this run's own failure, if any, is recorded after the lock is released)."""
    from alignment.sweep import FAILED

    try:
        error = str(json.loads((output_dir / FAILED).read_text(encoding="utf-8")).get("error", ""))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return
    if error.startswith(f"{output_dir} is in use by another run (pid {os.getpid()} on {socket.gethostname()},"):
        (output_dir / FAILED).unlink(missing_ok=True)


def held_message(output_dir: Path, holder: dict) -> str:
    """One line naming the dir and the run that holds it."""
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    started, command = holder.get("started", "?"), holder.get("command", "?")
    return (
        f"{output_dir} is in use by another run (pid {pid} on {host}, started {started}: {command}); wait for it to "
        "finish or stop it, or pick another output_dir"
    )


def _this_process() -> dict:
    command = shlex.join(["python", "-m", "alignment", *sys.argv[1:]])
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(scrub_text(command).split()),  # one line, secrets masked
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _write(fd: int, holder: dict) -> None:
    data = (json.dumps(holder, ensure_ascii=False) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 65536, 0)
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": "?", "command": "(unreadable lock file)"}
    return holder if isinstance(holder, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file ``fd`` has open (not unlinked or replaced meanwhile)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _gone(holder: dict) -> bool:
    """True when the holder ran on this host and its process no longer exists."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _notice(path: Path, holder: dict) -> None:
    log.warning(
        "took over %s: the run that left it (pid %s on %s, started %s) is no longer running",
        path,
        holder.get("pid", "?"),
        holder.get("host", "?"),
        holder.get("started", "?"),
    )

"""Progress a user can follow: a tqdm bar with ETA on a terminal, and throttled plain lines elsewhere.

When stderr is a log file or a CI console, bar redraws would fill it with carriage returns; a line at most every
~10% of the work or every 30 s says the same (``step 120/549 (22%), loss 1.23, 2.1 s/step, eta 15m10s``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO


def interactive() -> bool:
    """Whether stderr is a terminal: bars there, plain lines otherwise."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def duration(seconds: float) -> str:
    """``42s``, ``15m10s``, ``2h05m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def quiet_library_bars() -> None:
    """Turn off the bars of transformers (loading, saving weights), datasets (map), the Hub and any other tqdm
    off a terminal: each would print a redraw per update into the log. (:class:`Progress` prints lines there.)"""
    import os

    os.environ["TQDM_DISABLE"] = "1"  # tqdm >= 4.66 reads its defaults from TQDM_* variables
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"  # read at import by libraries not imported yet
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import datasets
    import huggingface_hub
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()


class ProgressLines:
    """Plain progress lines: one when ``every`` of ``total`` more is done or ``seconds`` passed, and one at the end.

    The rate and ETA cover the work done since the first ``update`` (a resumed run starts part-way).
    """

    def __init__(
        self,
        total: int,
        unit: str = "step",
        desc: str = "",
        every: float = 0.1,
        seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.unit, self.desc = max(int(total), 0), unit, desc
        self.every, self.seconds, self.clock = every, seconds, clock
        self.stream = stream
        self.start: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None

    def update(self, done: int, extra: dict[str, Any] | None = None) -> str | None:
        """Note that ``done`` units are complete; print (and return) a line when one is due."""
        now = self.clock()
        if self.start is None:
            self.start = self.last = (now, done)
            return None
        last_time, last_done = self.last
        finished = self.total and done >= self.total
        due = finished or (self.total and done - last_done >= self.every * self.total)
        if not (due or now - last_time >= self.seconds) or done == last_done:
            return None
        self.last = (now, done)
        line = self.format(done, now, extra)
        print(line, file=self.stream or sys.stderr, flush=True)
        return line

    def format(self, done: int, now: float, extra: dict[str, Any] | None = None) -> str:
        parts = [f"{self.unit} {done}/{self.total} ({100 * done // max(self.total, 1)}%)" if self.total else f"{done}"]
        for key, value in (extra or {}).items():
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        start_time, start_done = self.start
        if done > start_done:
            per = (now - start_time) / (done - start_done)
            parts.append(f"{per:.3g} s/{self.unit}")
            if self.total:
                parts.append(f"eta {duration(per * max(self.total - done, 0))}")
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)


class Progress:
    """A tqdm bar on a terminal, else :class:`ProgressLines`; nothing when ``disable`` (e.g. not the main process)."""

    def __init__(self, total: int, desc: str, unit: str = "step", disable: bool = False, initial: int = 0) -> None:
        self.done = initial
        self.bar = self.lines = None
        if disable:
            return
        if interactive():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
        else:
            self.lines = ProgressLines(total, unit=unit, desc=desc)
            self.lines.update(initial)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix({k: f"{v:.3g}" if isinstance(v, float) else v for k, v in postfix.items()})
            self.bar.update(n)
        elif self.lines is not None:
            self.lines.update(self.done, postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress(items: Iterable, total: int, desc: str, unit: str = "batch", disable: bool = False) -> Iterator:
    """Iterate ``items`` with a :class:`Progress` that advances one ``unit`` per item."""
    bar = Progress(total, desc, unit=unit, disable=disable)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()

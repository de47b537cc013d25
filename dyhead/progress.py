"""Progress output that suits where it goes: a live tqdm bar on a terminal, and a plain line every few
percent when stderr is a file or a pipe (a log, CI, `nohup`), where a bar's carriage-return redraws would
become hundreds of lines.

    bar = progress_bar(total=len(images), desc="eval val", unit="img")
    for image in images:
        ...
        bar.update(1)
    bar.close()

Both kinds offer the part of tqdm's interface this project uses: `update`, `set_postfix`, a settable
`total` (None = unknown), `n`, `close`, and use as a context manager. `progress_write` prints a line
without breaking a live bar.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

__all__ = ["progress_bar", "progress_write", "LineProgress", "NullProgress", "is_terminal"]

#: Without a terminal: one line each time another STEP_PERCENT of the total is done ...
STEP_PERCENT = 5.0
#: ... or, while the total is unknown, at most one line per this many seconds.
INTERVAL_S = 30.0


def is_terminal(file: Optional[TextIO] = None) -> bool:
    file = sys.stderr if file is None else file
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # closed or a stand-in without isatty
        return False


def progress_bar(total: Optional[int] = None, *, desc: str = "", unit: str = "it", initial: int = 0,
                 enabled: bool = True, file: Optional[TextIO] = None, step_percent: float = STEP_PERCENT,
                 interval_s: float = INTERVAL_S):
    """A tqdm bar when `file` (default: stderr, looked up now) is a terminal, else a `LineProgress`;
    a `NullProgress` when not `enabled`."""
    if not enabled:
        return NullProgress(total, initial)
    file = sys.stderr if file is None else file
    if is_terminal(file):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=file, dynamic_ncols=True)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, file=file, step_percent=step_percent,
                        interval_s=interval_s)


def progress_write(message: str, file: Optional[TextIO] = None) -> None:
    """Print one line (default: to stdout) without garbling a live tqdm bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stdout if file is None else file)


class NullProgress:
    """Counts and prints nothing."""

    def __init__(self, total: Optional[int] = None, initial: int = 0) -> None:
        self.total, self.n = total, initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **_: object) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LineProgress(NullProgress):
    """One line per `step_percent` of the total (e.g. ``eval val: 45/300 img (15%), 12 s, 3.8 img/s,
    about 68 s left``), one per `interval_s` seconds while the total is unknown, and a last line on
    `close` if the end was not printed yet."""

    def __init__(self, total: Optional[int], *, desc: str = "", unit: str = "it", initial: int = 0,
                 file: Optional[TextIO] = None, step_percent: float = STEP_PERCENT,
                 interval_s: float = INTERVAL_S) -> None:
        super().__init__(total, initial)
        self.desc, self.unit = desc, unit
        self.file = sys.stderr if file is None else file
        self.step_percent, self.interval_s = step_percent, interval_s
        self._initial = initial
        self._start = time.monotonic()
        self._last_time = self._start
        self._last_step = self._step()
        self._postfix = ""
        self._printed_n: Optional[int] = None
        self._closed = False

    def _step(self) -> int:
        if not self.total:
            return -1
        return int(100.0 * self.n / self.total // self.step_percent)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.total:
            step = self._step()
            if step > self._last_step:
                self._last_step = step
                self._print(now)
        elif now - self._last_time >= self.interval_s:
            self._print(now)

    def set_postfix(self, **values: object) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed and self._printed_n != self.n and self.n > self._initial:
            self._print(time.monotonic())
        self._closed = True

    def _print(self, now: float) -> None:
        elapsed = now - self._start
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            parts = [f"{head}{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)"]
        else:
            parts = [f"{head}{self.n} {self.unit}"]
        parts.append(f"{elapsed:.0f} s")
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"about {(self.total - self.n) / rate:.0f} s left")
        if self._postfix:
            parts.append(self._postfix)
        print(", ".join(parts), file=self.file, flush=True)
        self._last_time = now
        self._printed_n = self.n

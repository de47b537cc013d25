"""Progress output: a live bar on a terminal, a line every few percent in a file or a pipe."""

from __future__ import annotations

import io

from dyhead.progress import LineProgress, NullProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_loop_into_a_file_prints_a_line_every_five_percent():
    out = io.StringIO()
    bar = progress_bar(10_000, desc="eval val", unit="img", file=out)
    assert isinstance(bar, LineProgress)
    for _ in range(10_000):
        bar.update(1)
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert len(lines) == 20  # 5%, 10%, ..., 100%; close() adds nothing once 100% was printed
    assert lines[0].startswith("eval val: 500/10000 img (5%), ")
    assert lines[-1].startswith("eval val: 10000/10000 img (100%), ")


def test_unknown_total_and_a_total_set_later():
    out = io.StringIO()
    bar = LineProgress(None, desc="train", unit="it", file=out, interval_s=3600)
    for _ in range(50):
        bar.update(1)
    assert out.getvalue() == ""  # no total, and the interval has not passed
    bar.set_postfix(loss="0.500")
    bar.total = 100  # as the trainer does with a time budget
    bar.update(1)  # 51% crosses ten 5% steps at once: one line
    bar.update(1)  # 52%: still in the same step
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("train: 51/100 it (51%)") and lines[0].endswith("loss=0.500")
    assert lines[1].startswith("train: 52/100 it (52%)")  # close() prints where it stopped


def test_terminal_gets_a_tqdm_bar_and_disabled_prints_nothing():
    from tqdm import tqdm

    bar = progress_bar(10, file=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    bar = progress_bar(10, enabled=False)
    assert type(bar) is NullProgress
    bar.update(3)
    assert bar.n == 3

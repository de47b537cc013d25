"""Timing, peak-memory and table utilities shared by the benchmarks.

Ours and the reference are timed interleaved (ref, ours, ref, ours, ...) in one process, so a
change in machine load hits both alike; the median of the timed runs is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from dyhead.detector import feature_sizes
from dyhead.ops.deform_conv import set_default_impl


def pyramid_sizes(height: int, width: int, divisor: int = 32) -> list[tuple[int, int]]:
    """P3..P7 sizes of an image padded up to a multiple of `divisor`."""
    ph, pw = -(-height // divisor) * divisor, -(-width // divisor) * divisor
    return feature_sizes(ph, pw)


@contextlib.contextmanager
def deform_impl(name: str) -> Iterator[None]:
    """Make ``impl="auto"`` calls of `modulated_deform_conv2d` run `name` ("fast" / "torchvision")
    inside the block (through `set_default_impl`; the benchmarks are single-threaded callers)."""
    previous = set_default_impl(name)
    try:
        yield
    finally:
        set_default_impl(previous)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssPeak:
    """Samples this process's resident set size every few ms; `peak - start` is the run's peak."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> "_RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _release_free_heap() -> None:
    """Hand freed heap memory back to the OS (glibc), so that RSS growth shows this run's peak."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak extra memory of one call of `fn`: CUDA max_memory_allocated, or CPU RSS growth
    (sampled every 2 ms after trimming the heap, so a rough figure)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    _release_free_heap()
    with _RssPeak() as rss:
        fn()
    return (rss.peak - rss.start) / 2**20


@dataclass
class Timing:
    median_s: float
    runs: list[float]


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Median wall time of each function, calls interleaved round-robin after `warmup` rounds."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if round_ >= warmup:
                runs[name].append(time.perf_counter() - t0)
    return {name: Timing(statistics.median(r), r) for name, r in runs.items()}


def max_abs_diff(a, b) -> float:
    if isinstance(a, torch.Tensor):
        return (a.detach().float() - b.detach().float()).abs().max().item()
    return max(max_abs_diff(x, y) for x, y in zip(a, b))


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in cells[1:]:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.3g}" if abs(v) < 1 else f"{v:.3f}".rstrip("0").rstrip(".")
        return f"{v:.2e}"
    return str(v)


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (after warm-up)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's); use 1 on a machine shared with other jobs")
    return p


def describe_machine(device: torch.device, threads: Optional[int]) -> str:
    if threads is not None:
        torch.set_num_threads(threads)
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return (
        f"device {device} ({where}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )

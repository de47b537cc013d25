"""Driving the dashboard in a real browser: start the app's Streamlit server, and wait until a page in
Debian's headless Chromium (through the `playwright` package) has finished its script run. Used by the
browser tests, the dashboard benchmarks and docs/make_screenshots.py."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
#: Headless, no sandbox (root in a container), and no background connections (the network is closed).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "free_port", "serve_app", "settle"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(env: Optional[dict] = None, cwd: Path = REPO, log: Optional[Path] = None,
              start_timeout_s: float = 90.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """The app of `cwd` served on a free local port with `env` added to this process's environment;
    yields (url, server process) once its health check answers, and stops it afterwards."""
    port = free_port()
    out = open(log, "w") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
         "--server.fileWatcherType", "none", "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = Path(log).read_text()[-2000:] if log is not None else "(no log)"
                raise RuntimeError(f"the streamlit server did not start:\n{tail}")
            time.sleep(0.3)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log is not None:
            out.close()


def settle(page, title: Optional[str] = None, timeout_s: float = 60.0, appear_s: float = 0.0,
           quiet_s: float = 1.2, after_ms: int = 600) -> None:
    """Wait for the page's title (when given), for the running indicator to show up (up to `appear_s`:
    after a click, so that a rerun that has not started yet is not mistaken for a finished one), then
    until neither the running indicator nor a loading skeleton has been seen for `quiet_s`; then
    `after_ms` more, since plotly draws after the script run ends."""
    if title is not None:
        page.locator("h1", has_text=title).first.wait_for(timeout=timeout_s * 1000)
    running = page.locator('[data-testid="stStatusWidgetRunningIcon"]')
    end = time.monotonic() + appear_s
    while time.monotonic() < end and not running.count():
        time.sleep(0.02)
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        busy = running.count() or page.locator('[data-testid="stSkeleton"]').count()
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"page {title or page.url!r} still running after {timeout_s} s")
    if after_ms:
        page.wait_for_timeout(after_ms)

"""Screenshots of every dashboard page as a user sees them after `./run.sh app` on a fresh clone:
the bundled demo model, the demo data (generated on first use), no test folders in the sidebar.

    python docs/make_screenshots.py            # writes docs/screenshots/<page>.png

Starts the app's own server with the default settings (no DYHEAD_APP_* variables), drives it in
Debian's headless Chromium and, on the pages that compute over a dataset, runs the pass first so
that the page shows its figure. Needs /usr/bin/chromium and the playwright package.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: (url path, file name, page title, window height: Streamlit scrolls inside the page, so a full-page
#: screenshot holds what fits in the window)
PAGES = [
    ("", "detect", "Detect", 1500),
    ("inside_head", "inside_head", "Inside the head", 3300),
    ("scale_ratios", "scale_ratios", "Scale ratios", 1500),
    ("attention_switches", "attention_switches", "Attention on/off", 1900),
    ("internals", "internals", "Internals over a dataset", 1700),
    ("compare", "compare", "Compare", 1900),
    ("efficiency", "efficiency", "Efficiency", 1700),
    ("how_it_works", "how_it_works", "How it works", 3000),
    ("model_data", "model_data", "Model & data", 1500),
]


def _settle(page, title: str, timeout_s: float = 900.0) -> None:
    page.locator("h1", has_text=title).first.wait_for(timeout=timeout_s * 1000)
    deadline, quiet = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidgetRunningIcon"]').count()
        now = time.monotonic()
        if running:
            quiet = None
        elif quiet is None:
            quiet = now
        elif now - quiet > 1.5:
            break
        time.sleep(0.2)
    page.wait_for_timeout(800)  # plotly draws after the script run ends


def main() -> int:
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYHEAD_APP_")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                             "--server.fileWatcherType", "none", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            for path, name, title, height in PAGES:
                page.set_viewport_size({"width": 1440, "height": height})
                page.goto(f"{url}/{path}", wait_until="domcontentloaded")
                _settle(page, title)
                run = page.get_by_role("button", name="pass")  # "Run the pass" on the dataset pages
                if run.count():
                    run.first.click()
                    _settle(page, title)
                errors = page.locator('[data-testid="stException"]').count()
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
                print(f"{name}: {OUT / f'{name}.png'}" + (f" ({errors} error elements!)" if errors else ""))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Screenshots of every dashboard page as a user sees them after `./run.sh app` on a fresh clone:
the bundled demo model, the demo data (generated on first use), no test folders in the sidebar.

    python docs/make_screenshots.py            # writes docs/screenshots/<page>.png

Starts the app's own server with the default settings (no DYHEAD_APP_* variables), drives it in
Debian's headless Chromium and, on the pages that compute over a dataset, runs the pass first so
that the page shows its figure. Needs /usr/bin/chromium and the playwright package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "screenshots"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, serve_app, settle  # noqa: E402
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


def main() -> int:
    from playwright.sync_api import sync_playwright

    env = {k: v for k, v in os.environ.items() if not k.startswith("DYHEAD_APP_")}
    os.environ.clear()
    os.environ.update(env)  # the defaults a user gets: no DYHEAD_APP_* settings
    OUT.mkdir(parents=True, exist_ok=True)
    with serve_app() as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1400})
        for path, name, title, height in PAGES:
            page.set_viewport_size({"width": 1440, "height": height})
            page.goto(f"{url}/{path}", wait_until="domcontentloaded")
            settle(page, title, timeout_s=900, quiet_s=1.5, after_ms=800)
            run = page.get_by_role("button", name="pass")  # "Run the pass" on the dataset pages
            if run.count():
                run.first.click()
                settle(page, title, timeout_s=900, quiet_s=1.5, after_ms=800)
            errors = page.locator('[data-testid="stException"]').count()
            page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
            print(f"{name}: {OUT / f'{name}.png'}" + (f" ({errors} error elements!)" if errors else ""))
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long the dashboard takes to re-render after a switch toggle or an opacity change (CPU).

Two measurements on the same model and image:

* script: Streamlit's AppTest re-runs the page script (the server-side work: model call or cache hit,
  reductions, overlays, figure building); median of a few repeats;
* browser (when Chromium and playwright are present): the real server in headless Chromium, from the
  click to Streamlit's running indicator being gone and the new content in the page.

    python benchmarks/app_rerender.py                         # the bundled demo model, sample 0
    python benchmarks/app_rerender.py --checkpoint X.pt --threads 2 --no-browser
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def script_timings(repeats: int) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=300)
    at.run()
    out = {}
    at.switch_page("views/attention_switches.py").run()
    # First toggle of a setting: a new model call (not cached yet).
    start = time.perf_counter()
    at.toggle(key="sw_spatial").set_value(False).run()
    out["switch toggle, first time (model runs)"] = 1000 * (time.perf_counter() - start)
    assert not at.exception, at.exception
    state = [False]

    def toggle():
        state[0] = not state[0]
        at.toggle(key="sw_spatial").set_value(state[0]).run()

    out["switch toggle, cached setting"] = _median_ms(toggle, repeats)
    at.switch_page("views/inside_head.py").run()
    values = [0.3, 0.7]

    def opacity():
        values.reverse()
        at.slider(key="fm_opacity").set_value(values[0]).run()

    out["opacity change (Inside the head, 4x5 maps)"] = _median_ms(opacity, repeats)
    at.selectbox(key="fm_reduction").set_value("pca").run()
    out["opacity change, PCA reduction"] = _median_ms(opacity, repeats)
    return out


def browser_timings(env: dict, repeats: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, serve_app

    with serve_app(env) as (url, _):
        def watched_image(page) -> str:
            """On Attention on/off the last image (the chosen setting's coarsest map); on Inside the
            head the first one (the first feature map: later images belong to other sections)."""
            imgs = page.locator('[data-testid="stImage"] img')
            if not imgs.count():
                return ""
            return imgs.nth(0 if "inside_head" in page.url else imgs.count() - 1).get_attribute("src")

        def settle(page, before: str = None, timeout_s: float = 120.0):
            """Until the last feature-map image differs from `before` (when given) and the running
            indicator is gone."""
            deadline = time.perf_counter() + timeout_s
            while True:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{page.url}: the page did not change within {timeout_s:.0f} s")
                page.wait_for_timeout(20)
                if before is not None and watched_image(page) == before:
                    continue
                if page.locator('[data-testid="stStatusWidgetRunningIcon"]').count():
                    continue
                return

        out = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            page.goto(f"{url}/attention_switches")
            page.locator("h1", has_text="Attention on/off").wait_for(timeout=120_000)
            page.locator('[data-testid="stImage"] img').first.wait_for(timeout=120_000)
            settle(page)
            page.wait_for_timeout(1500)
            settle(page)
            times = []
            for i in range(repeats + 1):
                before = watched_image(page)
                start = time.perf_counter()
                page.get_by_text("Spatial-aware (S)").click()
                settle(page, before)
                times.append(1000 * (time.perf_counter() - start))
            out["browser: switch toggle, first time"] = times[0]
            out["browser: switch toggle, cached setting"] = statistics.median(times[1:])
            page.goto(f"{url}/inside_head")
            page.locator("h1", has_text="Inside the head").wait_for(timeout=120_000)
            page.locator('[data-testid="stImage"] img').first.wait_for(timeout=120_000)
            settle(page)
            page.wait_for_timeout(1500)
            settle(page)
            slider = page.locator('[data-testid="stSlider"]', has_text="Opacity").get_by_role("slider")
            times = []
            for i in range(repeats):
                slider.focus()
                before = watched_image(page)
                start = time.perf_counter()
                page.keyboard.press("ArrowLeft" if i % 2 == 0 else "ArrowRight")
                settle(page, before)
                times.append(1000 * (time.perf_counter() - start))
            out["browser: opacity change (Inside the head)"] = statistics.median(times)
            browser.close()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the bundled demo model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    env = {"OMP_NUM_THREADS": str(args.threads), "DYHEAD_APP_CACHE": tempfile.mkdtemp(prefix="dyhead_app_bench_")}
    if args.checkpoint:
        env["DYHEAD_APP_CHECKPOINT"] = str(Path(args.checkpoint).resolve())
    os.environ.update(env)
    from analysis.sources import DEFAULT_CHECKPOINT

    ckpt = Path(env.get("DYHEAD_APP_CHECKPOINT", DEFAULT_CHECKPOINT))
    print(f"checkpoint {ckpt}, CPU, {args.threads} thread(s), median of {args.repeats}")
    results = script_timings(args.repeats)
    if not args.no_browser and Path("/usr/bin/chromium").exists():
        results.update(browser_timings(env, args.repeats))
    for name, ms in results.items():
        print(f"  {name:<48} {ms:8.0f} ms")


if __name__ == "__main__":
    main()

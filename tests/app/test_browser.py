"""End to end: the real Streamlit server, every page loaded in headless Chromium (Debian's
/usr/bin/chromium driven by the `playwright` package; never a downloaded browser). Saves one
screenshot per page (under tests/_artifacts/screenshots/, or into docs/screenshots/ with
DYHEAD_UPDATE_SCREENSHOTS=1, which is how the README's screenshots are made) and fails on any exception element in a page.

Skipped when Chromium or playwright is missing, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from benchmarks.browser import CHROMIUM, CHROMIUM_ARGS, serve_app, settle

REPO = Path(__file__).resolve().parents[2]
#: Test runs leave the tracked docs screenshots alone unless asked to refresh them.
SCREENSHOTS = (REPO / "docs" / "screenshots" if os.environ.get("DYHEAD_UPDATE_SCREENSHOTS") == "1"
               else REPO / "tests" / "_artifacts" / "screenshots")

#: (url path, screenshot name, page title, window height for the screenshot: Streamlit scrolls inside
#: the page, so a full-page screenshot only holds what fits in the window)
PAGES = [
    ("", "detect", "Detect", 1400),
    ("inside_head", "inside_head", "Inside the head", 3300),
    ("scale_ratios", "scale_ratios", "Scale ratios", 1300),
    ("attention_switches", "attention_switches", "Attention on/off", 1900),
    ("internals", "internals", "Internals over a dataset", 1900),
    ("compare", "compare", "Compare", 2600),
    ("efficiency", "efficiency", "Efficiency", 1700),
    ("how_it_works", "how_it_works", "How it works", 3000),
    ("model_data", "model_data", "Model & data", 1200),
]


def _require_browser():
    missing = []
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        missing.append(f"chromium ({CHROMIUM})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: install it, e.g. ./run.sh test installs chromium)")
        pytest.skip(reason)


@pytest.fixture()
def server(app_env):
    log = REPO / ".cache" / "app_browser_test_server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with serve_app({**app_env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}, log=log) as (url, _):
        yield url


def _settle(page, title: str, timeout_s: float = 60.0) -> None:
    """Wait for the page's title, then until Streamlit's running indicator has been gone for a while."""
    settle(page, title, timeout_s=timeout_s)


def test_every_page_in_chromium(server):
    _require_browser()
    t0 = time.monotonic()
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=CHROMIUM_ARGS, headless=True)
        try:
            print(f"browser start: {time.monotonic() - t0:.1f} s")
            page = browser.new_page(viewport={"width": 1440, "height": 2400})
            for path, name, title, height in PAGES:
                t0 = time.monotonic()
                page.set_viewport_size({"width": 1440, "height": height})
                page.goto(f"{server}/{path}", wait_until="domcontentloaded")
                _settle(page, title)
                if name == "detect":  # a click on a box's centre marker opens the probe of that detection
                    page.locator(".js-plotly-plot .scatterlayer .point").first.click(force=True)
                    page.wait_for_timeout(300)
                    _settle(page, title)
                    page.get_by_text("Probe of detection").first.wait_for(timeout=60_000)
                if name in ("scale_ratios", "internals"):
                    run = page.get_by_role("button", name="pass")  # "Run the pass" / "Resume the pass"
                    if run.count():  # (not when an earlier test in this session computed every image)
                        run.first.click()
                        _settle(page, title)
                    assert page.locator(".js-plotly-plot").count() >= 1
                if name == "inside_head":  # a click on the sampling figure picks the cell to look at
                    titles = page.locator(".js-plotly-plot .gtitle")

                    def sampling_title() -> str:
                        return next(t for t in (x.text_content() for x in titles.all()) if "click a cell" in t)

                    before = sampling_title()
                    box = page.locator(".js-plotly-plot").filter(has_text="click a cell").first.bounding_box()
                    page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
                    page.wait_for_timeout(300)
                    _settle(page, title)
                    assert sampling_title() != before
                if name == "attention_switches":
                    page.get_by_text("Spatial-aware (S)").click()
                    _settle(page, title)
                    assert page.get_by_text(re.compile(r"spatial off( \(.*?\))? in every block")).count() >= 1
                exceptions = page.locator('[data-testid="stException"]')
                assert exceptions.count() == 0, f"{name}: {exceptions.first.inner_text()[:1500]}"
                assert page.get_by_text("This page stopped").count() == 0, name
                page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
                print(f"{name}: {time.monotonic() - t0:.1f} s")
        finally:
            browser.close()
    for _, name, _, _ in PAGES:
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000


def _tiny_checkpoint(kind: str, folder: Path) -> Path:
    """A tiny model of one detector kind in this project's format (random weights)."""
    import torch

    from dyhead.backbone import BackboneConfig
    from dyhead.detector import build_detector, kind_settings
    from dyhead.weights import save_checkpoint

    from .conftest import tiny_detector_config

    cfg = tiny_detector_config(num_blocks=2)
    if kind == "swin_atss":
        cfg = cfg.replace(backbone=BackboneConfig(kind="swin", swin_embed_dim=24))
    else:
        cfg = cfg.replace(**kind_settings(kind), box_fc_dim=16)
    torch.manual_seed(0)
    return save_checkpoint(folder / f"tiny_{kind}.pt", build_detector(cfg).eval())


def test_each_detector_kind_in_chromium(server, tmp_path):
    """A tiny model of each released detector kind, entered in the sidebar, renders every page (and a
    switch toggle on Attention on/off) in the browser without an error element."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=CHROMIUM_ARGS, headless=True)
        try:
            for kind in ("retinanet", "faster_rcnn", "swin_atss"):
                path = _tiny_checkpoint(kind, tmp_path)
                page = browser.new_page(viewport={"width": 1440, "height": 1600})  # a new session
                page.goto(server, wait_until="domcontentloaded")
                _settle(page, "Detect")
                field = page.get_by_role("textbox", name="Checkpoint file")
                field.fill(str(path))
                field.press("Enter")
                _settle(page, "Detect")
                assert page.locator('[data-testid="stSidebar"]').get_by_text("blocks × 16 ch").count() >= 1, kind
                for _, _, title, _ in PAGES[1:]:  # every page, through the sidebar (the same session)
                    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
                    _settle(page, title)
                    if title == "Attention on/off":
                        page.get_by_text("Spatial-aware (S)").click()
                        _settle(page, title)
                    assert page.locator('[data-testid="stException"]').count() == 0, (kind, title)
                    assert page.get_by_text("This page stopped").count() == 0, (kind, title)
                assert page.locator('[data-testid="stAlert"]').filter(has_text="Could not load").count() == 0, kind
                page.close()
        finally:
            browser.close()

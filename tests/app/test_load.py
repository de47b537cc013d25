"""Four browser sessions at once on one server: each picks its own dataset image, goes through Detect
and turns its own attentions off on Attention on/off, all clicks issued before any page has finished.
Each session must show its own result (checked against a direct computation) and no error element."""

from __future__ import annotations

import time

from .test_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser, _settle, server  # noqa: F401 (fixture)

#: (dataset image index, switch labels to turn off) of each session.
SESSIONS = [(0, ()), (1, ("Spatial-aware (S)",)), (2, ("Task-aware (C)",)), (3, ("Spatial-aware (S)", "Task-aware (C)"))]
THRESHOLD = 0.3  # the default score threshold of both pages


def _expected(app_checkpoint, app_data) -> list[tuple[int, int]]:
    """(boxes on Detect, boxes of the chosen setting) of each session, computed directly."""
    from analysis.sources import dataset_images, load_model
    from dyhead.config import AttentionSwitches
    from dyhead.preprocess import load_image

    model, _ = load_model(app_checkpoint, "cpu")
    records = dataset_images(app_data, "val")
    out = []
    for index, off in SESSIONS:
        image = load_image(records[index].path)
        switches = AttentionSwitches(spatial="Spatial-aware (S)" not in off, task="Task-aware (C)" not in off)
        on = model.predict([image])[0]
        chosen = model.predict([image], switches=switches)[0]
        out.append((int((on.scores >= THRESHOLD).sum()), int((chosen.scores >= THRESHOLD).sum())))
    return out


def _metric(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _wait_all(pages, title: str) -> None:
    for page in pages:
        _settle(page, title, timeout_s=120)


def test_four_sessions_at_once(server, app_checkpoint, app_data):  # noqa: F811 (the server fixture)
    _require_browser()
    from playwright.sync_api import sync_playwright

    expected = _expected(app_checkpoint, app_data)
    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pages = [browser.new_context(viewport={"width": 1440, "height": 1600}).new_page() for _ in SESSIONS]
            for page in pages:  # four sessions open at once
                page.goto(server, wait_until="domcontentloaded")
            _wait_all(pages, "Detect")
            for page in pages:
                page.locator('[data-testid="stSidebar"]').get_by_text("Dataset", exact=True).click()
            _wait_all(pages, "Detect")
            for page, (index, _) in zip(pages, SESSIONS):
                field = page.locator('[data-testid="stSidebar"] [data-testid="stNumberInput"] input').first
                field.fill(str(index))
                field.press("Enter")
            _wait_all(pages, "Detect")
            for page, (index, _), (on, _) in zip(pages, SESSIONS, expected):
                assert f"(id {index + 1})" in page.locator('[data-testid="stSidebar"]').inner_text()
                assert _metric(page, "Detections shown") == str(on), index
            for page in pages:
                page.locator('[data-testid="stSidebarNav"]').get_by_text("Attention on/off").click()
            _wait_all(pages, "Attention on/off")
            for step in range(2):  # every session's first, then second toggle, without waiting in between
                for page, (_, off) in zip(pages, SESSIONS):
                    if step < len(off):
                        page.get_by_text(off[step]).click()
                _wait_all(pages, "Attention on/off")
            for page, (index, off), (on, chosen) in zip(pages, SESSIONS, expected):
                assert _metric(page, "Boxes (all on)") == str(on), index
                assert _metric(page, "Boxes (chosen)") == str(chosen), (index, off)
                assert page.locator('[data-testid="stException"]').count() == 0
                assert page.get_by_text("This page stopped").count() == 0
        finally:
            browser.close()
    print(f"four sessions: {time.monotonic() - t0:.1f} s")

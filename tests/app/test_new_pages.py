"""The Internals and Compare pages with AppTest, against direct computations."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from .conftest import APP_MAIN


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not [e.value for e in at.error if e.value.startswith("This page stopped")]


def test_compare_page(app_env, app_checkpoint):
    from analysis.detection_diff import match_detections
    from analysis.sources import load_model
    from app.sidebar import sample_images
    from dyhead.preprocess import load_image

    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    at.run()
    at.switch_page("views/compare.py").run()
    _ok(at)
    assert at.title[0].value == "Compare"
    at.toggle(key="cmp_spatial").set_value(False).run()
    _ok(at)
    model, _ = load_model(app_checkpoint, "cpu")
    from dyhead.config import AttentionSwitches

    image = load_image(sample_images()[0])
    a = model.infer([image]).detections[0]
    b = model.infer([image], coarser_branch="upsample_first", switches=AttentionSwitches(spatial=False)).detections[0]
    diff = match_detections(a, b, 0.5, 0.3)
    assert [m.value for m in at.metric] == [str(len(diff.matched)), str(len(diff.removed)), str(len(diff.added))]
    at.number_input(key="cmp_n").set_value(2).run()
    at.button(key="cmp_ap_run").click().run()
    _ok(at)
    ap = next(d.value for d in at.dataframe if "AP50" in d.value.columns)
    assert list(ap.images) == [2, 2] and len(ap) == 2


def test_internals_page(app_env, app_checkpoint, app_data, tmp_path, monkeypatch):
    from analysis.internals import collect_internals, internals_summary
    from analysis.sources import load_model
    from analysis.tables import read_table

    # A cache of its own: the pass must be started here (the browser test may have finished it in the
    # shared test cache, which disables the button).
    monkeypatch.setenv("DYHEAD_APP_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    at.run()
    at.switch_page("views/internals.py").run()
    _ok(at)
    assert at.title[0].value == "Internals over a dataset"
    at.number_input(key="in_n").set_value(2).run()
    at.button(key="in_run").click().run()
    _ok(at)
    shown = next(d.value for d in at.dataframe if "breakdown" in d.value.columns)
    model, _ = load_model(app_checkpoint, "cpu")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        run = collect_internals(model, app_data, Path(tmp) / "i.csv", max_images=2, show_progress=False)
        expected = internals_summary(read_table(run.csv))
    last = expected[(expected.breakdown != "all") & (expected.block == expected.block.max())]
    assert len(shown) == len(last)
    assert shown.mask_mean.to_numpy() == pytest.approx(last.mask_mean.round(4).to_numpy(), abs=1e-4)

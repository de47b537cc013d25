"""The detection probe on Detect and Inside the head, checked against a direct computation."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from .conftest import APP_MAIN


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not [e.value for e in at.error if e.value.startswith("This page stopped")]


def _frame(at: AppTest, column: str):
    """The page's table that has `column`."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_probe_of_a_selected_detection(app_env, app_checkpoint):
    from analysis.ablation import global_settings
    from analysis.probe import knockout_effect
    from analysis.sources import load_model
    from app.sidebar import sample_images
    from dyhead.config import AttentionSwitches
    from dyhead.detector import feature_sizes
    from dyhead.knockout import load_or_calibrate
    from dyhead.preprocess import load_image
    from dyhead.trace import TraceSpec

    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    at.run()
    _ok(at)
    at.slider(key="detect_threshold").set_value(0.0).run()
    at.selectbox(key="probe_det").set_value(0).run()  # what a click on the first box's centre marker selects
    _ok(at)
    text = next(m.value for m in at.markdown if m.value.startswith("**Probe of detection 1"))
    blocks = _frame(at, "offset_mean_abs")
    ko = _frame(at, "status")

    model, _ = load_model(app_checkpoint, "cpu")
    image = load_image(sample_images()[0])
    direct = model.infer([image], trace=TraceSpec(scale=True, spatial=True, dyrelu=True), keep_head_outputs=True)
    dets = direct.detections[0]
    level, loc = int(dets.levels[0]), int(dets.locations[0])
    _, w = feature_sizes(*direct.input_size)[level]
    y, x = divmod(loc, w)
    assert f"**P{level + 3}**" in text and f"cell ({y}, {x})" in text
    # the score is that anchor point's class x centerness probability
    out = direct.head_outputs
    score = out.cls_logits[level][0, int(dets.labels[0]), y, x].sigmoid() * out.centerness[level][0, 0, y, x].sigmoid()
    assert float(score) == pytest.approx(float(dets.scores[0]), rel=1e-5)
    lt = direct.trace.blocks[-1].levels[level]
    last = blocks.iloc[-1]
    assert last["w_same"] == pytest.approx(float(lt.scale_weights[level][0]), abs=1e-4)
    off = lt.offset[0, :, y, x].reshape(9, 2)
    assert last["offset_mean_abs"] == pytest.approx(float(off.norm(dim=1).mean()), abs=1e-4)
    assert last["mask_mean"] == pytest.approx(float(lt.mask[0, :, y, x].mean()), abs=1e-4)
    assert last["a1_mean"] == pytest.approx(float(lt.dyrelu.a1[0].mean()), abs=1e-4)
    # knock-outs: the first global one (scale off everywhere) matched directly
    s = global_settings()[1]
    constants = load_or_calibrate(model, app_checkpoint, None)  # the calibrated scale knock-out's constants
    other = model.infer([image], switches=AttentionSwitches(scale=s.scale, spatial=s.spatial, task=s.task,
                                                            constants=constants)).detections[0]
    eff = knockout_effect(dets.boxes[0].numpy(), int(dets.labels[0]), float(dets.scores[0]), other.boxes.numpy(),
                          other.scores.numpy(), other.labels.numpy())
    assert len(ko) == 7 and ko.iloc[0]["status"] == eff["status"]
    if eff["status"] != "removed":
        assert ko.iloc[0]["other_score"] == pytest.approx(eff["other_score"], abs=1e-4)


def test_probe_on_inside_the_head(app_env):
    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    at.run()
    at.switch_page("views/inside_head.py").run()
    _ok(at)
    assert any(m.value.startswith("**Probe of the chosen cell**") for m in at.markdown)
    at.radio(key="ih_probe_target").set_value("a detection").run()
    options = at.selectbox(key="ih_probe_det").options
    if len(options) > 1:
        at.selectbox(key="ih_probe_det").set_value(0).run()
        _ok(at)
        assert any(m.value.startswith("**Probe of detection 1") for m in at.markdown)
        assert len(_frame(at, "status")) == 7

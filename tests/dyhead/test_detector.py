"""The detector: configs and presets, forward shapes, anchors, predict, switches and traces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dyhead.config import AttentionSwitches
from dyhead.detector import PRESETS, DetectorConfig, DyHeadDetector, feature_sizes
from dyhead.device import DeviceError, resolve_device
from tests.dyhead.detector_fixtures import make_image, tiny_config, tiny_detector


def test_config_round_trip_through_json():
    for cfg in list(PRESETS.values()) + [tiny_config()]:
        plain = json.loads(json.dumps(cfg.to_dict()))
        assert DetectorConfig.from_dict(plain) == cfg


def test_presets():
    official = PRESETS["atss_r50_dyhead6"]
    assert official.backbone.kind == "resnet_msra" and official.tower.num_blocks == 6
    assert official.fpn_channels == 256 and official.num_classes == 80 and official.head_num_convs == 0
    assert official.class_names[0] == "person" and official.category_ids[-1] == 90
    assert (official.min_size, official.max_size, official.size_divisibility) == (800, 1333, 128)
    assert (official.score_thresh, official.pre_nms_top_n, official.nms_thresh, official.max_detections) == (0.05, 1000, 0.6, 100)
    baseline = PRESETS["atss_r50_baseline"]
    assert baseline.tower.num_blocks == 0 and baseline.head_num_convs == 4
    # the demo preset is the bundled model's architecture
    assert PRESETS["demo"].backbone.kind == "small"
    from dyhead.weights import read_checkpoint
    from tests.conftest import REPO_ROOT

    demo_file = REPO_ROOT / "checkpoints" / "demo_dyhead.pt"
    if demo_file.is_file():
        assert DetectorConfig.from_dict(read_checkpoint(demo_file)["config"]) == PRESETS["demo"]


def test_config_validation():
    with pytest.raises(ValueError, match="must agree"):
        tiny_config().replace(num_classes=5)
    with pytest.raises(ValueError, match="fpn_channels"):
        tiny_config().replace(fpn_channels=64)


def test_forward_shapes_and_anchors():
    model = tiny_detector()
    batch, resized, original = model.preprocess([make_image(90, 120), make_image(100, 80, seed=1)])
    assert original == [(90, 120), (100, 80)] and resized == [(96, 128), (120, 96)]
    assert batch.shape == (2, 3, 128, 128)
    out = model(batch)
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert [tuple(c.shape) for c in out.cls_logits] == [(2, 3, h, w) for h, w in sizes]
    assert [tuple(b.shape) for b in out.bbox_deltas] == [(2, 4, h, w) for h, w in sizes]
    assert [tuple(c.shape) for c in out.centerness] == [(2, 1, h, w) for h, w in sizes]
    assert [tuple(c.shape) for c in out.bottom_up] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
    anchors = model.anchors(batch)
    assert [a.shape[0] for a in anchors] == [h * w for h, w in sizes]
    assert feature_sizes(200, 330) == [(25, 42), (13, 21), (7, 11), (4, 6), (2, 3)]


def test_head_sees_the_tower_output_and_the_scale_is_applied():
    model = tiny_detector()
    batch, _, _ = model.preprocess([make_image()])
    with torch.no_grad():
        model.head.scales[1].scale.fill_(2.0)
        out = model(batch)
        raw = model.head.bbox_pred(out.features[1])
    torch.testing.assert_close(out.bbox_deltas[1], raw * 2.0)
    torch.testing.assert_close(out.cls_logits[0], model.head.cls_logits(out.features[0]))


def test_predict_returns_detections_in_original_pixels():
    model = tiny_detector()
    dets = model.predict([make_image(90, 120)])
    assert len(dets) == 1
    d = dets[0]
    assert 0 < len(d) <= 100
    assert d.labels.dtype == torch.int64 and int(d.labels.max()) < 3
    assert float(d.boxes[:, 0::2].max()) <= 120 and float(d.boxes[:, 1::2].max()) <= 90
    assert bool(((d.boxes[:, 2] > d.boxes[:, 0]) & (d.boxes[:, 3] > d.boxes[:, 1])).all())
    assert bool((d.scores[:-1] >= d.scores[1:]).all())


def test_predict_with_trace_and_switches():
    model = tiny_detector()
    img = make_image()
    dets, out = model.predict([img], return_trace=True)
    assert out.trace is not None and len(out.trace.blocks) == 1
    torch.testing.assert_close(out.trace.blocks[0].levels[0].output, out.features[0])
    _, off = model.predict([img], switches=AttentionSwitches.all_off(scale_off="fixed-1"), return_trace=True)
    assert (off.cls_logits[0] - out.cls_logits[0]).abs().max() > 1e-3
    # the same call again with everything on gives the first answer again: nothing is stored
    again = model.predict([img])
    assert torch.equal(again[0].boxes, dets[0].boxes)


def test_predict_requires_eval_mode():
    model = tiny_detector().train()
    with pytest.raises(RuntimeError, match="eval"):
        model.predict([make_image()])


def test_baseline_head_towers_and_zero_block_tower():
    model = DyHeadDetector(tiny_config(num_blocks=0, head_num_convs=2)).eval()
    assert len(model.tower.blocks) == 0 and model.head.cls_logits.kernel_size == (3, 3)
    with torch.no_grad():
        out = model(model.preprocess([make_image()])[0])
    assert all(torch.equal(a, b) for a, b in zip(out.pyramid, out.features))
    assert float(out.cls_logits[0].mean()) == pytest.approx(-np.log(99), abs=0.05)  # prior 0.01 init


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")

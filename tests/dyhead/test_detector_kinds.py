"""RetinaNet and Faster R-CNN + DyHead: the official goldens (conformance README sections 10, 11),
the release key layouts, this project's format, and the per-call API shared with ATSS."""

from __future__ import annotations

import json

import pytest
import torch

from dyhead.checkpoint import MissingKeysError, load_detector, official_key_map, save_checkpoint
from dyhead.config import AttentionSwitches, CoarserBranchMode
from dyhead.conformance.__main__ import main as conformance_main
from dyhead.conformance.kinds import compare_faster_rcnn, compare_retinanet
from dyhead.detector import PRESETS, build_detector, kind_settings
from dyhead.trace import TraceSpec
from dyhead.weights.manifest import save_random_release
from tests.dyhead.detector_fixtures import make_image, randomized, tiny_config

GOLDENS = {"retinanet": "official_retinanet_e2e_golden", "faster_rcnn": "official_fasterrcnn_e2e_golden"}
MANIFESTS = {"retinanet": "official_retinanet_r50_dyhead_keys.json",
             "faster_rcnn": "official_fasterrcnn_r50_dyhead_keys.json"}


def tiny_kind(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_config(num_blocks=2, **kind_settings(kind), box_fc_dim=32)
    return randomized(build_detector(cfg), seed)


def _golden(conformance_dir, kind):
    name = GOLDENS[kind]
    golden = torch.load(conformance_dir / f"{name}.pt", map_location="cpu", weights_only=True)
    return golden, json.loads((conformance_dir / f"{name}.json").read_text())


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
def test_official_golden(conformance_dir, kind):
    golden, meta = _golden(conformance_dir, kind)
    checks = (compare_retinanet if kind == "retinanet" else compare_faster_rcnn)(golden, meta)
    failed = [f"{c.name}: {c.max_abs_diff:.3e} ({c.detail})" for c in checks if not c.ok]
    assert not failed, failed
    for c in checks:
        if c.section in ("input", "anchors", "postprocess"):  # exact inputs: bit for bit
            assert c.max_abs_diff == 0.0, c.name
    final = next(c for c in checks if c.name == "det (our network)")
    assert final.detail.startswith("60 dets" if kind == "retinanet" else "72 dets") and final.max_abs_diff <= 1e-3
    if kind == "faster_rcnn":
        release = next(c for c in checks if c.name.startswith("rpn_release"))
        assert release.detail.startswith("1000 proposals [476, 338, 166, 17, 3], same order")


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
def test_conformance_cli(conformance_dir, capsys, kind):
    assert conformance_main([str(conformance_dir / f"{GOLDENS[kind]}.pt")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")


@pytest.mark.parametrize("kind,preset,count", [("retinanet", "retinanet_r50_dyhead6", 421),
                                               ("faster_rcnn", "faster_rcnn_r50_dyhead6", 415)])
def test_release_layout_loads_and_predicts(conformance_dir, tmp_path, kind, preset, count):
    """A file with exactly the release's keys and shapes loads with no missing/unexpected key, its
    kind and widths read from the tensors; a removed key is named."""
    manifest = json.loads((conformance_dir / MANIFESTS[kind]).read_text())["keys"]
    assert len(manifest) == count
    ours = build_detector(PRESETS[preset])
    key_map = official_key_map(ours)
    assert {key_map[k]: list(v.shape) for k, v in ours.state_dict().items()} == manifest
    path = save_random_release(conformance_dir / MANIFESTS[kind], tmp_path / "release.pth")
    model, info = load_detector(path, min_size=64, max_size=96)
    assert info.kind == "detectron2" and model.config.replace(min_size=800, max_size=1333) == PRESETS[preset]
    dets = model.predict([make_image(70, 90)])
    assert len(dets) == 1 and dets[0].boxes.shape[1] == 4
    state = torch.load(path, weights_only=True)["model"]
    removed = "roi_heads.box_head.fc2.bias" if kind == "faster_rcnn" else "head.bbox_subnet.6.weight"
    del state[removed]
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(MissingKeysError, match=removed.replace(".", r"\.")):
        load_detector(tmp_path / "broken.pth")


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
def test_own_format_round_trip_and_official_export(tmp_path, kind):
    model = tiny_kind(kind)
    images = [make_image(100, 130, seed=1)]
    path = save_checkpoint(tmp_path / "own.pt", model)
    loaded, info = load_detector(path)
    assert info.kind == "own" and loaded.config == model.config and loaded.config.kind == kind
    official = {official_key_map(model)[k]: v for k, v in model.state_dict().items()}
    torch.save({"model": official}, tmp_path / "official.pth")
    imported, _ = load_detector(tmp_path / "official.pth", min_size=96, max_size=160)
    assert imported.config.kind == kind
    for other in (loaded, imported):
        for a, b in zip(model.predict(images), other.predict(images)):
            assert len(a) > 0
            assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
def test_switches_traces_and_coarser_modes_per_call(kind):
    model = tiny_kind(kind)
    image = make_image(100, 130, seed=2)
    full = model.infer([image], trace=TraceSpec.everything(), keep_head_outputs=True)
    assert len(full.trace.blocks) == 2 and len(full.head_outputs.features) == 5
    first = model.config.first_level
    assert first == (2 if kind == "faster_rcnn" else 3)
    assert full.head_outputs.features[0].shape[-1] == -(-full.input_size[1] // 2 ** first)
    off = model.infer([image], switches=AttentionSwitches.all_off(scale_off="fixed-1"))
    crop = model.infer([image], coarser_branch=CoarserBranchMode.CROP)
    again = model.infer([image])
    assert torch.equal(again.detections[0].boxes, full.detections[0].boxes)  # nothing stored on the module
    assert not torch.equal(off.detections[0].scores, full.detections[0].scores) or len(off.detections[0]) != len(full.detections[0])
    assert len(crop.detections) == 1
    tower_only = model.infer([image], detections=False)
    assert tower_only.detections is None

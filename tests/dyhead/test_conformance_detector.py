"""End-to-end parity with the official ATSS + DyHead detector (conformance README section 9)."""

from __future__ import annotations

import json

import pytest
import torch

from dyhead.conformance.__main__ import main as conformance_main
from dyhead.conformance.detector import compare_detector, is_detector_golden
from torchvision.ops import nms

from dyhead.postprocess import Detections, postprocess_image, rescale_detections

LEVELS = ("p3", "p4", "p5", "p6", "p7")


@pytest.fixture(scope="module")
def golden(conformance_dir):
    return torch.load(conformance_dir / "official_atss_e2e_golden.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def meta(conformance_dir):
    return json.loads((conformance_dir / "official_atss_e2e_golden.json").read_text())


@pytest.fixture(scope="module")
def checks(golden, meta):
    return compare_detector(golden, meta, threads=None)


def test_every_check_passes(checks):
    failed = [f"{c.name}: {c.max_abs_diff:.3e} ({c.detail})" for c in checks if not c.ok]
    assert not failed, failed
    sections = {c.section for c in checks}
    assert sections == {"input", "backbone", "fpn", "dyhead", "head", "anchors", "prenms", "det", "postprocess"}
    assert sum(c.section == "dyhead" for c in checks) == 10 and sum(c.section == "head" for c in checks) == 15


def test_inputs_and_anchors_are_bit_exact(checks):
    for c in checks:
        if c.section in ("input", "anchors"):
            assert c.max_abs_diff == 0.0, c.name


def test_final_detections_match(checks):
    final = next(c for c in checks if c.name == "det (our network)")
    assert final.detail.startswith("71 dets") and final.max_abs_diff <= 1e-3


def test_post_processing_of_stored_outputs_is_bit_exact_including_stress_sets(checks):
    post = [c for c in checks if c.section == "postprocess"]
    assert len(post) == 6  # stored, stress, stress2 x (det_resized, det)
    assert all(c.max_abs_diff == 0.0 for c in post)


def test_the_golden_tells_post_processing_mistakes_apart(golden):
    """README 9.5: class-agnostic NMS gives 55 detections instead of 71; skipping the empty-box
    removal gives 73."""
    cls = [golden[f"head.cls_logits.{n}"][0] for n in LEVELS]
    box = [golden[f"head.bbox_pred.{n}"][0] for n in LEVELS]
    ctr = [golden[f"head.centerness.{n}"][0] for n in LEVELS]
    anchors = [golden[f"anchors.{n}"] for n in LEVELS]
    dets, cands = postprocess_image(cls, box, ctr, anchors, return_candidates=True)
    assert len(dets) == 73 and len(rescale_detections(dets, (320, 320), (512, 512))) == 71
    keep = nms(cands.boxes, cands.scores, 0.6)[:100]
    agnostic = Detections(cands.boxes[keep], cands.scores[keep], cands.labels[keep])
    assert len(rescale_detections(agnostic, (320, 320), (512, 512))) == 55


def test_conformance_cli_dispatches_to_the_detector(conformance_dir, capsys, golden):
    assert is_detector_golden(golden)
    assert conformance_main([str(conformance_dir / "official_atss_e2e_golden.pt")]) == 0
    out = capsys.readouterr().out
    assert "stress2.det from stress2" in out and out.rstrip().endswith("PASS")


def test_photo_decode_check_when_the_photo_lies_beside_the_golden(golden, meta, tmp_path):
    from PIL import Image

    from dyhead.conformance.detector import _photo_check

    assert _photo_check(golden, meta, tmp_path) is None  # the kit ships no photo: check skipped
    # a lossless copy of the decoded pixels stands in for the JPEG
    Image.fromarray(golden["input.original_bgr"].numpy()[:, :, ::-1].copy()).save(tmp_path / "photo.png")
    check = _photo_check(golden, {"input": {"photo": "photo.png"}}, tmp_path)
    assert check.ok and check.max_abs_diff == 0.0
    Image.fromarray(golden["input.original_bgr"].numpy().copy()).save(tmp_path / "swapped.png")  # RGB/BGR mix-up
    assert not _photo_check(golden, {"input": {"photo": "swapped.png"}}, tmp_path).ok

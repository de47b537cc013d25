"""`python -m dyhead.predict` on a random-valued file with exactly the official release's keys and
shapes (the ResNet-50 + 6-block DyHead ATSS detector), at a small test size (64 px short side: 6 DyHead blocks at 256 channels are slow on a CPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dyhead.checkpoint import load_detector
from dyhead.predict import main
from tests.conftest import REPO_ROOT
from tests.dyhead.detector_fixtures import make_image


@pytest.fixture(scope="module")
def release_like(conformance_dir, tmp_path_factory):
    manifest = json.loads((conformance_dir / "official_atss_r50_dyhead_keys.json").read_text())["keys"]
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in manifest.items():
        if key.endswith("running_var") or key.endswith("norm.weight") or key.endswith(".bn.weight"):
            t = torch.ones(shape)
        elif len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            t = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:
            t = torch.randn(shape, generator=g) * 0.05
        state[key] = t
    state["backbone.backbone.bottom_up.stem.conv1.weight"] /= 64
    state["head.cls_logits.bias"] += 2.0  # plenty of candidates
    path = tmp_path_factory.mktemp("release") / "dyhead_r50_atss_fpn_1x.pth"
    torch.save({"model": state, "__author__": "test", "iteration": 0}, path)
    return path


def test_release_layout_loads_every_key(release_like):
    model, info = load_detector(release_like, min_size=160, max_size=256)
    assert info.kind == "detectron2"
    cfg = model.config
    assert (cfg.backbone.depth, cfg.fpn_channels, cfg.tower.num_blocks, cfg.num_classes) == (50, 256, 6, 80)
    assert sum(p.numel() for p in model.parameters()) == 38_849_090


def test_predict_cli_writes_coco_results_and_reports_bad_images(release_like, tmp_path):
    good = tmp_path / "street.png"
    Image.fromarray(make_image(120, 160)).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps({"images": [{"id": 42, "file_name": "val/street.png"}]}))
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "dyhead.predict", "--checkpoint", str(release_like), "--device", "cpu",
         "--min-size", "64", "--max-size", "100", "--annotations", str(annotations), "--out", str(out), "--threads", "1",
         str(good), str(bad)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "broken.jpg" in proc.stderr and "could not be read" in proc.stderr
    assert "street.png: 160x120" in proc.stdout
    rows = json.loads(out.read_text())
    assert 0 < len(rows) <= 100
    row = rows[0]
    assert set(row) == {"file_name", "image_id", "category_id", "bbox", "score"}
    assert row["file_name"] == "street.png" and row["image_id"] == 42
    assert row["category_id"] in {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13} or 13 < row["category_id"] <= 90
    x, y, w, h = row["bbox"]
    assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 160.001 and y + h <= 120.001
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_predict_cli_checkpoint_errors(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(make_image()).save(img)
    assert main(["--checkpoint", str(tmp_path / "missing.pth"), str(img)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    text = tmp_path / "weights.pth"
    text.write_text("nope")
    assert main(["--checkpoint", str(text), str(img)]) == 2
    assert "not a torch checkpoint" in capsys.readouterr().err

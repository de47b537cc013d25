"""Two models side by side (`analysis.compare`, `python -m analysis compare`) against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.cli import main
from analysis.detection_diff import match_detections
from analysis.feature_maps import feature_stages
from analysis.sources import dataset_images
from analysis.tables import read_table
from dyhead.checkpoint import save_checkpoint
from dyhead.config import AttentionSwitches
from dyhead.evaluate import evaluate_detector
from dyhead.preprocess import load_image


def test_compare_command(tiny_model, tiny_data, tmp_path, capsys):
    from .conftest import tiny_detector

    ckpt_a = save_checkpoint(tmp_path / "a.pt", tiny_model)
    model_b = tiny_detector(seed=1)
    ckpt_b = save_checkpoint(tmp_path / "b.pt", model_b)
    out = tmp_path / "out"
    image = dataset_images(tiny_data, "val", 1)[0].path
    assert main(["compare", "--checkpoint", str(ckpt_a), "--checkpoint-b", str(ckpt_b), "--off-b", "spatial",
                 "--data", str(tiny_data), "--max-images", "3", "--image", str(image), "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    for name in ("compare_detections.csv", "compare_ap.csv", "compare_scale_ratios.csv", "compare_feature_maps.csv",
                 "compare_feature_maps.png", "compare_detections.png"):
        assert (out / name).is_file() and str(out / name) in printed, name
    off = AttentionSwitches(spatial=False)
    # AP: what evaluate_detector gives each model on the same 3 images
    ap = read_table(out / "compare_ap.csv")
    for row, (model, switches) in zip(ap.itertuples(), ((tiny_model, None), (model_b, off))):
        direct = evaluate_detector(model, tiny_data, switches=switches, max_images=3, batch_size=1, progress=False)
        assert row.AP == pytest.approx(100 * direct["AP"], abs=1e-6)
        assert row.images == 3
    # detections: matched / only A / only B counts per image from a direct match
    dets = read_table(out / "compare_detections.csv")
    for rec in dataset_images(tiny_data, "val", 3):
        img = load_image(rec.path)
        diff = match_detections(tiny_model.infer([img]).detections[0],
                                model_b.infer([img], switches=off).detections[0], 0.5, 0.3)
        mine = dets[dets.image_id == rec.image_id].status.value_counts()
        assert int(mine.get("matched", 0)) == len(diff.matched)
        assert int(mine.get("only A", 0)) == len(diff.removed)
        assert int(mine.get("only B", 0)) == len(diff.added)
    # feature maps: one colour range per (stage, level) covering both models' maps
    maps = read_table(out / "compare_feature_maps.csv")
    img = load_image(image)
    sa = feature_stages(tiny_model, img, reductions=["mean_abs"])
    sb = feature_stages(model_b, img, off, reductions=["mean_abs"])
    row = maps[(maps.stage == "block 2") & (maps.level == 1)].iloc[0]
    ma, mb = sa.reduced_map("block 2", 1, "mean_abs"), sb.reduced_map("block 2", 1, "mean_abs")
    assert row.color_min == pytest.approx(float(min(ma.min(), mb.min())))
    assert row.color_max == pytest.approx(float(max(ma.max(), mb.max())))
    assert row.max_abs_diff == pytest.approx(float(np.abs(ma - mb).max()))
    ratios = read_table(out / "compare_scale_ratios.csv")
    assert set(ratios.model) == {ap.model[0], ap.model[1]}


def test_compare_defaults_to_the_same_model_in_another_coarser_mode(tiny_model, tiny_data, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "a.pt", tiny_model)
    assert main(["compare", "--checkpoint", str(ckpt), "--data", str(tiny_data), "--max-images", "2",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    ap = read_table(tmp_path / "o" / "compare_ap.csv")
    assert "coarser upsample_first" in ap.model[1]
    direct = evaluate_detector(tiny_model, tiny_data, max_images=2, batch_size=1, progress=False,
                               coarser_branch="upsample_first")
    assert ap.AP[1] == pytest.approx(100 * direct["AP"], abs=1e-6)

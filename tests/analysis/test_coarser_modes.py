"""The three coarser-branch readings compared on one image."""

from __future__ import annotations

import pytest
import torch

from analysis.coarser_modes import compare_coarser_modes, plot_coarser_modes
from analysis.sources import dataset_images
from dyhead.config import CoarserBranchMode
from dyhead.preprocess import load_image


def test_modes_compared_against_official(tiny_model, tiny_data):
    image = load_image(dataset_images(tiny_data, "val")[2].path)
    cmp = compare_coarser_modes(tiny_model, image, score_threshold=0.0)
    f = cmp.features.set_index(["mode", "block", "level"])
    assert set(cmp.features["mode"]) == {"official", "crop", "upsample_first"}
    assert (f.loc["official"].max_abs_diff == 0).all()
    # the coarsest level P7 has no coarser neighbour: block 1's P7 output is the same in every mode
    assert f.loc[("crop", 1, 4)].max_abs_diff == 0.0
    assert f.loc[("upsample_first", 1, 0)].mean_abs_diff > 0
    # recompute one number directly
    with torch.inference_mode():
        batch, _, _ = tiny_model.preprocess([image])
        a = tiny_model(batch).features[1]
        b = tiny_model(batch, coarser_branch=CoarserBranchMode.CROP).features[1]
    assert tiny_model.config.tower.coarser_branch is CoarserBranchMode.OFFICIAL  # nothing stored on the model
    assert f.loc[("crop", 2, 1)].max_abs_diff == pytest.approx(float((a - b).abs().max()), rel=1e-5)
    w = cmp.scale_weights
    assert (w[w["mode"] == "official"].diff_vs_official == 0).all()
    d = cmp.detections.set_index("mode")
    assert d.loc["official"].matched == d.loc["official"].reference
    assert len(plot_coarser_modes(cmp).axes) == 4  # two panels + colour bars

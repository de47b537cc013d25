"""Feature maps (Fig. 4): stages equal the model's tensors, reductions, colour scales and overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.feature_maps import (
    feature_stages,
    overlay,
    paper_stages,
    plot_feature_grid,
    plotly_feature_grid,
    reduce_feature,
    reduce_stages,
)
from analysis.sources import dataset_images
from dyhead.preprocess import load_image


@pytest.fixture(scope="module")
def stages(tiny_model, tiny_data):
    image = load_image(dataset_images(tiny_data, "val")[0].path)
    return feature_stages(tiny_model, image)


def test_stages_are_the_tower_input_steps_and_outputs(tiny_model, stages):
    assert stages.stages == ["before head", "block 1, spatial+scale", "block 1", "block 2, spatial+scale", "block 2"]
    with torch.inference_mode():
        batch, sizes, _ = tiny_model.preprocess([stages.image])
        out = tiny_model(batch)
    (rh, rw), = sizes
    for level, (x, s) in enumerate(zip(out.features, tiny_model.config.strides)):
        h, w = -(-rh // s), -(-rw // s)
        assert stages.maps["block 2"][level].shape == (16, h, w)
        torch.testing.assert_close(stages.maps["block 2"][level], x[0, :, :h, :w])
        torch.testing.assert_close(stages.maps["before head"][level], out.pyramid[level][0, :, :h, :w])
    # DyReLU with the tiny model's coefficients is not the identity: the two steps differ
    assert not torch.allclose(stages.maps["block 1, spatial+scale"][0], stages.maps["block 1"][0])


def test_reductions():
    x = torch.randn(6, 5, 7)
    np.testing.assert_allclose(reduce_feature(x, "mean_abs"), x.abs().mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(reduce_feature(x, "l2"), x.norm(dim=0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(reduce_feature(x, "max"), x.max(0).values.numpy())
    np.testing.assert_allclose(reduce_feature(x, "channel:4"), x[4].numpy())
    pca = reduce_feature(x, "pca")
    assert pca.shape == (5, 7, 3)
    p = pca.reshape(-1, 3).astype(np.float64)
    # principal components: uncorrelated, decreasing variance, positive third moment
    cov = np.cov(p.T)
    assert abs(cov[0, 1]) < 1e-4 * cov[0, 0] and abs(cov[1, 2]) < 1e-4 * cov[0, 0]
    assert cov[0, 0] >= cov[1, 1] >= cov[2, 2] > 0
    assert ((p**3).mean(0) >= 0).all()
    with pytest.raises(ValueError, match="unknown reduction"):
        reduce_feature(x, "median")
    with pytest.raises(ValueError, match="out of range"):
        reduce_feature(x, "channel:6")


def test_colour_scale_is_shared_across_stages(stages):
    rows = paper_stages(stages.num_blocks)
    assert rows == ["before head", "block 2"]
    per_level = reduce_stages(stages, "mean_abs", "per_level", which=rows)
    for level in range(5):
        lo, hi = per_level.ranges[(rows[0], level)]
        assert per_level.ranges[(rows[1], level)] == (lo, hi)
        values = [per_level.maps[s][level] for s in rows]
        assert lo == min(v.min() for v in values) and hi == max(v.max() for v in values)
        normalized = [per_level.normalized(s, level) for s in rows]
        assert min(n.min() for n in normalized) == 0.0 and max(n.max() for n in normalized) == 1.0
    # the same stage in two colour groups: values are scaled by the group's range, not per map
    two = reduce_stages(stages, "mean_abs", "per_level", which=rows)
    one = reduce_stages(stages, "mean_abs", "per_level", which=["block 2"])
    assert not np.allclose(two.normalized("block 2", 0), one.normalized("block 2", 0))
    glob = reduce_stages(stages, "l2", "global", which=rows)
    assert len(set(glob.ranges.values())) == 1
    own = reduce_stages(stages, "max", "per_map", which=rows)
    for s in rows:
        for level in range(4):  # P7 of a tiny image may be a single cell
            n = own.normalized(s, level)
            assert n.min() == 0.0 and n.max() == 1.0
    pca = reduce_stages(stages, "pca", "per_level", which=rows)
    rgb = pca.normalized("block 2", 0)
    assert rgb.shape[-1] == 3 and rgb.min() >= 0 and rgb.max() <= 1


def test_overlay_blends_with_opacity(stages):
    reduced = reduce_stages(stages, "mean_abs")
    norm = reduced.normalized("block 1", 1)
    image = stages.image
    assert np.array_equal(overlay(image, norm, opacity=0.0), image)
    full = overlay(image, norm, opacity=1.0)
    half = overlay(image, norm, opacity=0.5)
    assert full.shape == image.shape and full.dtype == np.uint8
    np.testing.assert_allclose(half.astype(float), (image.astype(float) + full) / 2, atol=1.01)
    with pytest.raises(ValueError, match="opacity"):
        overlay(image, norm, opacity=1.5)


def test_figures(stages):
    fig = plot_feature_grid(stages, "pca")
    assert len(fig.axes) == 2 * 5
    pfig = plotly_feature_grid(stages, "max", color_scale="global")
    assert len(pfig.data) == 2 * 5

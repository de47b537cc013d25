"""Feature maps (Fig. 4): stages equal the model's tensors, reductions, colour scales and overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.feature_maps import (
    COLOR_SCALE_TEXT,
    COLOR_SCALES,
    cell_centre_pixel,
    color_scale_note,
    feature_stages,
    overlay,
    paper_stages,
    plot_feature_grid,
    reduce_feature,
    reduce_stages,
    stage_overlay,
    with_geometry,
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


def test_default_colour_scale_normalises_each_map(stages):
    """Under the default scale a block row is not dark because the FPN row is larger: every map spans
    its own [0, 1]; "per_stage" shares one range along a row only."""
    rows = paper_stages(stages.num_blocks)
    default = reduce_stages(stages, "mean_abs", which=rows)
    assert default.color_scale == "per_map" == COLOR_SCALES[0]
    for s in rows:
        for level in range(4):
            n = default.normalized(s, level)
            assert n.min() == 0.0 and n.max() == 1.0
    per_stage = reduce_stages(stages, "mean_abs", "per_stage", which=rows)
    for s in rows:
        lo = min(float(per_stage.maps[s][l].min()) for l in range(5))
        hi = max(float(per_stage.maps[s][l].max()) for l in range(5))
        assert {per_stage.ranges[(s, l)] for l in range(5)} == {(lo, hi)}
    assert per_stage.ranges[(rows[0], 0)] != per_stage.ranges[(rows[1], 0)]
    assert set(COLOR_SCALE_TEXT) == set(COLOR_SCALES)
    assert "shared across rows" in color_scale_note("per_level")
    with pytest.raises(ValueError, match="color_scale"):
        reduce_stages(stages, "mean_abs", "per_row")


def test_overlay_puts_a_cell_where_the_sampling_points_do():
    """Demo sample 0's geometry: 384x381 original, 323x320 network input; P7 (stride 128) keeps 3x3
    cells that cover 384x384 input pixels, more than the image. A single lit cell must be brightest
    where `cell_centre_pixel` (the sampling-point view's formula) puts its centre."""
    from app.drawing import sampling_points

    image = np.zeros((384, 381, 3), np.uint8)
    resized, stride = (323, 320), 128
    scale_yx = (384 / 323, 381 / 320)
    for i, j in ((0, 0), (1, 1), (2, 1)):
        norm = np.zeros((3, 3, 3))
        norm[i, j] = 1.0  # RGB maps are taken as colours: a white cell
        out = overlay(image, norm, opacity=1.0, stride=stride, resized_size=resized).sum(-1)
        centre_y = cell_centre_pixel(i, stride, scale_yx[0])
        centre_x = cell_centre_pixel(j, stride, scale_yx[1])
        assert centre_y < 384 and centre_x < 381  # even the last cells' centres (380.4) are in the image
        # brightest at the centre pixel (bilinear between centres; flat towards the image border)
        assert out[int(centre_y), int(centre_x)] >= out.max() - 6
        if (i, j) == (1, 1):  # an inner cell peaks at its centre only
            row_peak, col_peak = np.unravel_index(np.argmax(out), out.shape)
            assert abs(row_peak + 0.5 - centre_y) <= 1.0 and abs(col_peak + 0.5 - centre_x) <= 1.0
            stretched = overlay(image, norm, opacity=1.0).sum(-1)
            assert stretched[int(centre_y), int(centre_x)] < 0.8 * stretched.max()  # 36 px off there
        pts = sampling_points(np.zeros((18, 3, 3)), np.ones((9, 3, 3)), i, j, stride, scale_yx)
        centre_tap = pts[pts.tap == 4].iloc[0]
        assert centre_tap.grid_y == pytest.approx(centre_y) and centre_tap.grid_x == pytest.approx(centre_x)
    # cell 0 reaches down to 128 * 384 / 323 = 152 original rows (stretched it would end at 128)
    norm = np.zeros((3, 3))
    norm[0, :] = 1.0
    col = overlay(image, norm[..., None].repeat(3, -1), opacity=1.0, stride=stride, resized_size=resized)[:, 0, 0]
    assert col[int(cell_centre_pixel(0, stride, scale_yx[0]))] >= 254  # its centre, 76 rows down
    # row 140 lies at input row 140.5 * 323 / 384 = 118.2, 0.42 cells past cell 0's centre (64)
    assert abs(int(col[140]) - 255 * (1 - (140.5 * 323 / 384 / 128 - 0.5))) <= 1.0  # 147; stretched: 102
    stretched = overlay(image, norm[..., None].repeat(3, -1), opacity=1.0)[:, 0, 0]
    assert abs(int(stretched[140]) - 102) <= 1  # stretched, cell 0 would end at row 128, not 152


def test_grid_cells_are_placed_with_the_model_geometry(tiny_model, stages):
    placed = with_geometry(stages, model=tiny_model)
    (rh, rw), = tiny_model.preprocess([stages.image])[1]
    assert placed.resized_size == (rh, rw) and placed.strides == tuple(tiny_model.config.strides)
    reduced = reduce_stages(placed, "mean_abs", which=["block 2"])
    level = 4
    got = stage_overlay(placed, reduced, "block 2", level, opacity=1.0)
    expected = overlay(stages.image, reduced.normalized("block 2", level), 1.0,
                       stride=placed.strides[level], resized_size=(rh, rw))
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="resized_size"):
        with_geometry(stages)

"""Anchors (one per location, 8 x stride, offset 0.5, row-major) and the detectron2 box coder."""

from __future__ import annotations

import math

import torch

from dyhead.anchors import grid_anchors, level_anchors
from dyhead.box_coding import SCALE_CLAMP, BoxCoder


def test_grid_anchors_centres_sides_and_order():
    a = grid_anchors(2, 3, stride=8)  # [6, 4]
    assert a.shape == (6, 4) and a.dtype == torch.float32
    # location (y=0, x=0): centre (4, 4), side 64
    assert a[0].tolist() == [-28.0, -28.0, 36.0, 36.0]
    # row-major, y outer: index 1 is (y=0, x=1), index 3 is (y=1, x=0)
    assert a[1].tolist() == [-20.0, -28.0, 44.0, 36.0]
    assert a[3].tolist() == [-28.0, -20.0, 36.0, 44.0]
    assert a[5].tolist() == [-12.0, -20.0, 52.0, 44.0]


def test_anchor_offset_and_scale_are_honoured():
    a = grid_anchors(1, 1, stride=16, scale=4.0, offset=0.0)
    assert a[0].tolist() == [-32.0, -32.0, 32.0, 32.0]


def test_level_anchors_sizes():
    anchors = level_anchors([(4, 6), (2, 3), (1, 2)], [8, 16, 32])
    assert [a.shape[0] for a in anchors] == [24, 6, 2]
    widths = [float(a[0, 2] - a[0, 0]) for a in anchors]
    assert widths == [64.0, 128.0, 256.0]


def test_decode_matches_the_formula_without_plus_one():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    assert coder.decode(torch.zeros(1, 4), anchors).tolist() == [[0.0, 0.0, 10.0, 20.0]]
    # dx = 10 -> shift by one width (weights 10); dw = 5 * log 2 -> width doubles (weight 5)
    deltas = torch.tensor([[10.0, -10.0, 5 * math.log(2.0), 0.0]])
    torch.testing.assert_close(coder.decode(deltas, anchors), torch.tensor([[5.0, -20.0, 25.0, 0.0]]))


def test_decode_clamps_dw_dh_from_above_only():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    box = coder.decode(torch.tensor([[0.0, 0.0, 100.0, -100.0]]), anchors)[0]
    width, height = float(box[2] - box[0]), float(box[3] - box[1])
    assert math.isclose(width, 16 * math.exp(SCALE_CLAMP), rel_tol=1e-5)  # = 1000
    assert math.isclose(width, 1000.0, rel_tol=1e-5)
    assert height < 1e-6  # exp(-20) * 16: no clamp from below


def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(0)
    anchors = grid_anchors(4, 4, stride=16)
    xy = torch.rand(16, 2, generator=g) * 60
    wh = torch.rand(16, 2, generator=g) * 100 + 5
    boxes = torch.cat([xy, xy + wh], dim=1)
    coder = BoxCoder()
    deltas = coder.encode(anchors, boxes)
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, atol=1e-4, rtol=1e-5)
    assert coder.encode(anchors, anchors).abs().max() == 0

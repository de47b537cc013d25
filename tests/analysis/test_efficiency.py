"""Table 2 cost: deform_conv2d is counted, and the per-block GMACs reproduce the paper's increment."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from analysis.efficiency import PAPER_PER_BLOCK, count_gmacs, efficiency_table


def test_deform_conv2d_is_counted_as_the_dense_conv():
    n, c_in, c_out, h, w = 2, 8, 12, 10, 14
    x = torch.randn(n, c_in, h, w)
    weight = torch.randn(c_out, c_in, 3, 3)
    offset = torch.zeros(n, 18, h, w)
    mask = torch.ones(n, 9, h, w)
    deform, per_op = count_gmacs(lambda: deform_conv2d(x, offset, weight, mask=mask, padding=1))
    dense, _ = count_gmacs(lambda: F.conv2d(x, weight, padding=1))
    assert dense == pytest.approx(n * c_out * h * w * c_in * 9 / 1e9)
    assert deform == pytest.approx(dense)
    assert any("deform_conv2d" in op for op in per_op)
    unregistered, _ = count_gmacs(lambda: deform_conv2d(x, offset, weight, mask=mask, padding=1),
                                  count_deform_conv=False)
    assert unregistered == 0.0
    # stride 2 halves the output grid and the count with it
    strided, _ = count_gmacs(lambda: deform_conv2d(x, offset[:, :, ::2, ::2], weight, mask=mask[:, :, ::2, ::2],
                                                   stride=2, padding=1))
    assert strided == pytest.approx(n * c_out * 5 * 7 * c_in * 9 / 1e9)


def test_per_block_gmacs_reproduce_table2_at_800x1344():
    df = efficiency_table(blocks=(0, 1), latency=False)  # meta tensors, 256 channels
    assert df.attrs["input_size"] == "800x1344"
    one = df.set_index("blocks").loc[1]
    base = df.set_index("blocks").loc[0]
    assert one.per_block_gmacs == pytest.approx(21.212, abs=0.001)
    assert abs(one.per_block_gmacs / PAPER_PER_BLOCK - 1) < 0.02
    assert base.gmacs == pytest.approx(105.70, abs=0.01)
    assert one.delta_gmacs == pytest.approx(-84.48, abs=0.01)
    assert abs(one.delta_gmacs - one.paper_delta) < 0.25
    assert one.gmacs_deform_conv > 0.9 * one.gmacs  # the deformable convs dominate
    assert base.params == 2 * 4 * (256 * 256 * 9 + 256 + 2 * 256)  # conv weights + bias + GroupNorm
    # whole ATSS R50 detector: backbone + FPN + towers + 3x3 predictors (conformance README: 209.8)
    assert base.detector_gmacs == pytest.approx(209.78, abs=0.01)
    # ... and the detector delta differs from the tower delta by 3x3 vs 1x1 predictors (85 outputs)
    predictors = 85 * 256 * (9 - 1) * (100 * 168 + 50 * 84 + 25 * 42 + 13 * 21 + 7 * 11) / 1e9
    assert one.detector_gmacs - base.detector_gmacs == pytest.approx(one.delta_gmacs - predictors, abs=1e-6)


def test_latency_is_measured_on_request():
    df = efficiency_table(blocks=(0, 1), channels=16, image_size=(256, 256), pad=128, latency=True,
                          latency_repeats=1, device="cpu")
    assert (df.latency_ms > 0).all() and all(math.isfinite(v) for v in df.latency_ms)
    assert df.attrs["latency_device"] == "cpu"

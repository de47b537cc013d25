"""Modulated deformable convolution (DCNv2), the one place the tower calls it.

Shapes (3x3 kernel, K = 9 taps):
    input  Tensor[N, C_in, H_in, W_in]
    offset Tensor[N, 2*K, H_out, W_out]   channel 2k = dy, 2k+1 = dx of tap k = 3*i + j
    mask   Tensor[N, K, H_out, W_out]     in [0, 1]
    weight Tensor[C_out, C_in, 3, 3]
    bias   Tensor[C_out] or None
    ->     Tensor[N, C_out, H_out, W_out]

The convention is torchvision's `deform_conv2d`, which is also the official DyHead CUDA kernel's
(conformance README, section 3), so offsets are passed on unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torchvision.ops import deform_conv2d as _torchvision_deform_conv2d


def modulated_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    stride: int = 1,
    padding: int = 1,
) -> Tensor:
    return _torchvision_deform_conv2d(
        input, offset, weight, bias, stride=stride, padding=padding, mask=mask
    )

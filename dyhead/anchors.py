"""Anchors of the official ATSS + DyHead detector: one square anchor per feature-map location.

detectron2 ``DefaultAnchorGenerator`` with sizes 8 x stride, aspect ratio 1 and offset 0.5
(conformance README 9.3 step 6): on each *padded* feature grid of stride s, the anchor of location
(y, x) is centred at ((x + offset) s, (y + offset) s) with side `scale` s, ordered row-major (y outer),
the same order in which the head maps are flattened.

Shape legend: H_l x W_l the size of level l, A_l = H_l * W_l anchors.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["grid_anchors", "level_anchors"]


def grid_anchors(
    height: int, width: int, stride: int, scale: float = 8.0, offset: float = 0.5, device=None
) -> Tensor:
    """Anchors of one level: Tensor[H*W, 4] float32 XYXY in padded-image pixels."""
    # Same float32 arithmetic as detectron2: shifts from arange, then shift + half-size cell anchor.
    shift_x = torch.arange(offset * stride, width * stride, step=stride, dtype=torch.float32, device=device)
    shift_y = torch.arange(offset * stride, height * stride, step=stride, dtype=torch.float32, device=device)
    shift_x, shift_y = shift_x[:width], shift_y[:height]
    sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")  # [H, W] each
    sx, sy = sx.reshape(-1), sy.reshape(-1)
    shifts = torch.stack((sx, sy, sx, sy), dim=1)  # [H*W, 4]
    half = scale * stride / 2.0
    cell = torch.tensor([-half, -half, half, half], dtype=torch.float32, device=device)
    return shifts + cell


def level_anchors(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    scale: float = 8.0,
    offset: float = 0.5,
    device=None,
) -> list[Tensor]:
    """One Tensor[H_l*W_l, 4] per level, for feature-map sizes [(H_l, W_l)]."""
    if len(sizes) != len(strides):
        raise ValueError(f"{len(sizes)} feature sizes but {len(strides)} strides")
    return [grid_anchors(h, w, s, scale, offset, device) for (h, w), s in zip(sizes, strides)]

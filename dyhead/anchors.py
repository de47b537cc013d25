"""Anchors of the official DyHead detectors: detectron2's ``DefaultAnchorGenerator``.

* ATSS (conformance README 9.3 step 6): one square anchor per location, side 8 x stride, offset 0.5.
* RetinaNet (10.3 step 6): 9 anchors per location, sizes 32 * 2^(l-3) * {2^0, 2^(1/3), 2^(2/3)} on
  level l, aspect ratios (h/w) {0.5, 1, 2}, offset 0.0.
* Faster R-CNN's RPN (11.3 step 6): 3 anchors per location, size 32 * 2^(l-2) on P2..P6, the same
  three ratios, offset 0.0.

Cell anchors are computed in double (size outer, ratio inner: anchor a = size_index * R + ratio_index)
and rounded to float32 once; the grid shift of a *padded* feature map of stride s is
``arange(offset * s, W * s, s)`` in float32, added to each cell anchor. Order (y, x, a), y outermost:
the order in which the head maps are flattened.

Shape legend: H_l x W_l the size of level l, A anchors per location, A_l = H_l * W_l * A.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["cell_anchors", "grid_anchors", "level_anchors", "anchors_per_location"]


def cell_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> Tensor:
    """Tensor[len(sizes) * len(ratios), 4] XYXY centred on 0, float32 (computed in double)."""
    cells = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            cells.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(cells, dtype=torch.float64).float()


def anchors_per_location(sizes: Sequence[float], ratios: Sequence[float]) -> int:
    return len(sizes) * len(ratios)


def grid_anchors(
    height: int, width: int, stride: int, scale: float = 8.0, offset: float = 0.5, device=None,
    sizes: Sequence[float] = (), ratios: Sequence[float] = (1.0,),
) -> Tensor:
    """Anchors of one level: Tensor[H*W*A, 4] float32 XYXY in padded-image pixels.

    sizes: the anchor sides of this level (empty: one square anchor of side `scale` * stride)."""
    shift_x = torch.arange(offset * stride, width * stride, step=stride, dtype=torch.float32, device=device)
    shift_y = torch.arange(offset * stride, height * stride, step=stride, dtype=torch.float32, device=device)
    shift_x, shift_y = shift_x[:width], shift_y[:height]
    sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")  # [H, W] each
    sx, sy = sx.reshape(-1), sy.reshape(-1)
    shifts = torch.stack((sx, sy, sx, sy), dim=1)  # [H*W, 4]
    if not sizes:
        half = scale * stride / 2.0
        cell = torch.tensor([[-half, -half, half, half]], dtype=torch.float32, device=device)
    else:
        cell = cell_anchors(sizes, ratios).to(device)  # [A, 4]
    return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)  # [H*W*A, 4], order (y, x, a)


def level_anchors(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    scale: float = 8.0,
    offset: float = 0.5,
    device=None,
    anchor_sizes: Sequence[Sequence[float]] = (),
    ratios: Sequence[float] = (1.0,),
) -> list[Tensor]:
    """One Tensor[H_l*W_l*A, 4] per level, for feature-map sizes [(H_l, W_l)].

    anchor_sizes: per level, the anchor sides (empty: ATSS's single `scale` * stride square)."""
    if len(sizes) != len(strides):
        raise ValueError(f"{len(sizes)} feature sizes but {len(strides)} strides")
    if anchor_sizes and len(anchor_sizes) != len(strides):
        raise ValueError(f"{len(anchor_sizes)} anchor size sets but {len(strides)} strides")
    per_level = anchor_sizes or [()] * len(strides)
    return [grid_anchors(h, w, s, scale, offset, device, tuple(a), tuple(ratios))
            for (h, w), s, a in zip(sizes, strides, per_level)]

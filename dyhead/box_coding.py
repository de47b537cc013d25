"""Box deltas <-> boxes: detectron2's ``Box2BoxTransform`` as the official ATSS + DyHead uses it.

Weights (10, 10, 5, 5), widths without +1, and dw/dh clamped from above at log(1000/16) before exp
(conformance README 9.3 step 8). Deltas are (dx, dy, dw, dh); boxes XYXY.

Shape legend: R boxes.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["BoxCoder", "SCALE_CLAMP"]

#: detectron2 ``_DEFAULT_SCALE_CLAMP``: no box grows more than 1000/16 times its anchor per side.
SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    def __init__(self, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), scale_clamp: float = SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"box coder needs 4 weights, got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, anchors: Tensor, boxes: Tensor) -> Tensor:
        """anchors [R, 4], target boxes [R, 4] -> deltas [R, 4]."""
        wx, wy, ww, wh = self.weights
        aw = anchors[:, 2] - anchors[:, 0]
        ah = anchors[:, 3] - anchors[:, 1]
        acx = anchors[:, 0] + 0.5 * aw
        acy = anchors[:, 1] + 0.5 * ah
        bw = boxes[:, 2] - boxes[:, 0]
        bh = boxes[:, 3] - boxes[:, 1]
        bcx = boxes[:, 0] + 0.5 * bw
        bcy = boxes[:, 1] + 0.5 * bh
        dx = wx * (bcx - acx) / aw
        dy = wy * (bcy - acy) / ah
        dw = ww * torch.log(bw / aw)
        dh = wh * torch.log(bh / ah)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """deltas [R, 4] (float32 math, as detectron2), anchors [R, 4] -> boxes [R, 4], unclipped."""
        deltas = deltas.float()
        anchors = anchors.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        widths = anchors[:, 2] - anchors[:, 0]
        heights = anchors[:, 3] - anchors[:, 1]
        ctr_x = anchors[:, 0] + 0.5 * widths
        ctr_y = anchors[:, 1] + 0.5 * heights
        dx = deltas[:, 0] / wx
        dy = deltas[:, 1] / wy
        dw = torch.clamp(deltas[:, 2] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3] / wh, max=self.scale_clamp)
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        pred_w = torch.exp(dw) * widths
        pred_h = torch.exp(dh) * heights
        return torch.stack(
            (pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h, pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h),
            dim=1,
        )

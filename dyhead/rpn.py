"""The region proposal network of the official Faster R-CNN + DyHead release (detectron2 v0.5 ``RPN``
with ``StandardRPNHead``), at test time.

Conformance README 11.3 steps 5-11 and quirks 11.8:

* head, shared over P2..P6: t = ReLU(conv3x3(x)); objectness = conv1x1(t) -> A channels; deltas =
  conv1x1(t) -> A*4 channels (channel a*4 + j);
* per level, the `pre_nms_topk` highest *raw* logits (no sigmoid) and their anchors, decoded with
  weights (1, 1, 1, 1) and the log(1000/16) clamp;
* levels concatenated; non-finite boxes dropped; boxes clipped to the unpadded image; boxes with a
  side <= `min_size` dropped;
* NMS (IoU 0.7) per level (the level is the NMS category), then one top-`post_nms_topk` over all
  levels, per image. Boxes stay clipped, logits raw.

Init (detectron2): N(0, 0.01) weights, zero biases.

Shape legend: N batch, C channels, A anchors per location, H_l x W_l level l, P proposals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from .box_coding import BoxCoder

__all__ = ["RPNHead", "Proposals", "find_top_proposals", "clip_boxes"]


class RPNHead(nn.Module):
    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for m in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.constant_(m.bias, 0.0)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """features: L tensors [N, C, H_l, W_l] -> (objectness logits [N, A, H_l, W_l], anchor deltas
        [N, A*4, H_l, W_l]), per level."""
        logits, deltas = [], []
        for x in features:
            t = torch.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


@dataclass
class Proposals:
    """The RPN's output for one image, by decreasing logit."""

    boxes: Tensor  # [P, 4] XYXY, clipped to the resized image
    objectness_logits: Tensor  # [P] raw logits
    levels: Tensor  # [P] int64, RPN level (0 = finest)
    anchors: Tensor  # [P] int64, index into that level's anchors


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """detectron2 ``Boxes.clip``: x to [0, w], y to [0, h]."""
    h, w = image_size
    return torch.stack((boxes[:, 0].clamp(min=0, max=w), boxes[:, 1].clamp(min=0, max=h),
                        boxes[:, 2].clamp(min=0, max=w), boxes[:, 3].clamp(min=0, max=h)), dim=-1)


def find_top_proposals(
    objectness_logits: Sequence[Tensor],
    anchor_deltas: Sequence[Tensor],
    anchors: Sequence[Tensor],
    image_size: tuple[int, int],
    box_coder: BoxCoder,
    pre_nms_topk: int = 1000,
    post_nms_topk: int = 1000,
    nms_thresh: float = 0.7,
    min_size: float = 0.0,
) -> Proposals:
    """One image, per level [A, H_l, W_l] / [A*4, H_l, W_l] / [H_l*W_l*A, 4] -> `Proposals`
    (detectron2 ``find_top_rpn_proposals``)."""
    boxes, logits, levels, anchor_ids = [], [], [], []
    for level, (obj_l, delta_l, anc_l) in enumerate(zip(objectness_logits, anchor_deltas, anchors)):
        num_anchors = obj_l.shape[0]
        flat = obj_l.permute(1, 2, 0).reshape(-1)  # [H*W*A], order (y, x, a)
        num_topk = min(pre_nms_topk, flat.numel())
        top, idx = flat.sort(descending=True)
        top, idx = top[:num_topk], idx[:num_topk]
        _, h, w = delta_l.shape
        deltas = delta_l.view(num_anchors, 4, h, w).permute(2, 3, 0, 1).reshape(-1, 4)  # [H*W*A, 4]
        boxes.append(box_coder.decode(deltas[idx], anc_l[idx]))
        logits.append(top)
        anchor_ids.append(idx)
        levels.append(torch.full_like(idx, level))
    boxes_all, logits_all = torch.cat(boxes), torch.cat(logits)
    levels_all, anchors_all = torch.cat(levels), torch.cat(anchor_ids)
    valid = torch.isfinite(boxes_all).all(dim=1) & torch.isfinite(logits_all)
    if not bool(valid.all()):
        boxes_all, logits_all, levels_all, anchors_all = (t[valid] for t in (boxes_all, logits_all, levels_all, anchors_all))
    boxes_all = clip_boxes(boxes_all, image_size)
    nonempty = (boxes_all[:, 2] - boxes_all[:, 0] > min_size) & (boxes_all[:, 3] - boxes_all[:, 1] > min_size)
    if not bool(nonempty.all()):
        boxes_all, logits_all, levels_all, anchors_all = (t[nonempty] for t in (boxes_all, logits_all, levels_all, anchors_all))
    keep = batched_nms(boxes_all.float(), logits_all, levels_all, nms_thresh)[:post_nms_topk]
    return Proposals(boxes_all[keep], logits_all[keep], levels_all[keep], anchors_all[keep])

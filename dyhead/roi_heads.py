"""The box branch of the official Faster R-CNN + DyHead release (detectron2 v0.5 ``StandardROIHeads``
with ``FastRCNNConvFCHead`` and ``FastRCNNOutputLayers``), at test time. No mask head (as released).

Conformance README 11.3 steps 12-16 and quirks 11.8:

12. level of a proposal: floor(4 + log2(sqrt(area) / 224 + 1e-8)), clamped to P2..P5;
13. ROIAlignV2 on that level of the DyHead output: ``roi_align(aligned=True)``, 7x7, spatial scale
    1/stride, sampling ratio 0 (ceil(bin size) samples per bin side);
14. box head: flatten in (C, H, W) order -> fc1 -> ReLU -> fc2 -> ReLU;
15. predictor: ``cls_score`` -> K+1 logits with the background *last*; ``bbox_pred`` -> K*4
    class-specific deltas (class k uses 4k..4k+3);
16. softmax, background dropped; every class's box decoded with weights (10, 10, 5, 5) and clipped to
    the image *before* NMS; candidates with prob > threshold (proposal-major, class-minor); class-wise
    NMS (IoU 0.5), the best `max_detections`.

Init (detectron2): fc layers c2_xavier_fill (uniform, a=1), cls_score N(0, 0.01), bbox_pred N(0, 0.001),
zero biases.

Shape legend: P proposals, C channels, S pooler resolution, D fc width, K classes, R candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, roi_align

from .box_coding import BoxCoder
from .postprocess import Candidates, Detections
from .rpn import clip_boxes

__all__ = ["BoxHead", "BoxPredictor", "ROIBoxHeads", "assign_levels", "pool_boxes", "fast_rcnn_inference"]


def assign_levels(boxes: Tensor, min_level: int = 2, max_level: int = 5, canonical_box_size: float = 224.0,
                  canonical_level: int = 4) -> Tensor:
    """detectron2 ``assign_boxes_to_levels``: [P, 4] -> [P] int64 level index, 0 = `min_level`."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    level = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_box_size + 1e-8))
    return torch.clamp(level, min=min_level, max=max_level).to(torch.int64) - min_level


def pool_boxes(features: Sequence[Tensor], boxes: Tensor, strides: Sequence[int], levels: Tensor,
               resolution: int = 7) -> Tensor:
    """ROIAlignV2 of one image's boxes [P, 4] from its levels [1, C, H_l, W_l] -> [P, C, S, S]."""
    rois = torch.cat((boxes.new_zeros(len(boxes), 1), boxes), dim=1)  # [P, 5], batch index 0
    out = features[0].new_zeros((len(boxes), features[0].shape[1], resolution, resolution))
    for level, (x, stride) in enumerate(zip(features, strides)):
        inds = torch.nonzero(levels == level, as_tuple=True)[0]
        if inds.numel():
            out[inds] = roi_align(x, rois[inds].to(x.dtype), (resolution, resolution), spatial_scale=1.0 / stride,
                                  sampling_ratio=0, aligned=True)
    return out


class BoxHead(nn.Module):
    """Two fully connected layers, each followed by ReLU (``FastRCNNConvFCHead``, NUM_FC 2)."""

    def __init__(self, in_features: int, fc_dim: int = 1024) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.constant_(fc.bias, 0.0)

    def forward(self, pooled: Tensor) -> Tensor:
        x = torch.relu(self.fc1(pooled.flatten(1)))  # [P, C*S*S] in (C, H, W) order -> [P, D]
        return torch.relu(self.fc2(x))


class BoxPredictor(nn.Module):
    """``FastRCNNOutputLayers``: K+1 class logits (background last) and K*4 class-specific deltas."""

    def __init__(self, fc_dim: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_dim, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)  # [P, K+1], [P, K*4]


@dataclass
class ROIOutputs:
    """Everything the box branch computed for one image's proposals (in proposal order)."""

    levels: Tensor  # [P] pooler level, 0 = P2
    pooled: Tensor  # [P, C, S, S]
    box_features: Tensor  # [P, D]
    cls_logits: Tensor  # [P, K+1]
    bbox_deltas: Tensor  # [P, K*4]


class ROIBoxHeads(nn.Module):
    """The box branch: `box_head` and `box_predictor` (detectron2's sub-module names)."""

    def __init__(self, channels: int, num_classes: int, fc_dim: int = 1024, resolution: int = 7) -> None:
        super().__init__()
        self.resolution = resolution
        self.box_head = BoxHead(channels * resolution * resolution, fc_dim)
        self.box_predictor = BoxPredictor(fc_dim, num_classes)

    def forward(self, features: Sequence[Tensor], strides: Sequence[int], proposal_boxes: Tensor) -> ROIOutputs:
        """features: the pooled levels of one image [1, C, H_l, W_l] (P2..P5), proposals [P, 4]."""
        levels = assign_levels(proposal_boxes, min_level=int(math.log2(strides[0])),
                               max_level=int(math.log2(strides[-1])))
        pooled = pool_boxes(features, proposal_boxes, strides, levels, self.resolution)
        box_features = self.box_head(pooled)
        cls_logits, bbox_deltas = self.box_predictor(box_features)
        return ROIOutputs(levels, pooled, box_features, cls_logits, bbox_deltas)


def fast_rcnn_inference(
    cls_logits: Tensor,
    bbox_deltas: Tensor,
    proposal_boxes: Tensor,
    image_size: tuple[int, int],
    box_coder: BoxCoder,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    max_detections: int = 100,
    return_candidates: bool = False,
):
    """One image: logits [P, K+1], deltas [P, K*4], proposals [P, 4] -> `Detections` in resized-image
    pixels, clipped, by decreasing score (detectron2 ``fast_rcnn_inference_single_image``). With
    `return_candidates`, also the `Candidates` (their `locations` are proposal indices)."""
    num_classes = bbox_deltas.shape[1] // 4
    probs = torch.softmax(cls_logits.float(), dim=-1)  # [P, K+1]
    proposals = proposal_boxes.float()
    boxes = box_coder.decode(bbox_deltas.float().reshape(-1, 4),
                             proposals[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4))  # [P*K, 4]
    boxes = boxes.view(-1, num_classes, 4)  # [P, K, 4]
    valid = torch.isfinite(boxes).flatten(1).all(dim=1) & torch.isfinite(probs).all(dim=1)
    index = torch.arange(len(probs), device=probs.device)
    if not bool(valid.all()):
        boxes, probs, index = boxes[valid], probs[valid], index[valid]
    scores = probs[:, :-1]  # background (last) dropped
    boxes = clip_boxes(boxes.reshape(-1, 4), image_size).view(-1, num_classes, 4)
    mask = scores > score_thresh  # [P, K]
    where = mask.nonzero()  # [R, 2] (proposal, class), proposal-major
    cand_boxes, cand_scores = boxes[mask], scores[mask]
    labels, proposal = where[:, 1], index[where[:, 0]]
    keep = batched_nms(cand_boxes, cand_scores, labels, nms_thresh)[:max_detections]
    dets = Detections(cand_boxes[keep], cand_scores[keep], labels[keep])
    if return_candidates:
        return dets, Candidates(cand_boxes, cand_scores, labels, torch.zeros_like(labels), proposal), proposal[keep]
    return dets

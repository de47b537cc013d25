"""From head outputs to detections, as the official ATSS + DyHead inference computes them.

Conformance README 9.3 steps 7-10, per image:

7. per level, candidates are the (location, class) pairs with sigmoid(cls) > threshold (on the class
   probability alone); their score is sigmoid(cls) * sigmoid(centerness) (no sqrt, unlike
   maskrcnn-benchmark/GLIP); a level keeps its `pre_nms_top_n` best candidates by that product;
8. boxes are decoded from the anchors (no clipping, no small-box removal);
9. all levels together go through class-wise NMS (torchvision ``batched_nms``), best first, and the
   first `max_detections` are kept;
10. detectron2 ``detector_postprocess``: scale to the original image by original / resized (unpadded)
    size, clamp to the image and drop boxes with zero width or height (after the cap).

Shape legend: K classes, H_l x W_l level l, A_l = H_l * W_l anchors, M detections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .box_coding import BoxCoder

__all__ = ["Candidates", "Detections", "select_candidates", "postprocess_image", "rescale_detections"]


@dataclass
class Detections:
    """Detections of one image. boxes XYXY (original-image pixels after `rescale_detections`)."""

    boxes: Tensor  # [M, 4] float32
    scores: Tensor  # [M] float32
    labels: Tensor  # [M] int64, contiguous class index 0..K-1
    #: where each detection was scored (set by `postprocess_image`, kept by `rescale_detections`):
    #: its pyramid level (0 = finest) and its anchor point on that level's padded map, y * W_l + x
    levels: Optional[Tensor] = None  # [M] int64
    locations: Optional[Tensor] = None  # [M] int64

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to(self, device) -> "Detections":
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device),
                          None if self.levels is None else self.levels.to(device),
                          None if self.locations is None else self.locations.to(device))


@dataclass
class Candidates:
    """Every pre-NMS candidate of one image, levels concatenated in order."""

    boxes: Tensor  # [R, 4] decoded, unclipped, resized-image pixels
    scores: Tensor  # [R] sigmoid(cls) * sigmoid(centerness)
    labels: Tensor  # [R] int64
    levels: Tensor  # [R] int64, 0 = finest
    locations: Tensor  # [R] int64, y * W_l + x


def select_candidates(
    cls_logits: Tensor,
    bbox_deltas: Tensor,
    centerness: Tensor,
    anchors: Tensor,
    box_coder: BoxCoder,
    score_thresh: float = 0.05,
    pre_nms_top_n: int = 1000,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One level of one image: cls [K, H, W], deltas [4, H, W], centerness [1, H, W], anchors [A, 4]
    -> (boxes [R, 4], scores [R], labels [R], locations [R]) with R <= pre_nms_top_n."""
    num_classes = cls_logits.shape[0]
    cls_prob = cls_logits.permute(1, 2, 0).reshape(-1, num_classes).sigmoid()  # [A, K], location-major
    ctr_prob = centerness.permute(1, 2, 0).reshape(-1, 1).sigmoid()  # [A, 1]
    deltas = bbox_deltas.permute(1, 2, 0).reshape(-1, 4)  # [A, 4]
    keep = cls_prob > score_thresh  # the threshold is on the class probability alone
    score = (cls_prob * ctr_prob)[keep]  # [R0]
    locations, labels = keep.nonzero(as_tuple=True)  # row-major over (location, class)
    if score.numel() > pre_nms_top_n:
        score, order = score.sort(descending=True, stable=True)
        order = order[:pre_nms_top_n]
        score = score[:pre_nms_top_n]
        locations, labels = locations[order], labels[order]
    boxes = box_coder.decode(deltas[locations], anchors[locations])
    return boxes, score, labels, locations


def postprocess_image(
    cls_logits: Sequence[Tensor],
    bbox_deltas: Sequence[Tensor],
    centerness: Sequence[Tensor],
    anchors: Sequence[Tensor],
    box_coder: Optional[BoxCoder] = None,
    score_thresh: float = 0.05,
    pre_nms_top_n: int = 1000,
    nms_thresh: float = 0.6,
    max_detections: int = 100,
    return_candidates: bool = False,
):
    """One image, per level [K, H_l, W_l] / [4, H_l, W_l] / [1, H_l, W_l] / [A_l, 4] -> `Detections` in
    resized-image pixels (unclipped, sorted by decreasing score): the official ``ATSS.inference``.
    With `return_candidates`, returns ``(detections, Candidates)``."""
    box_coder = box_coder or BoxCoder()
    boxes, scores, labels, levels, locations = [], [], [], [], []
    for level, (cls_l, box_l, ctr_l, anc_l) in enumerate(zip(cls_logits, bbox_deltas, centerness, anchors)):
        b, s, c, loc = select_candidates(cls_l, box_l, ctr_l, anc_l, box_coder, score_thresh, pre_nms_top_n)
        boxes.append(b)
        scores.append(s)
        labels.append(c)
        locations.append(loc)
        levels.append(torch.full_like(loc, level))
    boxes_all = torch.cat(boxes)  # [R, 4]
    scores_all = torch.cat(scores)  # [R]
    labels_all = torch.cat(labels)  # [R]
    keep = batched_nms(boxes_all.float(), scores_all, labels_all, nms_thresh)[:max_detections]
    levels_all = torch.cat(levels)  # [R]
    locations_all = torch.cat(locations)  # [R]
    dets = Detections(boxes_all[keep], scores_all[keep], labels_all[keep], levels_all[keep], locations_all[keep])
    if return_candidates:
        return dets, Candidates(boxes_all, scores_all, labels_all, levels_all, locations_all)
    return dets


def rescale_detections(
    dets: Detections, resized_size: tuple[int, int], original_size: tuple[int, int]
) -> Detections:
    """detectron2 ``detector_postprocess``: resized-image -> original-image pixels, clamp, drop empty."""
    out_h, out_w = original_size
    scale_x = out_w / resized_size[1]
    scale_y = out_h / resized_size[0]
    boxes = dets.boxes.clone()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=out_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=out_h)
    nonempty = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    return Detections(boxes[nonempty], dets.scores[nonempty], dets.labels[nonempty],
                      None if dets.levels is None else dets.levels[nonempty],
                      None if dets.locations is None else dets.locations[nonempty])

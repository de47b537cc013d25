"""Adaptive Training Sample Selection (ATSS), the label assignment of the DyHead ATSS detector.

Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive Training
Sample Selection", CVPR 2020, Algorithm 1; the official DyHead ATSS detector uses it unchanged
(topk = 9, one square anchor per location). Per ground-truth box g:

1. on every pyramid level, take the `topk` anchors whose centres are closest (L2) to g's centre;
2. threshold t_g = mean + std (unbiased) of the IoUs between g and these candidates;
3. a candidate is positive for g if IoU >= t_g and its centre lies strictly inside g;
4. an anchor positive for several boxes goes to the one it overlaps most (max IoU).

Dimension legend:
    A  anchors of one image, all levels concatenated finest first (A = sum of A_l)
    A_l anchors on level l (H_l * W_l, row-major)
    M  ground-truth boxes of one image
    C  candidates per box (sum over levels of min(topk, A_l))
Boxes are (x1, y1, x2, y2) in the model input's pixel frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

#: Official ATSS: MODEL.ATSS.TOPK = 9.
DEFAULT_TOPK = 9
#: Official ATSS checks l, t, r, b > 0.01 for "centre inside the box".
_INSIDE_EPS = 0.01


@dataclass(frozen=True)
class AtssAssignment:
    """Result for one image.

    matched_gt: Tensor[A] (int64) index of the assigned ground-truth box, -1 = background.
    """

    matched_gt: Tensor

    @property
    def positive(self) -> Tensor:
        return self.matched_gt >= 0  # [A] bool


def box_centers(boxes: Tensor) -> Tensor:
    """Tensor[B, 4] xyxy -> Tensor[B, 2] (cx, cy)."""
    return torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), dim=1)


def atss_assign(anchors_per_level: list[Tensor], gt_boxes: Tensor, topk: int = DEFAULT_TOPK) -> AtssAssignment:
    """Assign every anchor of one image to a ground-truth box or to the background.

    anchors_per_level: list of Tensor[A_l, 4], finest level first (the order of the flattened outputs).
    gt_boxes: Tensor[M, 4].
    """
    anchors = torch.cat(anchors_per_level, dim=0)  # [A, 4]
    num_anchors = anchors.shape[0]
    num_gt = gt_boxes.shape[0]
    if num_gt == 0:
        return AtssAssignment(torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device))
    gt_boxes = gt_boxes.to(anchors.dtype)

    ious = box_iou(anchors, gt_boxes)  # [A, M]
    anchor_ctr = box_centers(anchors)  # [A, 2]
    distances = torch.cdist(anchor_ctr, box_centers(gt_boxes))  # [A, M]

    candidates = []
    start = 0
    for level_anchors in anchors_per_level:
        count = level_anchors.shape[0]
        k = min(topk, count)
        # Ties in distance are broken by torch.topk's order; the official code does the same.
        _, idx = distances[start:start + count].topk(k, dim=0, largest=False)  # [k, M]
        candidates.append(idx + start)
        start += count
    candidate_idx = torch.cat(candidates, dim=0)  # [C, M]

    gt_cols = torch.arange(num_gt, device=anchors.device)
    candidate_ious = ious[candidate_idx, gt_cols[None, :]]  # [C, M]
    threshold = candidate_ious.mean(dim=0) + candidate_ious.std(dim=0)  # [M]
    is_pos = candidate_ious >= threshold[None, :]  # [C, M]

    # Candidate centre strictly inside its box.
    cand_ctr = anchor_ctr[candidate_idx]  # [C, M, 2]
    ltrb = torch.stack((
        cand_ctr[..., 0] - gt_boxes[None, :, 0],
        cand_ctr[..., 1] - gt_boxes[None, :, 1],
        gt_boxes[None, :, 2] - cand_ctr[..., 0],
        gt_boxes[None, :, 3] - cand_ctr[..., 1],
    ), dim=-1)  # [C, M, 4]
    is_pos &= ltrb.min(dim=-1).values > _INSIDE_EPS

    # An anchor claimed by several boxes goes to the box of highest IoU.
    claimed = torch.full_like(ious, -float("inf"))  # [A, M]
    pos_c, pos_m = is_pos.nonzero(as_tuple=True)
    anchor_rows = candidate_idx[pos_c, pos_m]
    claimed[anchor_rows, pos_m] = ious[anchor_rows, pos_m]
    best_iou, best_gt = claimed.max(dim=1)  # [A]
    matched = torch.where(best_iou > -float("inf"), best_gt, torch.full_like(best_gt, -1))
    return AtssAssignment(matched)


def centerness_targets(anchors: Tensor, boxes: Tensor) -> Tensor:
    """ATSS/FCOS centerness of anchor centres inside their boxes: sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)).

    anchors, boxes: Tensor[P, 4] (positive anchors and their matched boxes) -> Tensor[P].
    """
    ctr = box_centers(anchors)
    l = ctr[:, 0] - boxes[:, 0]
    t = ctr[:, 1] - boxes[:, 1]
    r = boxes[:, 2] - ctr[:, 0]
    b = boxes[:, 3] - ctr[:, 1]
    lr = torch.stack((l, r), dim=1)
    tb = torch.stack((t, b), dim=1)
    ratio = (lr.min(dim=1).values / lr.max(dim=1).values) * (tb.min(dim=1).values / tb.max(dim=1).values)
    return ratio.clamp(min=0).sqrt()

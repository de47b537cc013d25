"""Training losses of the ATSS detector under DyHead (official ATSS loss, as in microsoft/DynamicHead).

Per batch, with P positive anchors over all images:

* classification: sigmoid focal loss (alpha 0.25, gamma 2) summed over all anchors and classes,
  divided by the number of positives (Lin et al., 2017; ATSS `ATSSLossComputation`);
* box regression: GIoU loss between decoded predicted boxes and the matched ground-truth boxes,
  weighted per anchor by its centerness target and divided by the sum of those targets, times 2.0
  (official `MODEL.ATSS.REG_LOSS_WEIGHT = 2.0`);
* centerness: binary cross-entropy between the predicted centerness logit and its target, summed over
  positives and divided by the number of positives.

Under DistributedDataParallel the normalisers (number of positives, sum of centerness targets) are
averaged over processes, as the official code does (`reduce_sum(...) / num_gpus`).

Dimension legend:
    N images, L levels, K classes, A anchors of one image (all levels, finest first, row-major),
    M ground-truth boxes of one image, P positive anchors in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from dyhead.atss_assigner import DEFAULT_TOPK, atss_assign, centerness_targets

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
GIOU_WEIGHT = 2.0


@dataclass(frozen=True)
class GroundTruth:
    """Boxes of one image in the model input frame (after resize/flip). boxes Tensor[M, 4] xyxy,
    labels Tensor[M] int64 in 0..K-1 (contiguous class index)."""

    boxes: Tensor
    labels: Tensor


def flatten_levels(maps: Sequence[Tensor]) -> Tensor:
    """list of Tensor[N, D, H_l, W_l] -> Tensor[N, A, D] (level by level, row-major inside a level),
    the same order as the anchors of `model.anchors`."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], dim=1)


def _average_over_processes(value: Tensor) -> Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value)
        value = value / torch.distributed.get_world_size()
    return value


def atss_losses(
    anchors_per_level: list[Tensor],
    ground_truth: Sequence[GroundTruth],
    cls_logits: Sequence[Tensor],
    bbox_deltas: Sequence[Tensor],
    centerness: Sequence[Tensor],
    box_coder,
    topk: int = DEFAULT_TOPK,
) -> dict[str, Tensor]:
    """The three ATSS losses of a batch.

    anchors_per_level: list of Tensor[A_l, 4] (the same for every image of a padded batch).
    ground_truth: one `GroundTruth` per image.
    cls_logits / bbox_deltas / centerness: per level Tensor[N, K | 4 | 1, H_l, W_l] (`HeadOutputs`).
    box_coder: has `decode(deltas Tensor[P, 4], anchors Tensor[P, 4]) -> Tensor[P, 4]`.
    Returns {"loss_cls", "loss_box", "loss_centerness"} (scalars).
    """
    logits = flatten_levels(cls_logits)  # [N, A, K]
    deltas = flatten_levels(bbox_deltas)  # [N, A, 4]
    ctr_logits = flatten_levels(centerness)[..., 0]  # [N, A]
    num_images, num_anchors, num_classes = logits.shape
    anchors = torch.cat(anchors_per_level, dim=0)  # [A, 4]
    if anchors.shape[0] != num_anchors:
        raise ValueError(f"{anchors.shape[0]} anchors but the head predicts {num_anchors} positions")
    if len(ground_truth) != num_images:
        raise ValueError(f"{len(ground_truth)} ground-truth entries for a batch of {num_images}")

    cls_targets = torch.zeros_like(logits)  # [N, A, K]
    pos_images, pos_anchors, pos_boxes = [], [], []
    with torch.no_grad():
        for i, gt in enumerate(ground_truth):
            boxes = gt.boxes.to(anchors.device, anchors.dtype)
            matched = atss_assign(anchors_per_level, boxes, topk=topk).matched_gt  # [A]
            pos = (matched >= 0).nonzero(as_tuple=True)[0]  # [P_i]
            cls_targets[i, pos, gt.labels.to(anchors.device)[matched[pos]]] = 1.0
            pos_images.append(torch.full_like(pos, i))
            pos_anchors.append(pos)
            pos_boxes.append(boxes[matched[pos]])
    pos_images = torch.cat(pos_images)  # [P]
    pos_anchors = torch.cat(pos_anchors)  # [P]
    target_boxes = torch.cat(pos_boxes)  # [P, 4]
    num_pos = _average_over_processes(torch.tensor(float(pos_anchors.numel()), device=logits.device))
    num_pos = num_pos.clamp(min=1.0)

    loss_cls = sigmoid_focal_loss(
        logits.float(), cls_targets.float(), alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="sum"
    ) / num_pos

    if pos_anchors.numel() == 0:
        # Keep every output in the graph so that DDP sees gradients for all parameters.
        zero = deltas.sum() * 0.0 + ctr_logits.sum() * 0.0
        return {"loss_cls": loss_cls, "loss_box": zero, "loss_centerness": zero}

    pos_anchor_boxes = anchors[pos_anchors]  # [P, 4]
    ctr_targets = centerness_targets(pos_anchor_boxes, target_boxes)  # [P]
    pred_boxes = box_coder.decode(deltas[pos_images, pos_anchors].float(), pos_anchor_boxes.float())  # [P, 4]
    giou = generalized_box_iou_loss(pred_boxes, target_boxes.float(), reduction="none")  # [P]
    ctr_sum = _average_over_processes(ctr_targets.sum()).clamp(min=1e-6)
    loss_box = GIOU_WEIGHT * (giou * ctr_targets).sum() / ctr_sum
    loss_ctr = F.binary_cross_entropy_with_logits(
        ctr_logits[pos_images, pos_anchors].float(), ctr_targets, reduction="sum"
    ) / num_pos
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_centerness": loss_ctr}

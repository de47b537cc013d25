"""RetinaNet's head and test-time decoding, as the official RetinaNet + DyHead release runs them.

``configs/dyhead_r50_retina_fpn_1x.yaml`` leaves ``RETINANET.NUM_CONVS`` at 4, so detectron2's own
RetinaNet subnets sit on top of the DyHead tower (conformance README 10.3 steps 5-10, quirks 10.8):

* classification subnet: 4 x (conv3x3 with bias -> ReLU), then ``cls_score``, a 3x3 conv to A*K;
* regression subnet: its own 4 x (conv3x3 -> ReLU), then ``bbox_pred``, a 3x3 conv to A*4;
* no normalisation, weights shared over levels, no per-level Scale.

Inference per level: prob = sigmoid(logit) over the (y, x, a, k) flattening, candidates with
prob > threshold, the `topk` best by prob, decoded with weights (1, 1, 1, 1) (no clipping); then all
levels go through class-wise NMS (IoU 0.5) and the best `max_detections` are kept.

Init (detectron2 ``RetinaNetHead``): N(0, 0.01) weights, zero biases, class bias -log((1-p)/p), p = 0.01.

Shape legend: N batch, C channels, A anchors per location, K classes, H_l x W_l level l,
R candidates, M detections.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from .box_coding import BoxCoder
from .postprocess import Candidates, Detections

__all__ = ["RetinaNetHead", "retinanet_postprocess_image"]


class RetinaNetHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, num_anchors: int, num_convs: int = 4,
                 prior_prob: float = 0.01) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        # Sequential indices 0, 2, 4, 6 for the convs (ReLUs between), as detectron2 names them.
        self.cls_subnet = self._subnet(in_channels, num_convs)
        self.bbox_subnet = self._subnet(in_channels, num_convs)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0.0)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _subnet(channels: int, num_convs: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for _ in range(num_convs):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        return nn.Sequential(*layers)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """features: L tensors [N, C, H_l, W_l] -> (class logits [N, A*K, H_l, W_l], deltas
        [N, A*4, H_l, W_l], classification-subnet outputs, regression-subnet outputs), per level."""
        logits, deltas, cls_feats, box_feats = [], [], [], []
        for x in features:
            cls_feat = self.cls_subnet(x)  # [N, C, H_l, W_l]
            box_feat = self.bbox_subnet(x)
            cls_feats.append(cls_feat)
            box_feats.append(box_feat)
            logits.append(self.cls_score(cls_feat))  # [N, A*K, H_l, W_l], channel a*K + k
            deltas.append(self.bbox_pred(box_feat))  # [N, A*4, H_l, W_l], channel a*4 + j
        return logits, deltas, cls_feats, box_feats


def _flatten(x: Tensor, last: int) -> Tensor:
    """[A*last, H, W] -> [H*W*A, last] (detectron2 ``permute_to_N_HWA_K`` for one image)."""
    _, h, w = x.shape
    return x.view(-1, last, h, w).permute(2, 3, 0, 1).reshape(-1, last)


def retinanet_postprocess_image(
    cls_logits: Sequence[Tensor],
    bbox_deltas: Sequence[Tensor],
    anchors: Sequence[Tensor],
    box_coder: BoxCoder,
    score_thresh: float = 0.05,
    topk: int = 1000,
    nms_thresh: float = 0.5,
    max_detections: int = 100,
    return_candidates: bool = False,
):
    """One image, per level [A*K, H_l, W_l] / [A*4, H_l, W_l] / [H_l*W_l*A, 4] -> `Detections` in
    resized-image pixels (unclipped, by decreasing score): detectron2 ``RetinaNet.inference``.
    With `return_candidates`, also the `Candidates` (their `locations` index the level's anchors)."""
    boxes, scores, labels, levels, anchor_ids = [], [], [], [], []
    for level, (cls_l, box_l, anc_l) in enumerate(zip(cls_logits, bbox_deltas, anchors)):
        num_classes = cls_l.shape[0] // (box_l.shape[0] // 4)  # A*K channels over A*4
        prob = _flatten(cls_l, num_classes).flatten().sigmoid()  # [H*W*A*K], order (y, x, a, k)
        keep = prob > score_thresh
        prob = prob[keep]
        flat = keep.nonzero(as_tuple=True)[0]
        num_topk = min(topk, flat.numel())
        prob, order = prob.sort(descending=True)  # detectron2 sorts every candidate, not stable
        prob, flat = prob[:num_topk], flat[order[:num_topk]]
        anchor_idx = flat // num_classes
        deltas = _flatten(box_l, 4)[anchor_idx]  # [R_l, 4]
        boxes.append(box_coder.decode(deltas, anc_l[anchor_idx]))
        scores.append(prob)
        labels.append(flat % num_classes)
        anchor_ids.append(anchor_idx)
        levels.append(torch.full_like(anchor_idx, level))
    boxes_all, scores_all, labels_all = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(boxes_all.float(), scores_all, labels_all, nms_thresh)[:max_detections]
    dets = Detections(boxes_all[keep], scores_all[keep], labels_all[keep])
    if return_candidates:
        return dets, Candidates(boxes_all, scores_all, labels_all, torch.cat(levels), torch.cat(anchor_ids))
    return dets

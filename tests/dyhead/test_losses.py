"""ATSS losses: focal normalisation, GIoU on decoded boxes weighted by centerness, centerness BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from dyhead.anchors import level_anchors
from dyhead.atss_assigner import atss_assign, centerness_targets
from dyhead.box_coding import BoxCoder
from dyhead.losses import GroundTruth, atss_losses, flatten_levels

SIZES = [(8, 8), (4, 4), (2, 2)]
STRIDES = (8, 16, 32)
K = 3


def _outputs(seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    cls = [torch.randn(2, K, h, w, generator=g) - 2 for h, w in SIZES]
    box = [0.3 * torch.randn(2, 4, h, w, generator=g) for h, w in SIZES]
    ctr = [torch.randn(2, 1, h, w, generator=g) for h, w in SIZES]
    if requires_grad:
        for t in cls + box + ctr:
            t.requires_grad_()
    return cls, box, ctr


def _gt():
    return [
        GroundTruth(torch.tensor([[6.0, 8, 30, 28], [20, 10, 60, 60]]), torch.tensor([2, 0])),
        GroundTruth(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
    ]


def test_flatten_levels_matches_anchor_order():
    maps = [torch.arange(2 * 2 * h * w, dtype=torch.float32).view(2, 2, h, w) for h, w in SIZES]
    flat = flatten_levels(maps)  # [2, A, 2]
    assert flat.shape == (2, 64 + 16 + 4, 2)
    # Position (y=1, x=3) of level 0, channel 1 of image 0 is row 1*8+3.
    assert flat[0, 11, 1] == maps[0][0, 1, 1, 3]
    assert flat[1, 64, 0] == maps[1][1, 0, 0, 0]


def test_losses_against_their_definitions():
    anchors = level_anchors(SIZES, STRIDES, scale=4.0)
    coder = BoxCoder((10, 10, 5, 5))
    cls, box, ctr = _outputs(requires_grad=True)
    gts = _gt()
    losses = atss_losses(anchors, gts, cls, box, ctr, coder)

    matched = atss_assign(anchors, gts[0].boxes).matched_gt
    pos = (matched >= 0).nonzero()[:, 0]
    assert pos.numel() > 0
    flat_anchors = torch.cat(anchors)
    targets = torch.zeros(2, flat_anchors.shape[0], K)
    targets[0, pos, gts[0].labels[matched[pos]]] = 1
    expected_cls = sigmoid_focal_loss(flatten_levels(cls), targets, alpha=0.25, gamma=2, reduction="sum") / pos.numel()
    torch.testing.assert_close(losses["loss_cls"], expected_cls)

    gt_boxes = gts[0].boxes[matched[pos]]
    w = centerness_targets(flat_anchors[pos], gt_boxes)
    pred = coder.decode(flatten_levels(box)[0, pos], flat_anchors[pos])
    from torchvision.ops import generalized_box_iou_loss

    expected_box = 2.0 * (generalized_box_iou_loss(pred, gt_boxes, reduction="none") * w).sum() / w.sum()
    torch.testing.assert_close(losses["loss_box"], expected_box)
    expected_ctr = F.binary_cross_entropy_with_logits(flatten_levels(ctr)[0, pos, 0], w, reduction="sum") / pos.numel()
    torch.testing.assert_close(losses["loss_centerness"], expected_ctr)

    sum(losses.values()).backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in cls + box + ctr)


def test_perfect_boxes_give_zero_giou_loss():
    anchors = level_anchors(SIZES, STRIDES, scale=4.0)
    coder = BoxCoder((10, 10, 5, 5))
    cls, box, ctr = _outputs()
    gts = _gt()
    flat_anchors = torch.cat(anchors)
    matched = atss_assign(anchors, gts[0].boxes).matched_gt
    pos = matched >= 0
    deltas = flatten_levels(box)
    deltas[0, pos] = coder.encode(flat_anchors[pos], gts[0].boxes[matched[pos]])
    # Scatter the encoded deltas back into per-level maps.
    maps, start = [], 0
    for h, w in SIZES:
        maps.append(deltas[:, start:start + h * w].reshape(2, h, w, 4).permute(0, 3, 1, 2))
        start += h * w
    losses = atss_losses(anchors, gts, cls, maps, ctr, coder)
    assert losses["loss_box"].abs() < 1e-5


def test_no_positives_in_batch():
    anchors = level_anchors(SIZES, STRIDES, scale=4.0)
    cls, box, ctr = _outputs()
    empty = GroundTruth(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    losses = atss_losses(anchors, [empty, empty], cls, box, ctr, BoxCoder())
    expected = sigmoid_focal_loss(flatten_levels(cls), torch.zeros(2, 84, K), reduction="sum")  # / max(0, 1)
    torch.testing.assert_close(losses["loss_cls"], expected)
    assert losses["loss_box"] == 0 and losses["loss_centerness"] == 0

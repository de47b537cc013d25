"""ATSS assignment on a hand-computed case, and its invariants on a real anchor grid."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from dyhead.anchors import level_anchors
from dyhead.atss_assigner import atss_assign, centerness_targets

# Level 0: three 16-px anchors in a row; level 1: two 32-px anchors.
LEVEL0 = torch.tensor([[0.0, 0, 16, 16], [16, 0, 32, 16], [32, 0, 48, 16]])
LEVEL1 = torch.tensor([[0.0, 0, 32, 32], [32, 0, 64, 32]])


def test_hand_computed_threshold_and_max_iou_tie():
    # g = [2,0,22,16]; topk=2 candidates: A0 (IoU 224/352 = 0.636), A1 (96/480 = 0.2), B0 (320/1024 =
    # 0.3125), B1 (0). mean 0.2872 + unbiased std 0.2662 = 0.5535 -> only A0, whose centre (8,8) is
    # inside g.
    g = torch.tensor([[2.0, 0, 22, 16]])
    assert atss_assign([LEVEL0, LEVEL1], g, topk=2).matched_gt.tolist() == [0, -1, -1, -1, -1]
    # g2 = A0 exactly: candidates A0 (1.0), A1 (0), B0 (0.25), B1 (0): threshold 0.786 -> A0 again.
    # A0 is positive for both boxes and goes to the one it overlaps most: g2 (IoU 1 > 0.636).
    g2 = torch.tensor([[0.0, 0, 16, 16]])
    both = torch.cat([g, g2])
    assert atss_assign([LEVEL0, LEVEL1], both, topk=2).matched_gt.tolist() == [1, -1, -1, -1, -1]
    assert atss_assign([LEVEL0, LEVEL1], both.flip(0), topk=2).matched_gt.tolist() == [0, -1, -1, -1, -1]


def test_no_boxes_means_all_background():
    out = atss_assign([LEVEL0, LEVEL1], torch.zeros(0, 4))
    assert out.matched_gt.tolist() == [-1] * 5 and not out.positive.any()


def test_invariants_on_a_pyramid_grid():
    anchors = level_anchors([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], (8, 16, 32, 64, 128))
    boxes = torch.tensor([[10.0, 12, 22, 25], [40, 40, 120, 110], [2, 2, 126, 126], [70, 3, 82, 90]])
    matched = atss_assign(anchors, boxes).matched_gt
    flat = torch.cat(anchors)
    pos = matched >= 0
    assert set(matched[pos].tolist()) == {0, 1, 2, 3}  # every box gets positives
    # Each positive's centre is inside its box, and it is the box it overlaps most among its claimants.
    ctr = (flat[pos, :2] + flat[pos, 2:]) / 2
    b = boxes[matched[pos]]
    assert ((ctr > b[:, :2]) & (ctr < b[:, 2:])).all()
    # A small box is matched on fine levels, a large one on coarse levels (ATSS's scale adaptivity).
    level_of = torch.cat([torch.full((a.shape[0],), i) for i, a in enumerate(anchors)])
    # (Anchor sides are 8 x stride: 64 px on level 0, 128 px on level 1.)
    assert level_of[matched == 0].max() == 0
    assert level_of[matched == 2].min() >= 1
    assert (box_iou(flat[pos], boxes).gather(1, matched[pos][:, None]) > 0).all()


def test_centerness_targets():
    anchors = torch.tensor([[0.0, 0, 16, 16], [4, 4, 12, 12]])  # centres (8, 8)
    boxes = torch.tensor([[0.0, 0, 16, 32], [0, 0, 16, 16]])
    # l=r=8, t=8, b=24 -> sqrt(1 * 8/24); a centred anchor -> 1.
    torch.testing.assert_close(centerness_targets(anchors, boxes), torch.tensor([(8 / 24) ** 0.5, 1.0]))

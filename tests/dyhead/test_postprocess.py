"""Official ATSS post-processing (README 9.3 steps 7-10) on hand-made head outputs."""

from __future__ import annotations

import math

import torch

from dyhead.box_coding import BoxCoder
from dyhead.postprocess import Detections, postprocess_image, rescale_detections, select_candidates


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def one_level(cls_probs, ctr_probs, deltas=None, stride=8):
    """cls_probs [K, H, W] probabilities, ctr_probs [H, W] -> head outputs and anchors of one level."""
    cls = torch.tensor(cls_probs).logit()
    k, h, w = cls.shape
    ctr = torch.tensor(ctr_probs).logit().view(1, h, w)
    box = torch.zeros(4, h, w) if deltas is None else deltas
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cx = ((xs.reshape(-1) + 0.5) * stride).float()
    cy = ((ys.reshape(-1) + 0.5) * stride).float()
    anchors = torch.stack([cx - 4 * stride, cy - 4 * stride, cx + 4 * stride, cy + 4 * stride], 1)
    return cls, box, ctr, anchors


def test_threshold_is_on_class_probability_and_score_is_the_plain_product():
    # location 0: p=0.06 (passes) with centerness 0.1 -> score 0.006 < 0.05 but kept;
    # location 1: p=0.04 (fails) although centerness is 0.99.
    cls, box, ctr, anchors = one_level([[[0.06, 0.04]]], [[0.1, 0.99]])
    boxes, scores, labels, locations = select_candidates(cls, box, ctr, anchors, BoxCoder())
    assert locations.tolist() == [0] and labels.tolist() == [0]
    torch.testing.assert_close(scores, torch.tensor([0.006]))  # no sqrt


def test_per_level_top_n_ranks_by_the_product():
    # three candidates; by class probability the order is a > b > c, by product c > b > a.
    cls, box, ctr, anchors = one_level([[[0.9, 0.5, 0.3]]], [[0.1, 0.5, 0.99]])
    _, scores, _, locations = select_candidates(cls, box, ctr, anchors, BoxCoder(), pre_nms_top_n=2)
    assert sorted(locations.tolist()) == [1, 2]


def test_candidates_are_location_major_then_class():
    cls, box, ctr, anchors = one_level([[[0.9, 0.01]], [[0.8, 0.7]]], [[0.5, 0.5]])
    _, _, labels, locations = select_candidates(cls, box, ctr, anchors, BoxCoder())
    assert list(zip(locations.tolist(), labels.tolist())) == [(0, 0), (0, 1), (1, 1)]


def test_nms_is_class_wise_and_the_cap_applies_before_empty_box_removal():
    # two classes at the same location with identical boxes: both survive (class-wise NMS)
    cls, box, ctr, anchors = one_level([[[0.9]], [[0.8]]], [[0.5]])
    dets = postprocess_image([cls], [box], [ctr], [anchors])
    assert dets.labels.tolist() == [0, 1] and torch.equal(dets.boxes[0], dets.boxes[1])
    # same class at two heavily overlapping locations (IoU 56/72 > 0.6): one survives
    cls, box, ctr, anchors = one_level([[[0.9, 0.8]]], [[0.5, 0.5]])
    dets = postprocess_image([cls], [box], [ctr], [anchors])
    assert len(dets) == 1 and float(dets.scores[0]) == torch.tensor(0.9 * 0.5).item()
    dets = postprocess_image([cls], [box], [ctr], [anchors], nms_thresh=0.9)
    assert len(dets) == 2
    # max_detections keeps the best first
    dets = postprocess_image([cls], [box], [ctr], [anchors], nms_thresh=0.9, max_detections=1)
    assert len(dets) == 1 and dets.scores[0] > 0.44


def test_levels_are_selected_separately():
    lv0 = one_level([[[0.9, 0.8]]], [[0.5, 0.5]], stride=8)
    lv1 = one_level([[[0.7]]], [[0.5]], stride=16)
    dets = postprocess_image([lv0[0], lv1[0]], [lv0[1], lv1[1]], [lv0[2], lv1[2]], [lv0[3], lv1[3]],
                             pre_nms_top_n=1, nms_thresh=0.99)
    assert sorted(round(s, 4) for s in dets.scores.tolist()) == [0.35, 0.45]


def test_rescale_scales_by_unpadded_size_clamps_and_drops_empty_boxes():
    dets = Detections(
        boxes=torch.tensor([[10.0, 20.0, 50.0, 40.0], [-5.0, -5.0, 300.0, 100.0], [10.0, 330.0, 20.0, 360.0]]),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        labels=torch.tensor([1, 2, 3]),
    )
    out = rescale_detections(dets, resized_size=(320, 200), original_size=(640, 500))  # x * 2.5, y * 2
    assert out.labels.tolist() == [1, 2]  # the third lay below the image: empty after clamping
    torch.testing.assert_close(out.boxes, torch.tensor([[25.0, 40.0, 125.0, 80.0], [0.0, 0.0, 500.0, 200.0]]))


def test_no_candidates_gives_empty_detections():
    cls, box, ctr, anchors = one_level([[[0.01, 0.02]]], [[0.9, 0.9]])
    dets = postprocess_image([cls], [box], [ctr], [anchors])
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)
    assert len(rescale_detections(dets, (16, 16), (32, 32))) == 0

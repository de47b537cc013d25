"""Each detection carries the level and anchor point that scored it (`Detections.levels` / `.locations`)."""

from __future__ import annotations

import numpy as np
import torch

from dyhead.detector import PRESETS, build_detector, feature_sizes
from dyhead.postprocess import rescale_detections


def test_detections_know_their_level_and_anchor_point():
    torch.manual_seed(0)
    cfg = PRESETS["demo"].replace(score_thresh=0.0, min_size=128, max_size=160)
    model = build_detector(cfg).eval()
    image = np.random.default_rng(0).integers(0, 255, (120, 150, 3), dtype=np.uint8)
    result = model.infer([image], keep_head_outputs=True)
    dets = result.detections[0]
    assert len(dets) > 0 and dets.levels is not None and dets.locations is not None
    input_size = result.input_size
    anchors = model.anchors(torch.zeros(1, 3, *input_size))
    sizes = feature_sizes(*input_size)
    out = result.head_outputs
    (final, resized, cands), = model.postprocess(out, anchors, result.resized_sizes, result.original_sizes,
                                                 return_candidates=True)
    # rescaling drops boxes left empty by clamping and keeps the level and location of the others
    kept = [k for k in range(len(resized)) if any(torch.equal(resized.scores[k], s) for s in final.scores)]
    assert torch.equal(final.levels, resized.levels[kept]) and torch.equal(final.locations, resized.locations[kept])
    for k in range(len(resized)):
        level, loc = int(resized.levels[k]), int(resized.locations[k])
        h, w = sizes[level]
        y, x = divmod(loc, w)
        assert 0 <= y < h
        # the score is recomputed exactly from that level's logits at that cell and class
        c = int(resized.labels[k])
        cls = out.cls_logits[level][0, c, y, x].float().sigmoid()
        ctr = out.centerness[level][0, 0, y, x].float().sigmoid()
        assert abs(float(resized.scores[k]) - float(cls * ctr)) <= 1e-6 * float(cls * ctr)
        # and the box decodes from that anchor
        box = model.box_coder.decode(out.bbox_deltas[level][0, :, y, x][None].float(), anchors[level][loc][None])[0]
        assert torch.allclose(resized.boxes[k], box)
    # rescaling keeps the two in step with the boxes it keeps
    again = rescale_detections(resized, (1, 1), (1, 1))
    assert again.levels is not None and len(again.levels) == len(again)

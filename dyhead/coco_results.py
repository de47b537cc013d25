"""COCO results format: the one writer of detections as COCO result records.

A record is ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (what pycocotools'
``loadRes`` reads), plus ``"file_name"`` when the caller knows it (`dyhead.predict` on loose files).
Boxes are rounded to 1e-4 px and scores to 1e-6, one rounding for every file this project writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

__all__ = ["BOX_DECIMALS", "SCORE_DECIMALS", "detections_to_coco", "write_coco_results"]

BOX_DECIMALS = 4
SCORE_DECIMALS = 6


def detections_to_coco(detections, category_ids: Sequence[int], image_id: Optional[int] = None,
                       file_name: Optional[str] = None) -> list[dict]:
    """One image's `Detections` (xyxy in original pixels, labels 0..K-1) -> COCO result records
    (bbox [x, y, w, h]; `category_ids[label]` is the dataset's category id)."""
    boxes = detections.boxes.detach().cpu().double().tolist()
    scores = detections.scores.detach().cpu().double().tolist()
    labels = detections.labels.detach().cpu().tolist()
    rows = []
    for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels):
        row: dict = {}
        if file_name is not None:
            row["file_name"] = file_name
        if image_id is not None:
            row["image_id"] = int(image_id)
        row["category_id"] = int(category_ids[int(label)])
        row["bbox"] = [round(x1, BOX_DECIMALS), round(y1, BOX_DECIMALS), round(x2 - x1, BOX_DECIMALS),
                       round(y2 - y1, BOX_DECIMALS)]
        row["score"] = round(score, SCORE_DECIMALS)
        rows.append(row)
    return rows


def write_coco_results(path: Union[str, Path], records: list[dict]) -> Path:
    """Write records as a JSON list, atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records))
    os.replace(tmp, path)
    return path

"""COCO evaluation through pycocotools on cases whose AP is known by hand."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from dyhead.config import AttentionSwitches
from dyhead.data.coco import DatasetError
from dyhead.evaluate import evaluate_detector, format_table
from dyhead.postprocess import Detections

# Two images; category ids 3 ("a") and 7 ("b") are non-contiguous on purpose.
GT = {
    1: [(3, [10, 10, 10, 10])],  # a 10x10 box: small
    2: [(7, [20, 30, 40, 40]), (3, [5, 5, 150, 100])],  # medium, large
}


def _write(root: Path, unreadable: bool = False) -> None:
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for image_id in GT:
        name = f"{image_id}.png"
        Image.fromarray(np.full((160, 200, 3), 90, np.uint8)).save(root / "val" / name)
        images.append({"id": image_id, "file_name": name, "width": 200, "height": 160})
        for cat, (x, y, w, h) in GT[image_id]:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    if unreadable:
        (root / "val" / "2.png").write_bytes(b"")
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))


@dataclass
class _Config:
    category_ids: tuple = (3, 7)
    class_names: tuple = ("a", "b")


class FixedDetector:
    """Returns given detections per call, in image-id order; records the switches it was called with."""

    def __init__(self, per_image: list[list[tuple[int, list[float], float]]]):
        self.per_image = list(per_image)
        self.config = _Config()
        self.training = False
        self.switches_seen = []
        self.precisions_seen = []

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def infer(self, images, switches=None, precision="auto"):
        self.precisions_seen.append(precision)
        return SimpleNamespace(detections=self.predict(images, switches))

    def predict(self, images, switches=None):
        self.switches_seen.append(switches)
        out = []
        for _ in images:
            dets = self.per_image.pop(0)
            boxes = torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h), _ in dets], dtype=torch.float32).reshape(-1, 4)
            out.append(Detections(boxes, torch.tensor([s for *_, s in dets]), torch.tensor([l for l, *_ in dets])))
        return out


def _as_detections(shift: float = 0.0):
    # labels: contiguous index (category 3 -> 0, 7 -> 1)
    label = {3: 0, 7: 1}
    return [[(label[c], [b[0] + shift, b[1], b[2], b[3]], 0.9) for c, b in GT[i]] for i in GT]


def test_ground_truth_as_detections_scores_one(tmp_path):
    _write(tmp_path)
    model = FixedDetector(_as_detections())
    result = evaluate_detector(model, tmp_path, "val", batch_size=1, progress=False,
                               switches=AttentionSwitches(scale=False))
    for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert result[metric] == pytest.approx(1.0), metric
    assert result["per_class"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    assert result["num_images"] == 2 and result["num_detections"] == 3 and result["switches"] == "spatial+task"
    assert model.switches_seen == [AttentionSwitches(scale=False)] * 2
    assert model.precisions_seen == ["auto"] * 2 and result["precision"] == "auto"
    assert "AP50" in format_table(result)
    model = FixedDetector(_as_detections())
    result = evaluate_detector(model, tmp_path, "val", batch_size=1, progress=False, precision="bfloat16")
    assert model.precisions_seen == ["bfloat16"] * 2 and "precision bfloat16" in format_table(result)


def test_shifted_small_box_gives_hand_computed_ap(tmp_path):
    _write(tmp_path)
    # Only image 1 evaluated: its 10x10 box detected 2 px to the right. IoU = 80 / 120 = 0.667, a match at
    # IoU thresholds 0.50, 0.55, 0.60, 0.65 (4 of 10) with precision 1 at every recall -> AP = 0.4.
    model = FixedDetector([[(0, [12, 10, 10, 10], 0.8)]])
    result = evaluate_detector(model, tmp_path, "val", max_images=1, progress=False)
    assert result["AP"] == pytest.approx(0.4)
    assert result["AP50"] == pytest.approx(1.0) and result["AP75"] == pytest.approx(0.0)
    assert result["APs"] == pytest.approx(0.4) and result["APm"] == -1 and result["APl"] == -1
    assert result["per_class"]["a"] == pytest.approx(0.4) and result["per_class"]["b"] == -1


def test_no_detections_and_unreadable_images(tmp_path):
    _write(tmp_path, unreadable=True)
    result = evaluate_detector(FixedDetector([[]]), tmp_path, "val", progress=False)
    assert result["AP"] == 0.0 and result["num_images"] == 1
    assert len(result["skipped"]) == 1 and "2.png" in result["skipped"][0]["file"]


def test_model_categories_must_exist_in_dataset(tmp_path):
    _write(tmp_path)
    model = FixedDetector([])
    model.config = _Config(category_ids=(3, 9), class_names=("a", "z"))
    with pytest.raises(DatasetError, match=r"\[9\]"):
        evaluate_detector(model, tmp_path, "val", progress=False)

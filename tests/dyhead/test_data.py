"""Demo data generator (determinism, size span, occlusion) and COCO loading (layouts, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dyhead.data import demo
from dyhead.data.coco import CocoDetection, DatasetError, collate, flip_sample, load_coco, resolve_split

SMALL = demo.DemoSpec(size=128, min_object=8, max_object=60, min_objects=3, max_objects=5)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic_by_seed(tmp_path):
    demo.generate(tmp_path / "a", seed=3, train=3, val=2, spec=SMALL)
    demo.generate(tmp_path / "b", seed=3, train=3, val=2, spec=SMALL)
    demo.generate(tmp_path / "c", seed=4, train=3, val=2, spec=SMALL)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert set(a) == {"train/000000.jpg", "train/000001.jpg", "train/000002.jpg", "val/000000.jpg",
                      "val/000001.jpg", "annotations/instances_train.json", "annotations/instances_val.json"}
    assert a == b  # same seed: identical bytes, annotation JSON and images alike
    assert a["annotations/instances_val.json"] != c["annotations/instances_val.json"]
    assert a["val/000000.jpg"] != c["val/000000.jpg"]
    # An image regenerated alone equals the one written as part of the split (seeded per image).
    _, anns = demo.generate_image(3, "val", 1, SMALL)
    data = json.loads(a["annotations/instances_val.json"])
    assert [x["bbox"] for x in data["annotations"] if x["image_id"] == 2] == [x["bbox"] for x in anns]
    assert [c["name"] for c in data["categories"]] == list(demo.CATEGORY_NAMES)
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5, 6]


def test_object_sizes_span_16x_within_images():
    spans, sides = [], []
    for i in range(12):
        image, anns = demo.generate_image(0, "train", i)
        assert 318 <= min(image.size) and max(image.size) == 384
        longest = [max(a["bbox"][2:]) for a in anns]
        sides += longest
        spans.append(max(longest) / min(longest))
        for a in anns:  # boxes inside the image, area = visible pixels inside the box
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= image.width and y + h <= image.height
            assert 0 < a["area"] <= w * h
    assert max(sides) / min(sides) >= 16  # about 10 px to 200 px over the split
    assert min(spans) >= 3 and np.median(spans) >= 6  # small and large objects share every image
    assert max(spans) >= 12


def test_occlusion_keeps_visible_boxes():
    # With many overlapping placements, every annotated object keeps >= half its pixels, and some
    # object somewhere is partly hidden (its visible area below its unoccluded shape's).
    spec = demo.DemoSpec(size=320, min_objects=9, max_objects=9)
    fractions = []
    for i in range(6):
        _, anns = demo.generate_image(1, "train", i, spec)
        fractions += [a["area"] / (a["bbox"][2] * a["bbox"][3]) for a in anns]
    assert min(fractions) > 0.05 and len(fractions) >= 40


def _write_split(root: Path, split: str = "val", n: int = 2) -> Path:
    return demo.generate_split(root, split, n, seed=0, spec=SMALL)


def test_resolve_split_finds_both_layouts(tmp_path):
    _write_split(tmp_path / "demo", "val")
    _write_split(tmp_path / "coco", "val2017")
    assert resolve_split(tmp_path / "demo", "val").image_dir == tmp_path / "demo" / "val"
    assert resolve_split(tmp_path / "demo", "val2017").split == "val"
    assert resolve_split(tmp_path / "coco", "val").annotation_file.name == "instances_val2017.json"
    with pytest.raises(DatasetError, match="instances_train.json"):
        resolve_split(tmp_path / "demo", "train")
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_split(tmp_path / "nowhere", "val")


def test_malformed_annotations_raise_dataset_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_coco(bad)
    bad.write_text(json.dumps({"images": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DatasetError, match="'annotations'"):
        load_coco(bad)
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [{"image_id": 1, "bbox": [1, 2]}],
                               "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DatasetError, match="annotation #0"):
        load_coco(bad)
    with pytest.raises(DatasetError, match="not found"):
        load_coco(tmp_path / "missing.json")


def test_dataset_mapping_resize_crowd_and_skips(tmp_path):
    ann_file = _write_split(tmp_path, "train", 3)
    data = json.loads(ann_file.read_text())
    # Renumber categories (non-contiguous ids) and add a crowd box to image 1.
    for c in data["categories"]:
        c["id"] *= 10
    for a in data["annotations"]:
        a["category_id"] *= 10
    data["annotations"].append({"id": 999, "image_id": 1, "category_id": 30, "bbox": [0, 0, 50, 50],
                                "area": 2500, "iscrowd": 1})
    ann_file.write_text(json.dumps(data))
    (tmp_path / "train" / "000002.jpg").write_bytes(b"this is not a jpeg")

    ds = CocoDetection(tmp_path, "train", min_size=64, max_size=96)
    assert ds.category_ids == (10, 20, 30, 40, 50, 60) and ds.num_classes == 6
    n_plain = sum(1 for a in data["annotations"] if a["image_id"] == 1 and not a["iscrowd"])
    sample = ds.load(0)
    assert min(sample.image.shape[:2]) == 64 and max(sample.image.shape[:2]) <= 96
    assert len(sample.boxes) == n_plain  # crowd box dropped
    gt = [a for a in data["annotations"] if a["image_id"] == 1 and not a["iscrowd"]]
    x, y, w, h = gt[0]["bbox"]
    sy, sx = sample.scale
    np.testing.assert_allclose(sample.boxes[0], [x * sx, y * sy, (x + w) * sx, (y + h) * sy], rtol=1e-5)
    assert sample.labels[0] == gt[0]["category_id"] // 10 - 1

    assert ds.load(2) is None and ds.load(2) is None
    assert len(ds.skipped) == 1 and "000002.jpg" in ds.skipped[0][0]  # counted once, with the reason

    flipped = flip_sample(sample)
    width = sample.image.shape[1]
    np.testing.assert_allclose(flipped.boxes[:, 0], width - sample.boxes[:, 2])
    np.testing.assert_array_equal(flipped.image[:, 0], sample.image[:, -1])
    batch = collate([sample, ds.load(1)], [False, True], pixel_format="RGB", pixel_mean=(0, 0, 0),
                    pixel_std=(1, 1, 1), size_divisibility=32)
    assert batch.images.shape[-1] % 32 == 0 and batch.images.shape[-2] % 32 == 0
    assert batch.image_sizes[0] == sample.image.shape[:2]
    with pytest.raises(DatasetError, match="empty batch"):
        collate([], [], pixel_format="RGB", pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1), size_divisibility=32)


def test_command_line_writes_coco_layout_and_samples(tmp_path, capsys):
    demo.main(["--out", str(tmp_path), "--seed", "1", "--train", "1", "--val", "1", "--size", "320", "--samples", "2"])
    assert "val: 1 images" in capsys.readouterr().out
    ds = CocoDetection(tmp_path, "val", min_size=320, max_size=320)
    assert len(ds) == 1 and ds.class_names == demo.CATEGORY_NAMES
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["demo_sample_0.jpg", "demo_sample_1.jpg"]
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), "--size", "100"])


def test_draw_example_is_one_shape_in_its_class_colour():
    import colorsys

    from dyhead.data.demo import CATEGORIES, draw_example

    for name, hue in CATEGORIES:
        img = np.asarray(draw_example(name, size=64))
        assert img.shape == (64, 64, 3)
        assert tuple(img[0, 0]) == (236, 236, 236)  # plain background in the corner
        # The ring is hollow: look on its band; every other shape covers its centre.
        y, x = (32, 32 - int(0.8 * 64 / 2 * 0.8)) if name == "ring" else (32, 32)
        h, s, _ = colorsys.rgb_to_hsv(*(img[y, x] / 255.0))
        assert s > 0.5 and min(abs(h - hue), 1 - abs(h - hue)) < 0.02, name
    with pytest.raises(ValueError, match="unknown demo category"):
        draw_example("cat")

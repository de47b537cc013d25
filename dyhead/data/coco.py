"""COCO-format detection data for training and evaluation, read with pycocotools.

Two layouts are recognised under a root folder (`resolve_split`):

    ROOT/val2017/*.jpg  + ROOT/annotations/instances_val2017.json    (COCO 2017)
    ROOT/val/*.jpg      + ROOT/annotations/instances_val.json        (the project's demo data)

Training samples follow the official ATSS training path (detectron2 `DatasetMapper`): crowd boxes
are dropped (COCO's `iscrowd` regions are neither positives nor negatives in ATSS training, which the
official config handles by filtering them out), the image is resized with the shorter side to
`min_size` and the longer capped at `max_size` (the official Pillow resize, `dyhead.preprocess`),
and flipped horizontally with probability 0.5. Batches are normalised and zero-padded to a multiple
of the coarsest stride by `dyhead.preprocess.to_model_input`.

Category ids map to contiguous labels 0..K-1 in increasing id order (detectron2's convention).

Errors are never silent: a missing folder or file, or malformed annotation JSON, raises
`DatasetError` naming what was looked for; an unreadable image met during training is skipped,
counted in `CocoDetection.skipped`, and reported by the trainer at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from dyhead.preprocess import ImageLoadError, load_image, resize_image, to_model_input

__all__ = ["DatasetError", "SplitPaths", "resolve_split", "load_coco", "CocoDetection", "Sample", "Batch",
           "collate"]


class DatasetError(RuntimeError):
    """A dataset that cannot be used as given (missing folders/files, malformed annotations)."""


@dataclass(frozen=True)
class SplitPaths:
    split: str
    image_dir: Path
    annotation_file: Path


def _split_candidates(split: str) -> list[str]:
    """'val' also finds 'val2017' and the other way round (same for train)."""
    names = [split]
    if split.endswith("2017"):
        names.append(split[: -len("2017")])
    else:
        names.append(split + "2017")
    return names


def resolve_split(root: str | Path, split: str = "val") -> SplitPaths:
    """Find the image folder and annotation file of `split` under `root` (COCO 2017 or demo layout)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder")
    looked = []
    for name in _split_candidates(split):
        image_dir = root / name
        ann = root / "annotations" / f"instances_{name}.json"
        looked.append(f"{image_dir}/ + {ann}")
        if image_dir.is_dir() and ann.is_file():
            return SplitPaths(name, image_dir, ann)
    raise DatasetError(
        f"no split {split!r} under {root}: looked for " + " or ".join(looked)
        + " (COCO layout: ROOT/<split>/ images and ROOT/annotations/instances_<split>.json)"
    )


def load_coco(annotation_file: str | Path):
    """A pycocotools `COCO` index of the file, with malformed content reported as `DatasetError`."""
    from pycocotools.coco import COCO

    path = Path(annotation_file)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(f"annotation file {path} not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"annotation file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"annotation file {path}: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"annotation file {path}: missing or non-list '{key}' (COCO instances format)")
    for i, ann in enumerate(data["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not (isinstance(bbox, list) and len(bbox) == 4 and "image_id" in ann and "category_id" in ann):
            raise DatasetError(
                f"annotation file {path}: annotation #{i} needs image_id, category_id and a 4-number bbox, got {ann!r}"
            )
    for i, img in enumerate(data["images"]):
        if not (isinstance(img, dict) and "id" in img and "file_name" in img):
            raise DatasetError(f"annotation file {path}: image #{i} needs id and file_name, got {img!r}")
    for i, cat in enumerate(data["categories"]):
        if not (isinstance(cat, dict) and "id" in cat and "name" in cat):
            raise DatasetError(f"annotation file {path}: category #{i} needs id and name, got {cat!r}")
    if not data["categories"]:
        raise DatasetError(f"annotation file {path}: no categories")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


@dataclass(frozen=True)
class Sample:
    """One resized training image. image: HxWx3 uint8 RGB; boxes: float32 [M, 4] xyxy in the resized
    frame; labels: int64 [M] contiguous; scale: (sy, sx) resized / original."""

    index: int
    image_id: int
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scale: tuple[float, float]


@dataclass(frozen=True)
class Batch:
    images: Tensor  # [N, 3, Hp, Wp] normalised and padded
    image_sizes: list[tuple[int, int]]  # unpadded (h, w) of each image
    boxes: list[Tensor]  # [M_i, 4] xyxy in the input frame
    labels: list[Tensor]  # [M_i] int64
    indices: list[int]


class CocoDetection:
    """A COCO split: contiguous class mapping, resized samples, an optional in-memory cache."""

    def __init__(self, root: str | Path, split: str = "train", *, min_size: int = 800, max_size: int = 1333,
                 cache: bool = False, skip_empty: bool = False) -> None:
        self.paths = resolve_split(root, split)
        self.coco = load_coco(self.paths.annotation_file)
        cats = sorted(self.coco.dataset["categories"], key=lambda c: c["id"])
        self.category_ids: tuple[int, ...] = tuple(int(c["id"]) for c in cats)
        self.class_names: tuple[str, ...] = tuple(str(c["name"]) for c in cats)
        self.label_of_category = {cid: i for i, cid in enumerate(self.category_ids)}
        ids = sorted(self.coco.getImgIds())
        if skip_empty:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns.get(i, []))]
        self.image_ids: list[int] = ids
        self.min_size = min_size
        self.max_size = max_size
        self.cache_enabled = cache
        self._cache: dict[int, Sample] = {}
        #: (file, reason) of every image that could not be read; each is reported, none is silent.
        self.skipped: list[tuple[str, str]] = []
        self._skip_reasons: dict[int, str] = {}

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        info = self.coco.imgs[self.image_ids[index]]
        return self.paths.image_dir / info["file_name"]

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Non-crowd boxes (xyxy, original pixels, float32 [M, 4]) and contiguous labels (int64 [M])."""
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(self.image_ids[index], []):
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w < 1 or h < 1:
                continue  # degenerate boxes carry no training signal (detectron2 filters them too)
            if ann["category_id"] not in self.label_of_category:
                raise DatasetError(
                    f"{self.paths.annotation_file}: annotation {ann.get('id')} has category_id "
                    f"{ann['category_id']} which is not in 'categories'"
                )
            boxes.append((x, y, x + w, y + h))
            labels.append(self.label_of_category[ann["category_id"]])
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)

    def note_skipped(self, index: int, reason: str) -> None:
        """Record an unreadable image once (a loader worker's skips are noted in the main process)."""
        if index not in self._skip_reasons:
            self._skip_reasons[index] = reason
            self.skipped.append((str(self.image_path(index)), reason))

    def skip_reason(self, index: int) -> str:
        return self._skip_reasons.get(index, "")

    def load(self, index: int) -> Optional[Sample]:
        """The resized sample, or None (counted in `skipped`) if the image cannot be read."""
        if index in self._cache:
            return self._cache[index]
        path = self.image_path(index)
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            self.note_skipped(index, str(exc))
            return None
        boxes, labels = self.annotations(index)
        resized = resize_image(image, self.min_size, self.max_size)
        sy = resized.shape[0] / image.shape[0]
        sx = resized.shape[1] / image.shape[1]
        boxes = boxes * np.asarray([sx, sy, sx, sy], np.float32)
        sample = Sample(index, self.image_ids[index], resized, boxes, labels, (sy, sx))
        if self.cache_enabled:
            self._cache[index] = sample
        return sample


def flip_sample(sample: Sample) -> Sample:
    """Horizontal flip of the image and its boxes."""
    width = sample.image.shape[1]
    boxes = sample.boxes.copy()
    boxes[:, [0, 2]] = width - sample.boxes[:, [2, 0]]
    return Sample(sample.index, sample.image_id, np.ascontiguousarray(sample.image[:, ::-1]), boxes,
                  sample.labels, sample.scale)


def collate(samples: Sequence[Sample], flips: Sequence[bool], *, pixel_format: str,
            pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisibility: int) -> Batch:
    """Flip where asked, then normalise and pad into one model input batch."""
    if not samples:
        raise DatasetError("an empty batch: every image of it was unreadable")
    samples = [flip_sample(s) if f else s for s, f in zip(samples, flips)]
    images, sizes = to_model_input([s.image for s in samples], pixel_format, pixel_mean, pixel_std,
                                   size_divisibility)
    return Batch(
        images=images,
        image_sizes=sizes,
        boxes=[torch.from_numpy(s.boxes) for s in samples],
        labels=[torch.from_numpy(s.labels) for s in samples],
        indices=[s.index for s in samples],
    )

"""Where the analyses get their model and data: the bundled demo model and the generated demo data by
default, any checkpoint file and any COCO-format dataset when given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


from dyhead.data.coco import DatasetError, SplitPaths, load_coco, resolve_split

__all__ = [
    "REPO_ROOT",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_DATA_ROOT",
    "DEMO_SEED",
    "DEMO_VAL_IMAGES",
    "ImageRecord",
    "SourceError",
    "load_model",
    "default_data_root",
    "dataset_root",
    "resolve_dataset",
    "dataset_images",
    "default_image",
    "SAMPLES_DIR",
    "DEMO_MODEL_CARD",
    "is_demo_model",
    "knockout_constants",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The demo model trained by this project on its own demo data (see checkpoints/).
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "demo_dyhead.pt"
#: The demo model's card in numbers: size, sha256, configuration, evaluation.
DEMO_MODEL_CARD = REPO_ROOT / "checkpoints" / "demo_dyhead.json"
#: A few sample images shipped with the demo model (never part of its train/val data).
SAMPLES_DIR = REPO_ROOT / "checkpoints" / "samples"
#: Generated on demand; git-ignored.
DEFAULT_DATA_ROOT = REPO_ROOT / "data" / "demo"
#: The demo data's generator settings (`python -m dyhead.data.demo` defaults: seed 0, 300 val images,
#: 384 px), with which the bundled model was trained and evaluated.
DEMO_SEED = 0
DEMO_VAL_IMAGES = 300


class SourceError(RuntimeError):
    """A model or dataset that cannot be found or used; the message says what was looked for."""


def load_model(checkpoint: Optional[str | Path] = None, device: str = "auto", coarser_branch=None):
    """(DyHeadDetector in eval mode, info dict) from a checkpoint file (this project's, the official
    detectron2 release, ...; the layout is detected by `dyhead.checkpoint.load_detector`).

    checkpoint None = the bundled demo model. device: "auto" (CUDA when present), "cpu", "cuda[:i]".
    coarser_branch: a `CoarserBranchMode` (or its value) to override the file's own semantics.
    """
    from dyhead.checkpoint import load_detector
    from dyhead.device import resolve_device

    path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    if not path.is_file():
        hint = (
            " (the bundled demo model is missing: train it with `python -m dyhead.train --preset demo_cpu` "
            "or pass --checkpoint)" if checkpoint is None else ""
        )
        raise SourceError(f"checkpoint {path} not found{hint}")
    return load_detector(path, device=resolve_device(device), coarser_branch=coarser_branch)


def knockout_constants(model, checkpoint: Optional[str | Path] = None, data: Optional[str | Path] = None,
                       split: str = "train", *, recalibrate: bool = False, progress: bool = True, **kwargs):
    """The calibrated knock-out constants of `checkpoint` (None = the demo model): the file saved
    beside it when its sha256 matches (the demo model's ships with it, from the demo train split),
    else one calibration pass over `data`/`split`, saved for next time
    (`dyhead.knockout.load_or_calibrate`)."""
    from dyhead.knockout import load_or_calibrate

    path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    return load_or_calibrate(model, path, data, split, recalibrate=recalibrate, progress=progress, **kwargs)


def is_demo_model(path: str | Path) -> bool:
    """True when `path` is the bundled demo model: the file at `DEFAULT_CHECKPOINT`, or a copy of it
    elsewhere (the size and sha256 that `DEMO_MODEL_CARD` records). Cheap for other files: only a
    file of the demo model's size is hashed, and each file version once."""
    path = Path(path)
    try:
        if path.resolve() == DEFAULT_CHECKPOINT.resolve():
            return True
        st = path.stat()
    except OSError:
        return False
    return _is_demo_copy(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _is_demo_copy(path: str, size: int, mtime_ns: int) -> bool:
    import hashlib
    import json

    try:
        card = json.loads(DEMO_MODEL_CARD.read_text())
        if size != int(card["size_bytes"]):
            return False
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() == card["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def default_data_root(split: str = "val", root: Optional[Path] = None) -> Path:
    """The demo dataset's root, generating `split` (deterministically, seed `DEMO_SEED`) if missing.

    Only the val split is generated on demand (300 images, a few seconds); the other files under
    the root are left as they are.
    """
    from dyhead.data import demo

    root = Path(root) if root is not None else DEFAULT_DATA_ROOT
    try:
        resolve_split(root, split)
        return root
    except DatasetError:
        pass
    if split != "val":
        raise SourceError(f"the demo data split {split!r} is missing under {root}; generate it with "
                          f"`python -m dyhead.data.demo --out {root}`")
    demo.generate_split(root, "val", DEMO_VAL_IMAGES, seed=DEMO_SEED)
    return root


def dataset_root(root: Optional[str | Path], split: str = "val") -> Path:
    """`root` checked to hold `split` (None = the demo data, generated if missing)."""
    if root is None:
        return default_data_root(split)
    resolve_dataset(root, split)
    return Path(root)


def resolve_dataset(root: Optional[str | Path], split: str = "val") -> SplitPaths:
    """Image folder and annotation file of `split` under `root` (None = the demo data, generated
    if missing). Raises `SourceError` naming what is missing."""
    if root is None:
        root = default_data_root(split)
    try:
        return resolve_split(root, split)
    except DatasetError as exc:
        raise SourceError(str(exc)) from None


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    file_name: str
    path: Path


def dataset_images(root: Optional[str | Path], split: str = "val",
                   max_images: Optional[int] = None) -> list[ImageRecord]:
    """The split's images in increasing image-id order (the first `max_images` when given), the order
    `dyhead.evaluate.evaluate_detector` uses."""
    paths = resolve_dataset(root, split)
    try:
        coco = load_coco(paths.annotation_file)
    except DatasetError as exc:
        raise SourceError(str(exc)) from None
    ids = sorted(coco.getImgIds())
    if max_images is not None:
        ids = ids[:max_images]
    if not ids:
        raise SourceError(f"{paths.annotation_file} lists no images")
    return [ImageRecord(int(i), str(coco.imgs[i]["file_name"]), paths.image_dir / coco.imgs[i]["file_name"])
            for i in ids]


def default_image(data_root: Optional[str | Path] = None, split: str = "val") -> Path:
    """The image an analysis of one image uses when none is given: the first bundled sample
    (`SAMPLES_DIR`) for the demo data, else the first image (by id) of the dataset."""
    if data_root is None:
        samples = sorted(SAMPLES_DIR.glob("*.jpg")) if SAMPLES_DIR.is_dir() else []
        if samples:
            return samples[0]
    return dataset_images(data_root, split, 1)[0].path

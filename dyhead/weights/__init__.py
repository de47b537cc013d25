"""Weights files: one module per format, one place for each key map, one typed `LoadInfo`.

* `own`       — this project's format (`save_checkpoint`), config included;
* `official`  — the official DyHead releases on detectron2 (key maps of the tower and the detector);
* `mmdet`     — the DyHead tower of an mmdetection checkpoint;
* `io`        — reading files with ``torch.load(weights_only=True)`` only, and the checked transfer
  of tensors (every key and shape checked; a missing or unexpected key is named).

`load_detector(path)` detects the kind of file from its keys, builds the model with the overrides
applied to its configuration first, and returns ``(model, LoadInfo)``.
"""

from __future__ import annotations

from torch import Tensor

from .errors import (CheckpointError, CheckpointNotFoundError, MissingKeysError, NotATorchFileError,
                     ShapeMismatchError, UnexpectedKeysError, UnknownLayoutError, UnsafeCheckpointError)
from .info import KINDS, LoadInfo
from .io import PathLike, is_state_dict, read_checkpoint
from .mmdet import is_mmdet, load_mmdet_tower, mmdet_tower_key_map
from .official import (detector_from_official_state_dict, infer_official_config, is_official, official_key_map,
                       official_tower_key_map)
from .own import FORMAT_NAME, FORMAT_VERSION, is_own, load_own, save_checkpoint

__all__ = [
    "CheckpointError", "CheckpointNotFoundError", "NotATorchFileError", "UnsafeCheckpointError",
    "UnknownLayoutError", "MissingKeysError", "UnexpectedKeysError", "ShapeMismatchError",
    "KINDS", "LoadInfo", "FORMAT_NAME", "FORMAT_VERSION",
    "read_checkpoint", "detect_layout", "save_checkpoint", "load_detector", "load_tower_state",
    "official_key_map", "official_tower_key_map", "infer_official_config", "detector_from_official_state_dict",
    "mmdet_tower_key_map",
]


def detect_layout(obj: object) -> tuple[str, dict]:
    """What a loaded checkpoint object is: ("own" | "detectron2" | "mmdet", own dict or tensors)."""
    if is_own(obj):
        return "own", obj
    state = obj
    if isinstance(obj, dict) and not is_state_dict(obj):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                state = obj[key]
                break
    if isinstance(state, dict):
        tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
        if is_official(tensors):
            return "detectron2", tensors
        if is_mmdet(tensors):
            return "mmdet", tensors
    raise UnknownLayoutError(_describe_unknown(obj))


def _describe_unknown(obj: object) -> str:
    if isinstance(obj, dict):
        keys = list(obj.keys())[:6]
        return (
            "unknown checkpoint layout: expected this project's format, an official DyHead detectron2 file "
            f"({{'model': state_dict}} with 'backbone.dyhead_tower.*' keys) or an mmdetection DyHead; found a dict "
            f"with keys {keys}{' ...' if len(obj) > 6 else ''}"
        )
    return f"unknown checkpoint layout: expected a dict, found {type(obj).__name__}"


def load_detector(path: PathLike, device="cpu", coarser_branch=None, **overrides):
    """Load a detector from any supported file; the layout is detected. -> (DyHeadDetector in eval
    mode on `device`, `LoadInfo`).

    coarser_branch: None = the file's own semantics (official for detectron2 files). `overrides`
    replace `DetectorConfig` fields (e.g. min_size=320) before the model is built, for every format."""
    origin = str(path)
    kind, obj = detect_layout(read_checkpoint(path))
    if kind == "own":
        model, info = load_own(obj, origin, coarser_branch, **overrides)
    elif kind == "detectron2":
        model, info = detector_from_official_state_dict(obj, origin, coarser_branch, **overrides)
    else:
        raise UnknownLayoutError(
            f"{origin}: an mmdetection DyHead checkpoint; only its tower can be imported (use load_tower_state)"
        )
    return model.to(device).eval(), info


def load_tower_state(path: PathLike, coarser_branch=None):
    """The DyHead tower of a checkpoint: mmdetection, official detectron2 or own. -> (DyHeadTower, LoadInfo)."""
    origin = str(path)
    kind, obj = detect_layout(read_checkpoint(path))
    if kind == "mmdet":
        return load_mmdet_tower(obj, origin, coarser_branch)
    model, info = load_detector(path, coarser_branch=coarser_branch)
    return model.tower, info

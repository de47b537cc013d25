"""This project's own file format.

``{"format": "dyhead-explorer", "version": 1, "config": DetectorConfig.to_dict(), "state_dict": ...,
"meta": {...}}``, saved by `save_checkpoint` and loadable with ``torch.load(weights_only=True)``: the
metadata may hold only plain values (str/int/float/bool/None/list/dict).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .errors import UnknownLayoutError
from .info import LoadInfo
from .io import PathLike, load_mapped
from .overrides import apply_overrides

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "save_checkpoint", "load_own", "is_own"]

FORMAT_NAME = "dyhead-explorer"
FORMAT_VERSION = 1


def is_own(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT_NAME


def _check_plain(value: object, where: str) -> None:
    # exact types: subclasses (numpy floats, torch's TorchVersion str) would need code to unpickle
    if value is None or type(value) in (str, int, float, bool):
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if type(value) is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise ValueError(f"{where}: keys must be strings, got {k!r}")
            _check_plain(v, f"{where}.{k}")
        return
    raise ValueError(f"{where}: only str/int/float/bool/None/list/dict can be stored, got {type(value).__name__}")


def save_checkpoint(path: PathLike, model: nn.Module, extra_meta: Optional[dict] = None) -> Path:
    """Save a `DyHeadDetector` in this project's format (loadable with weights_only=True)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError("save_checkpoint expects a DyHeadDetector (a module with a DetectorConfig `config`)")
    meta = {
        "saved_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__),
    }
    meta.update(extra_meta or {})
    _check_plain(meta, "meta")
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_own(obj: dict, origin: str, coarser_branch=None, **overrides):
    from ..detector import DetectorConfig, DyHeadDetector

    version = obj.get("version")
    if version != FORMAT_VERSION:
        raise UnknownLayoutError(f"{origin}: {FORMAT_NAME} format version {version!r} is not supported (expected {FORMAT_VERSION})")
    for key in ("config", "state_dict"):
        if not isinstance(obj.get(key), dict):
            raise UnknownLayoutError(f"{origin}: {FORMAT_NAME} file without a '{key}' dict")
    try:
        cfg = DetectorConfig.from_dict(obj["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise UnknownLayoutError(f"{origin}: invalid saved config ({exc})") from None
    cfg = apply_overrides(cfg, coarser_branch, overrides, origin)
    notes = []
    if cfg.backbone.weights_path is not None:
        # The trained weights are in the file; the ImageNet file used at training start is not needed.
        notes.append(f"backbone initialised from {cfg.backbone.weights_path} at training time; not read again")
        cfg = cfg.replace(backbone=dataclasses.replace(cfg.backbone, weights_path=None))
    model = DyHeadDetector(cfg)
    state = obj["state_dict"]
    load_mapped(model, state, {k: k for k in model.state_dict()}, origin)
    return model, LoadInfo("own", origin, cfg, dict(obj.get("meta") or {}), tuple(notes))

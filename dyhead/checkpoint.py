"""Saving and loading detectors: this project's own format, the official detectron2 release, and the
DyHead tower of an mmdetection checkpoint.

Every file is read with ``torch.load(..., weights_only=True)``. A file that needs arbitrary code to
unpickle is refused, never loaded unsafely.

* Own format: ``{"format": "dyhead-explorer", "version": 1, "config": DetectorConfig.to_dict(),
  "state_dict": ..., "meta": {...}}``.
* Official release (microsoft/DynamicHead on detectron2): ``{"model": state_dict, ...}`` or a bare state
  dict with the keys of ``conformance/official_atss_r50_dyhead_keys.json``. Widths (stem, bottlenecks,
  FPN, tower, blocks, classes) are read from the shapes, so the reduced conformance model loads too.
  detectron2 <= v0.4 files also hold ``anchor_generator.cell_anchors.*`` buffers: ignored with a note.
* mmdetection ``DyHead`` neck (``.../dyhead_blocks.<b>.spatial_conv_{high,mid,low}`` ...): the tower
  only. mmdetection's "high" is the coarser neighbour, "mid" the same level, "low" the finer one
  (stride 2); its deformable convs have no bias (GroupNorm follows), so ours get zero bias; its
  DyReLU 1x1 convs become our Linear layers. mmdetection crops the offsets for the coarser branch,
  so the tower is built with ``CoarserBranchMode.CROP`` unless asked otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import pickle
import re
import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from .backbone import BackboneConfig
from .coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from .config import CoarserBranchMode, DyHeadConfig

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "NotATorchFileError",
    "UnsafeCheckpointError",
    "UnknownLayoutError",
    "MissingKeysError",
    "UnexpectedKeysError",
    "ShapeMismatchError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "save_checkpoint",
    "read_checkpoint",
    "detect_layout",
    "official_key_map",
    "infer_official_config",
    "detector_from_official_state_dict",
    "load_detector",
    "mmdet_tower_key_map",
    "load_tower_state",
]

FORMAT_NAME = "dyhead-explorer"
FORMAT_VERSION = 1

PathLike = Union[str, Path]


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class CheckpointNotFoundError(CheckpointError):
    pass


class NotATorchFileError(CheckpointError):
    pass


class UnsafeCheckpointError(CheckpointError):
    """The file needs arbitrary code to unpickle (weights_only=True refused it)."""


class UnknownLayoutError(CheckpointError):
    pass


class MissingKeysError(CheckpointError):
    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = keys


class UnexpectedKeysError(CheckpointError):
    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = keys


class ShapeMismatchError(CheckpointError):
    def __init__(self, message: str, mismatches: list[tuple[str, tuple, tuple]]):
        super().__init__(message)
        self.mismatches = mismatches


# ----------------------------------------------------------------------------------------------------
# Reading files


def read_checkpoint(path: PathLike) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint path is not a file: {path}")
    if path.stat().st_size == 0:
        raise NotATorchFileError(f"{path}: empty file (0 bytes), not a torch checkpoint")
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive; the legacy format and pickles of protocol >= 2 start with 0x80.
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")):
        raise NotATorchFileError(f"{path}: not a torch checkpoint (neither a torch zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol chatter of plain pickles
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            reason = _weights_only_reason(text)
            raise UnsafeCheckpointError(
                f"{path}: refused: unpickling this file needs arbitrary code, which torch.load(weights_only=True) "
                f"does not run, and this program never loads checkpoints unsafely. Re-save its tensors as a plain "
                f"state dict from a trusted environment. {reason}".strip()
            ) from None
        raise NotATorchFileError(f"{path}: not a torch checkpoint ({text.splitlines()[0] if text else 'unpickling failed'})") from None
    except (RuntimeError, KeyError, EOFError, ValueError, OSError, AttributeError, IndexError, TypeError) as exc:
        raise NotATorchFileError(
            f"{path}: not a torch checkpoint file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


def _weights_only_reason(text: str) -> str:
    """The one informative part of torch's weights_only refusal, e.g. 'Unsupported global: ...'."""
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[-1].strip() or next((x for x in lines[i + 1:] if x), "")
            return f"(torch: {rest.split('. Please use')[0]})" if rest else ""
    return ""


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def detect_layout(obj: object) -> tuple[str, dict]:
    """What a loaded checkpoint object is: ("own" | "detectron2" | "mmdet", tensors or own dict)."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT_NAME:
        return "own", obj
    state = obj
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                state = obj[key]
                break
    if isinstance(state, dict):
        tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
        if any(k.startswith("backbone.dyhead_tower.") or k.startswith("backbone.backbone.bottom_up.") for k in tensors):
            return "detectron2", tensors
        if any(".dyhead_blocks." in k or k.startswith("dyhead_blocks.") for k in tensors):
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


# ----------------------------------------------------------------------------------------------------
# Checked state-dict transfer


def _load_mapped(
    model: nn.Module,
    source: dict[str, Tensor],
    key_map: dict[str, str],
    origin: str,
    ignore: Callable[[str], bool] = lambda k: False,
    transforms: Optional[dict[str, Callable[[Tensor], Tensor]]] = None,
    fill: Optional[dict[str, Callable[[Tensor], Tensor]]] = None,
) -> None:
    """Copy `source[key_map[ours]]` into each of `model`'s state entries, checking every key and shape.

    transforms: per our key, applied to the source tensor first (e.g. 1x1 conv -> Linear).
    fill: our keys with no source tensor, made from our own tensor (e.g. a zero bias).
    """
    transforms = transforms or {}
    fill = fill or {}
    ours = model.state_dict()
    unmapped = [k for k in ours if k not in key_map and k not in fill]
    if unmapped:  # a bug in a key map, not in the file
        raise RuntimeError(f"no source key for model entries {unmapped[:5]}")
    wanted = {key_map[k] for k in ours if k in key_map}
    missing = [key_map[k] for k in ours if k in key_map and key_map[k] not in source]
    if missing:
        raise MissingKeysError(
            f"{origin}: {len(missing)} expected key(s) missing, e.g. {missing[:5]}", missing
        )
    unexpected = [k for k in source if k not in wanted and not ignore(k)]
    if unexpected:
        raise UnexpectedKeysError(
            f"{origin}: {len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}", unexpected
        )
    new_state, mismatches = {}, []
    for k, target in ours.items():
        if k in fill:
            new_state[k] = fill[k](target)
            continue
        value = source[key_map[k]]
        if k in transforms and value.dim() == 4 and target.dim() == 2:
            value = transforms[k](value)
        if tuple(value.shape) != tuple(target.shape):
            mismatches.append((key_map[k], tuple(target.shape), tuple(value.shape)))
            continue
        new_state[k] = value.detach().to(dtype=target.dtype)
    if mismatches:
        detail = "; ".join(f"{name}: expected {list(e)}, found {list(f)}" for name, e, f in mismatches[:5])
        raise ShapeMismatchError(f"{origin}: {len(mismatches)} tensor(s) with the wrong shape: {detail}", mismatches)
    model.load_state_dict(new_state, strict=True)


# ----------------------------------------------------------------------------------------------------
# Own format


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


def _load_own(obj: dict, origin: str, coarser_branch):
    from .detector import DetectorConfig, DyHeadDetector

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
    if coarser_branch is not None:
        cfg = cfg.replace(tower=_replace_tower(cfg.tower, coarser_branch=CoarserBranchMode(coarser_branch)))
    notes = []
    if cfg.backbone.weights_path is not None:
        # The trained weights are in the file; the ImageNet file used at training start is not needed.
        notes.append(f"backbone initialised from {cfg.backbone.weights_path} at training time; not read again")
        cfg = cfg.replace(backbone=dataclasses.replace(cfg.backbone, weights_path=None))
    model = DyHeadDetector(cfg)
    state = obj["state_dict"]
    _load_mapped(model, state, {k: k for k in model.state_dict()}, origin)
    info = {"kind": "own", "config": cfg.to_dict(), "meta": dict(obj.get("meta") or {}), "notes": notes}
    return model, info


def _replace_tower(tower: DyHeadConfig, **changes) -> DyHeadConfig:
    d = tower.to_dict()
    d.update({k: (v.value if isinstance(v, CoarserBranchMode) else v) for k, v in changes.items()})
    return DyHeadConfig.from_dict(d)


# ----------------------------------------------------------------------------------------------------
# Official detectron2 release

_D2_BOTTOM_UP = "backbone.backbone.bottom_up."
_D2_TOWER = "backbone.dyhead_tower."
_MSRA_DEPTH_BY_RES4 = {6: 50, 23: 101, 36: 152}


def _is_legacy_anchor_key(key: str) -> bool:
    return key.startswith("anchor_generator.cell_anchors.")


def official_key_map(model: nn.Module) -> dict[str, str]:
    """{our state-dict key: official detectron2 key} for a detector with the official layout
    (resnet_msra backbone, head without conv towers)."""
    from .tower import official_tower_key_map

    cfg = model.config
    if cfg.backbone.kind != "resnet_msra" or cfg.head_num_convs != 0:
        raise ValueError("only detectors with a resnet_msra backbone and no head towers have an official layout")
    tower_map = official_tower_key_map(cfg.tower.num_blocks)
    mapping = {}
    for k in model.state_dict():
        if k.startswith("backbone.body."):
            mapping[k] = _D2_BOTTOM_UP + k[len("backbone.body.") :]
        elif k.startswith("backbone.fpn."):
            m = re.fullmatch(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d)\.0\.(weight|bias)", k)
            if m:
                kind = "fpn_lateral" if m.group(1) == "inner_blocks" else "fpn_output"
                mapping[k] = f"backbone.backbone.{kind}{int(m.group(2)) + 3}.{m.group(3)}"
            else:
                mapping[k] = "backbone.backbone.top_block." + k[len("backbone.fpn.extra_blocks.") :]
        elif k.startswith("tower."):
            mapping[k] = _D2_TOWER + tower_map[k[len("tower.") :]]
        elif k.startswith("head."):
            mapping[k] = k
        else:
            raise RuntimeError(f"no official name for {k}")
    return mapping


def _require(state: dict, keys: list[str], origin: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise MissingKeysError(f"{origin}: {len(missing)} expected key(s) missing, e.g. {missing[:5]}", missing)


def infer_official_config(state: dict[str, Tensor], origin: str = "checkpoint", **overrides):
    """A `DetectorConfig` whose widths match an official ATSS + DyHead state dict."""
    from .detector import DetectorConfig

    p = _D2_BOTTOM_UP
    _require(
        state,
        [p + "stem.conv1.weight", p + "res2.0.conv1.weight", p + "res2.0.conv3.weight",
         "backbone.backbone.fpn_lateral3.weight", "head.cls_logits.weight"],
        origin,
    )
    res4_blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(p) + r"res4\.(\d+)\.", k))}
    depth = _MSRA_DEPTH_BY_RES4.get(len(res4_blocks))
    if depth is None:
        raise UnknownLayoutError(f"{origin}: a ResNet with {len(res4_blocks)} res4 blocks is not ResNet-50/101/152")
    fpn_channels = int(state["backbone.backbone.fpn_lateral3.weight"].shape[0])
    blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(_D2_TOWER) + r"(\d+)\.", k))}
    num_blocks = len(blocks)
    if blocks != set(range(num_blocks)):
        raise UnknownLayoutError(f"{origin}: tower block indices {sorted(blocks)} are not 0..{num_blocks - 1}")
    reduction = 4
    if num_blocks:
        _require(state, [_D2_TOWER + "0.DyConv.1.conv.weight", _D2_TOWER + "0.relu.fc.0.weight"], origin)
        channels = int(state[_D2_TOWER + "0.DyConv.1.conv.weight"].shape[0])
        hidden = int(state[_D2_TOWER + "0.relu.fc.0.weight"].shape[0])
        reduction = max(1, channels // max(1, hidden))
    else:
        channels = fpn_channels
    num_classes = int(state["head.cls_logits.weight"].shape[0])
    if num_classes == 80:
        names, ids = COCO_CLASS_NAMES, COCO_CATEGORY_IDS
    else:
        names = tuple(f"class_{i}" for i in range(num_classes))
        ids = tuple(range(1, num_classes + 1))
    fields = dict(
        backbone=BackboneConfig(
            kind="resnet_msra",
            depth=depth,
            stem_out=int(state[p + "stem.conv1.weight"].shape[0]),
            base_width=int(state[p + "res2.0.conv1.weight"].shape[0]),
            res2_out=int(state[p + "res2.0.conv3.weight"].shape[0]),
        ),
        fpn_channels=fpn_channels,
        tower=DyHeadConfig(num_blocks=num_blocks, channels=channels, dyrelu_reduction=reduction),
        num_classes=num_classes,
        class_names=names,
        category_ids=ids,
    )
    fields.update(overrides)
    try:
        return DetectorConfig(**fields)
    except ValueError as exc:
        raise UnknownLayoutError(f"{origin}: the tensor shapes do not describe a valid detector ({exc})") from None


def detector_from_official_state_dict(
    state: dict[str, Tensor], origin: str = "checkpoint", coarser_branch=None, **overrides
):
    """Build a `DyHeadDetector` from an official ATSS + DyHead state dict; every key is used
    (legacy anchor buffers excepted). Returns (model, info)."""
    from .detector import DyHeadDetector

    cfg = infer_official_config(state, origin, **overrides)
    if coarser_branch is not None:
        cfg = cfg.replace(tower=_replace_tower(cfg.tower, coarser_branch=CoarserBranchMode(coarser_branch)))
    model = DyHeadDetector(cfg)
    _load_mapped(model, state, official_key_map(model), origin, ignore=_is_legacy_anchor_key)
    notes = []
    legacy = sorted(k for k in state if _is_legacy_anchor_key(k))
    if legacy:
        notes.append(
            f"ignored {len(legacy)} anchor buffer(s) of detectron2 <= v0.4 ({', '.join(legacy)}): anchors are recomputed"
        )
    info = {"kind": "detectron2", "config": cfg.to_dict(), "meta": {}, "notes": notes}
    return model, info


# ----------------------------------------------------------------------------------------------------
# mmdetection DyHead tower

#: our block sub-module -> mmdetection DyHeadBlock sub-module.
_MMDET_NAMES = {
    "spatial_offsets": "spatial_conv_offset",
    "from_coarser.conv": "spatial_conv_high.conv",
    "from_coarser.norm": "spatial_conv_high.norm",
    "same_level.conv": "spatial_conv_mid.conv",
    "same_level.norm": "spatial_conv_mid.norm",
    "from_finer.conv": "spatial_conv_low.conv",
    "from_finer.norm": "spatial_conv_low.norm",
    "scale_attention.fc": "scale_attn_module.1",
    "task_attention.fc1": "task_attn_module.conv1.conv",
    "task_attention.fc2": "task_attn_module.conv2.conv",
}
_MMDET_NO_BIAS = ("from_coarser.conv", "same_level.conv", "from_finer.conv")


def mmdet_tower_key_map(num_blocks: int, prefix: str = "") -> dict[str, str]:
    """{our tower key: mmdetection key}, e.g. 'blocks.0.from_coarser.norm.weight' ->
    '<prefix>dyhead_blocks.0.spatial_conv_high.norm.weight'. Deformable-conv biases have no source."""
    mapping = {}
    for b in range(num_blocks):
        for ours, theirs in _MMDET_NAMES.items():
            for param in ("weight", "bias"):
                if ours in _MMDET_NO_BIAS and param == "bias":
                    continue
                mapping[f"blocks.{b}.{ours}.{param}"] = f"{prefix}dyhead_blocks.{b}.{theirs}.{param}"
    return mapping


def _load_mmdet_tower(state: dict[str, Tensor], origin: str, coarser_branch=None):
    from .tower import DyHeadTower

    prefixes = {m.group(1) for k in state if (m := re.match(r"(.*?)dyhead_blocks\.\d+\.", k))}
    if len(prefixes) != 1:
        raise UnknownLayoutError(f"{origin}: expected one mmdetection DyHead, found prefixes {sorted(prefixes)}")
    prefix = prefixes.pop()
    blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"dyhead_blocks\.(\d+)\.", k))}
    num_blocks = len(blocks)
    first = f"{prefix}dyhead_blocks.0."
    _require(state, [first + "spatial_conv_mid.conv.weight", first + "task_attn_module.conv1.conv.weight"], origin)
    channels = int(state[first + "spatial_conv_mid.conv.weight"].shape[0])
    hidden = int(state[first + "task_attn_module.conv1.conv.weight"].shape[0])
    mode = CoarserBranchMode(coarser_branch) if coarser_branch is not None else CoarserBranchMode.CROP
    cfg = DyHeadConfig(num_blocks=num_blocks, channels=channels, dyrelu_reduction=max(1, channels // hidden), coarser_branch=mode)
    tower = DyHeadTower(cfg)
    key_map = mmdet_tower_key_map(num_blocks, prefix)
    fill = {
        f"blocks.{b}.{name}.bias": (lambda t: torch.zeros_like(t))
        for b in range(num_blocks)
        for name in _MMDET_NO_BIAS
    }
    linear = {k: (lambda v: v.flatten(1)) for k in key_map if ".task_attention." in k and k.endswith("weight")}
    in_tower = lambda k: k.startswith(prefix + "dyhead_blocks.")  # noqa: E731
    tower_state = {k: v for k, v in state.items() if in_tower(k)}
    _load_mapped(tower, tower_state, key_map, origin, transforms=linear, fill=fill)
    others = len(state) - len(tower_state)
    info = {
        "kind": "mmdet",
        "config": cfg.to_dict(),
        "prefix": prefix,
        "notes": [
            "mmdetection's deformable convs have no bias (GroupNorm follows): biases set to 0",
            f"coarser branch mode: {mode.value} (mmdetection crops the offsets)",
        ]
        + ([f"{others} key(s) outside the DyHead tower were not used"] if others else []),
    }
    return tower, info


def load_tower_state(path: PathLike, coarser_branch=None):
    """The DyHead tower of a checkpoint: mmdetection, official detectron2 or own. -> (DyHeadTower, info)."""
    origin = str(path)
    kind, obj = detect_layout(read_checkpoint(path))
    if kind == "mmdet":
        return _load_mmdet_tower(obj, origin, coarser_branch)
    model, info = load_detector(path, coarser_branch=coarser_branch)
    return model.tower, info


# ----------------------------------------------------------------------------------------------------
# Entry point


def load_detector(path: PathLike, device="cpu", coarser_branch=None, **overrides):
    """Load a detector from any supported file; the layout is detected. -> (DyHeadDetector in eval
    mode on `device`, info dict with "kind", "config", "meta", "notes").

    coarser_branch: None = the file's own semantics (official for detectron2 files). `overrides`
    replace `DetectorConfig` fields of an official file (e.g. min_size=320)."""
    origin = str(path)
    kind, obj = detect_layout(read_checkpoint(path))
    if kind == "own":
        model, info = _load_own(obj, origin, coarser_branch)
        if overrides:
            model.config = model.config.replace(**overrides)
            info["config"] = model.config.to_dict()
    elif kind == "detectron2":
        model, info = detector_from_official_state_dict(obj, origin, coarser_branch, **overrides)
    else:
        raise UnknownLayoutError(
            f"{origin}: an mmdetection DyHead checkpoint; only its tower can be imported (use load_tower_state)"
        )
    info["path"] = origin
    return model.to(device).eval(), info

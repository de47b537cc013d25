"""Starting a training run from existing weights (``--init``): ImageNet backbones or a whole detector.

    source = read_init_source("R-50.pkl")            # what the file holds (read safely, once)
    config = init_config(source, config)             # the architecture the file implies
    model = build_detector(config)
    report = initialise(model, source)               # checked transfer; report.summary() says what happened

Kinds of file (`InitSource.kind`):

* ``"torchvision_resnet"``, ``"msra_pickle"``, ``"swin_imagenet"`` — ImageNet backbones
  (`dyhead.weights.backbones`). The backbone of the detector becomes the file's (kind, depth and
  widths from the shapes, the file's input convention); FPN, tower and head keep their fresh init.
* ``"detector"`` — any DyHead detector checkpoint `load_detector` reads (this project's own, the
  official releases). The file's architecture is kept and the class list becomes the dataset's; when
  the class list differs (names or ids), the classification predictor (every tensor whose shape
  depends on the number of classes) is re-initialised with the head's own init (the prior-probability
  bias -log((1 - 0.01) / 0.01)); everything else is loaded, shape by shape.

Nothing is silent: `InitReport` names what was loaded, re-initialised and left out of the file.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from .backbones import (is_msra_pickle, is_swin_imagenet, is_torchvision_resnet, msra_pickle_config,
                        msra_pickle_fill, msra_pickle_key_map, swin_imagenet_config, swin_imagenet_key_map,
                        torchvision_resnet_config, torchvision_resnet_key_map)
from .errors import CheckpointError, ShapeMismatchError, UnknownLayoutError
from .io import PathLike, is_state_dict, load_mapped, read_checkpoint
from .pickle_safe import numpy_pickle_tensors

__all__ = ["INIT_KINDS", "InitSource", "InitReport", "read_init_source", "init_config", "initialise",
           "build_initialised", "class_dependent_keys"]

INIT_KINDS = ("torchvision_resnet", "msra_pickle", "swin_imagenet", "detector")
_DESCRIPTION = {
    "torchvision_resnet": "torchvision ResNet ImageNet state dict",
    "msra_pickle": "detectron2 MSRA ResNet pickle, read as numpy arrays only",
    "swin_imagenet": "Swin Transformer ImageNet weights",
    "detector": "DyHead detector checkpoint",
}
_BODY = "backbone.body."


@dataclass(frozen=True)
class InitSource:
    """kind: one of `INIT_KINDS`. state: the file's tensors (the file's names for backbones, ours for
    a detector). backbone: the backbone the file describes; detector: its `DetectorConfig` (detector
    files only). file_kind: `LoadInfo.kind` of a detector file ("own" / "detectron2")."""

    kind: str
    path: str
    state: dict = field(repr=False)
    backbone: object = None
    detector: object = None
    file_kind: str = ""


@dataclass(frozen=True)
class InitReport:
    """loaded / reinitialised: our state-dict keys; left_out: keys of the file that were not used."""

    kind: str
    path: str
    loaded: tuple[str, ...]
    reinitialised: tuple[str, ...]
    left_out: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        lines = [f"init from {self.path} ({_DESCRIPTION[self.kind]})"]
        lines += [f"  {n}" for n in self.notes]
        lines.append(f"  loaded {len(self.loaded)} tensors: {_grouped(self.loaded)}")
        lines.append(f"  re-initialised {len(self.reinitialised)}: {_grouped(self.reinitialised) or '-'}")
        lines.append(f"  left out of the file {len(self.left_out)}: {_grouped(self.left_out) or '-'}")
        return "\n".join(lines)


def _grouped(keys: tuple[str, ...], limit: int = 8) -> str:
    """The keys themselves when few, else counts per two-part prefix (``tower.blocks (60)``)."""
    if len(keys) <= limit:
        return ", ".join(keys)
    counts = Counter(".".join(k.split(".")[:2]) if "." in k else k.split("_")[0] for k in keys)
    return ", ".join(f"{prefix}.* ({n})" for prefix, n in counts.items())


# ----------------------------------------------------------------------------------------------------


def read_init_source(path: PathLike) -> InitSource:
    """Read an init file safely (``torch.load(weights_only=True)``; ``.pkl`` with the numpy-only
    unpickler) and tell what it holds."""
    from . import detect_layout, load_detector

    origin = str(path)
    if Path(path).suffix == ".pkl":
        state = numpy_pickle_tensors(path)
        if is_msra_pickle(state):
            return InitSource("msra_pickle", origin, state, backbone=msra_pickle_config(state, origin))
        raise UnknownLayoutError(f"{origin}: a numpy pickle that is not an MSRA ResNet (no conv1_w / res2_0_branch2a_w); "
                                 f"keys start {sorted(state)[:5]}")
    obj = read_checkpoint(path)
    try:
        detect_layout(obj)
    except UnknownLayoutError:
        pass
    else:
        model, info = load_detector(path)
        return InitSource("detector", origin, model.state_dict(), detector=info.config, file_kind=info.kind)
    state = obj
    if isinstance(obj, dict) and not is_state_dict(obj):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if isinstance(state, dict):
        state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
        if is_torchvision_resnet(state):
            return InitSource("torchvision_resnet", origin, state, backbone=torchvision_resnet_config(state, origin))
        if is_swin_imagenet(state):
            return InitSource("swin_imagenet", origin, state, backbone=swin_imagenet_config(state, origin))
    raise UnknownLayoutError(
        f"{origin}: not an init file this program reads: expected a DyHead detector checkpoint, a torchvision "
        "ResNet state dict, detectron2's MSRA R-*.pkl or the Swin release's ImageNet weights")


def init_config(source: InitSource, config):
    """The `DetectorConfig` to build for training from `source`: `config` (the preset's detector with
    the dataset's classes) with the file's backbone, or, for a detector file, the file's architecture
    with `config`'s classes, training sizes and build-time ablations."""
    if source.kind != "detector":
        return config.replace(backbone=source.backbone)
    file_cfg = source.detector
    tower = dataclasses.replace(
        file_cfg.tower,
        use_scale_attention=file_cfg.tower.use_scale_attention and config.tower.use_scale_attention,
        use_spatial_attention=file_cfg.tower.use_spatial_attention and config.tower.use_spatial_attention,
        use_task_attention=file_cfg.tower.use_task_attention and config.tower.use_task_attention,
    )
    return file_cfg.replace(tower=tower, num_classes=config.num_classes, class_names=config.class_names,
                            category_ids=config.category_ids, min_size=config.min_size, max_size=config.max_size)


def class_dependent_keys(config) -> set[str]:
    """Keys of the detector of `config` whose shape depends on the number of classes (the
    classification predictor; Faster R-CNN's class-specific box regression too), found by building
    the model twice on the meta device, K and K+1 classes."""
    from ..detector import DyHeadDetector

    k = config.num_classes + 1
    other = config.replace(num_classes=k, class_names=tuple(f"c{i}" for i in range(k)), category_ids=tuple(range(k)))
    with torch.device("meta"):
        a = {n: t.shape for n, t in DyHeadDetector(config).state_dict().items()}
        b = {n: t.shape for n, t in DyHeadDetector(other).state_dict().items()}
    return {n for n in a if n in b and a[n] != b[n]}


def initialise(model: nn.Module, source: InitSource) -> InitReport:
    """Copy `source`'s tensors into `model` (built from `init_config(source, ...)`), every key and
    shape checked; returns what was loaded, re-initialised and left out."""
    if source.kind == "detector":
        return _initialise_detector(model, source)
    body = model.backbone.body
    body_keys = list(body.state_dict())
    fill = {}
    if source.kind == "torchvision_resnet":
        key_map = torchvision_resnet_key_map(body_keys)
    elif source.kind == "msra_pickle":
        key_map = msra_pickle_key_map(body_keys)
        fill = msra_pickle_fill(body_keys)
    else:
        key_map = swin_imagenet_key_map(body_keys)
    keep = [k for k in body_keys if k not in key_map and k not in fill]
    fill.update({k: (lambda t: t.clone()) for k in keep})
    fixed = {k: t.clone() for k, t in body.state_dict().items() if k.endswith("relative_position_index")}
    load_mapped(body, source.state, key_map, source.path, ignore=lambda k: True, fill=fill)
    for k, expected in fixed.items():  # deterministic buffers: a file with other values is not the release
        if not torch.equal(body.state_dict()[k], expected):
            raise CheckpointError(f"{source.path}: {key_map[k]} is not the relative position index of the "
                                  f"configured window")
    used = set(key_map.values())
    notes = [_backbone_note(source.backbone)]
    if source.kind == "msra_pickle":
        notes.append("frozen BatchNorm statistics set to mean 0 / variance 1 - eps: the file's _s/_b are the whole affine map")
    loaded = tuple(_BODY + k for k in body_keys if k in key_map)
    reinit = tuple(k for k in model.state_dict() if k not in set(loaded))
    return InitReport(source.kind, source.path, loaded, reinit,
                      tuple(k for k in source.state if k not in used), tuple(notes))


def _backbone_note(cfg) -> str:
    if cfg.kind == "resnet_msra":
        detail = f"depth {cfg.depth}, stem {cfg.stem_out}, bottleneck {cfg.base_width}, res2 {cfg.res2_out}"
    elif cfg.kind == "swin":
        detail = f"embed {cfg.swin_embed_dim}, depths {list(cfg.swin_depths)}, heads {list(cfg.swin_num_heads)}, window {cfg.swin_window_size}"
    else:
        detail = f"depth {cfg.depth}"
    return f"backbone from the file: {cfg.kind} ({detail}), {cfg.pixel_format} input"


def _initialise_detector(model: nn.Module, source: InitSource) -> InitReport:
    cfg, file_cfg = model.config, source.detector
    same_classes = (tuple(cfg.class_names), tuple(cfg.category_ids)) == (tuple(file_cfg.class_names),
                                                                          tuple(file_cfg.category_ids))
    classifier = set() if same_classes else class_dependent_keys(cfg)
    ours = model.state_dict()
    new_state, loaded, reinit, mismatches = {}, [], [], []
    for k, target in ours.items():
        if k in classifier or k not in source.state:
            reinit.append(k)
            continue
        value = source.state[k]
        if tuple(value.shape) != tuple(target.shape):
            mismatches.append((k, tuple(target.shape), tuple(value.shape)))
            continue
        new_state[k] = value.detach().to(dtype=target.dtype)
        loaded.append(k)
    if mismatches:
        detail = "; ".join(f"{n}: expected {list(e)}, found {list(f)}" for n, e, f in mismatches[:5])
        raise ShapeMismatchError(f"{source.path}: {len(mismatches)} tensor(s) with the wrong shape: {detail}", mismatches)
    model.load_state_dict(new_state, strict=False)
    notes = [f"{source.file_kind} checkpoint; architecture kept (backbone {file_cfg.backbone.kind}, "
             f"{file_cfg.tower.num_blocks} DyHead blocks at {file_cfg.tower.channels} channels)"]
    if same_classes:
        notes.append(f"same {cfg.num_classes} classes as the file: the classifier is kept")
    else:
        notes.append(f"classes {list(file_cfg.class_names)} -> {list(cfg.class_names)}: classification predictor "
                     "re-initialised (prior-probability bias)")
    used = set(loaded)
    return InitReport("detector", source.path, tuple(loaded), tuple(reinit),
                      tuple(k for k in source.state if k not in used), tuple(notes))


def build_initialised(config, path: PathLike, seed: Optional[int] = None):
    """The detector of `init_config(read_init_source(path), config)` with the file's weights loaded.
    -> (DyHeadDetector in train mode, InitReport)."""
    from ..detector import build_detector

    source = read_init_source(path)
    if seed is not None:
        torch.manual_seed(seed)
    model = build_detector(init_config(source, config))
    return model, initialise(model, source)

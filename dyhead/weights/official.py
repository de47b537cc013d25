"""The official DyHead releases (microsoft/DynamicHead on detectron2): every key map in one place.

``{"model": state_dict, ...}`` or a bare state dict with the keys of
``conformance/official_atss_r50_dyhead_keys.json``. Widths (stem, bottlenecks, FPN, tower, blocks,
classes) are read from the shapes, so the reduced conformance model loads too. detectron2 <= v0.4
files also hold ``anchor_generator.cell_anchors.*`` buffers: ignored with a note.
"""

from __future__ import annotations

import re

from torch import Tensor, nn

from ..backbone import BackboneConfig
from ..coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from ..config import DyHeadConfig
from .errors import UnknownLayoutError
from .info import LoadInfo
from .io import load_mapped, require_keys
from .overrides import apply_overrides

__all__ = ["official_tower_key_map", "official_key_map", "infer_official_config",
           "detector_from_official_state_dict", "is_official"]

#: Our sub-module names -> the official DyConv's (microsoft/DynamicHead, dyhead/dyhead.py).
_OFFICIAL_NAMES = {
    "spatial_offsets": "offset",
    "from_coarser.conv": "DyConv.0.conv",
    "from_coarser.norm": "DyConv.0.bn",
    "same_level.conv": "DyConv.1.conv",
    "same_level.norm": "DyConv.1.bn",
    "from_finer.conv": "DyConv.2.conv",
    "from_finer.norm": "DyConv.2.bn",
    "scale_attention.fc": "AttnConv.1",
    "task_attention.fc1": "relu.fc.0",
    "task_attention.fc2": "relu.fc.2",
}


def official_tower_key_map(num_blocks: int) -> dict[str, str]:
    """{our tower key: official key relative to `dyhead_tower.`}, e.g.
    'blocks.0.same_level.conv.weight' -> '0.DyConv.1.conv.weight'."""
    mapping = {}
    for b in range(num_blocks):
        for ours, theirs in _OFFICIAL_NAMES.items():
            for param in ("weight", "bias"):
                mapping[f"blocks.{b}.{ours}.{param}"] = f"{b}.{theirs}.{param}"
    return mapping


def is_official(tensors: dict) -> bool:
    return any(k.startswith(_D2_TOWER) or k.startswith(_D2_BOTTOM_UP) for k in tensors)


_D2_BOTTOM_UP = "backbone.backbone.bottom_up."
_D2_TOWER = "backbone.dyhead_tower."
_MSRA_DEPTH_BY_RES4 = {6: 50, 23: 101, 36: 152}


def _is_legacy_anchor_key(key: str) -> bool:
    return key.startswith("anchor_generator.cell_anchors.")


def official_key_map(model: nn.Module) -> dict[str, str]:
    """{our state-dict key: official detectron2 key} for a detector with the official layout
    (resnet_msra backbone, head without conv towers)."""
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


def infer_official_config(state: dict[str, Tensor], origin: str = "checkpoint"):
    """A `DetectorConfig` whose widths match an official ATSS + DyHead state dict."""
    from ..detector import DetectorConfig

    p = _D2_BOTTOM_UP
    require_keys(
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
        require_keys(state, [_D2_TOWER + "0.DyConv.1.conv.weight", _D2_TOWER + "0.relu.fc.0.weight"], origin)
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
    try:
        return DetectorConfig(**fields)
    except ValueError as exc:
        raise UnknownLayoutError(f"{origin}: the tensor shapes do not describe a valid detector ({exc})") from None


def detector_from_official_state_dict(
    state: dict[str, Tensor], origin: str = "checkpoint", coarser_branch=None, **overrides
):
    """Build a `DyHeadDetector` from an official ATSS + DyHead state dict; every key is used
    (legacy anchor buffers excepted). Returns (model, info)."""
    from ..detector import DyHeadDetector

    cfg = apply_overrides(infer_official_config(state, origin), coarser_branch, overrides, origin)
    model = DyHeadDetector(cfg)
    load_mapped(model, state, official_key_map(model), origin, ignore=_is_legacy_anchor_key)
    notes = []
    legacy = sorted(k for k in state if _is_legacy_anchor_key(k))
    if legacy:
        notes.append(
            f"ignored {len(legacy)} anchor buffer(s) of detectron2 <= v0.4 ({', '.join(legacy)}): anchors are recomputed"
        )
    return model, LoadInfo("detectron2", origin, cfg, {}, tuple(notes))

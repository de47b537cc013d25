"""The official DyHead releases (microsoft/DynamicHead on detectron2): every key map in one place.

``{"model": state_dict, ...}`` or a bare state dict with the keys of
``conformance/official_atss_r50_dyhead_keys.json``. Widths (stem, bottlenecks, FPN, tower, blocks,
classes) are read from the shapes, so the reduced conformance model loads too. detectron2 <= v0.4
files also hold ``anchor_generator.cell_anchors.*`` buffers: ignored with a note.

The Swin-T release (``dyhead_swint_atss_fpn_2x_ms``, ``official_atss_swint_dyhead_keys.json``) has the
same FPN, tower and head keys on a Swin bottom-up network; its keys are in the section "Swin-T" below.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from ..backbone import BackboneConfig
from ..coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from ..config import DyHeadConfig
from ..swin import relative_position_index
from .errors import CheckpointError, UnknownLayoutError
from .info import LoadInfo
from .io import load_mapped, require_keys
from .overrides import apply_overrides

__all__ = ["official_tower_key_map", "official_key_map", "infer_official_config", "official_detector_kind",
           "detector_from_official_state_dict", "is_official", "is_official_swin", "swin_backbone_config"]

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
    return key.startswith("anchor_generator.cell_anchors.") or key.startswith(
        "proposal_generator.anchor_generator.cell_anchors.")


#: The head keys that tell the detector kinds apart (README section 6).
_KIND_KEYS = {"atss": "head.cls_logits.weight", "retinanet": "head.cls_score.weight",
              "faster_rcnn": "roi_heads.box_predictor.cls_score.weight"}


def official_detector_kind(state: dict[str, Tensor], origin: str = "checkpoint") -> str:
    """"atss", "retinanet" or "faster_rcnn", from the head keys of an official file."""
    kinds = [kind for kind, key in _KIND_KEYS.items() if key in state]
    if len(kinds) != 1:
        raise UnknownLayoutError(
            f"{origin}: cannot tell the detector kind: expected exactly one of {sorted(_KIND_KEYS.values())} "
            f"(ATSS, RetinaNet, Faster R-CNN), found {[_KIND_KEYS[k] for k in kinds] or 'none'}")
    return kinds[0]


def _head_fields(kind: str, state: dict[str, Tensor], origin: str) -> dict:
    """num_classes and the head's own settings, read from the head tensors of an official file."""
    from ..detector import kind_settings

    fields = kind_settings(kind)
    if kind == "atss":
        fields["num_classes"] = int(state["head.cls_logits.weight"].shape[0])
        return fields
    if kind == "retinanet":
        require_keys(state, ["head.bbox_pred.weight"], origin)
        anchors = int(state["head.bbox_pred.weight"].shape[0]) // 4
        fields["num_classes"] = int(state["head.cls_score.weight"].shape[0]) // max(1, anchors)
        fields["head_num_convs"] = len({int(m.group(1)) for k in state if (m := re.match(r"head\.cls_subnet\.(\d+)\.", k))})
        expected = len(fields["anchor_sizes"][0]) * len(fields["anchor_ratios"])
    else:
        require_keys(state, ["proposal_generator.rpn_head.objectness_logits.weight", "roi_heads.box_head.fc1.weight"],
                     origin)
        anchors = int(state["proposal_generator.rpn_head.objectness_logits.weight"].shape[0])
        fields["num_classes"] = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0]) - 1
        fields["box_fc_dim"] = int(state["roi_heads.box_head.fc1.weight"].shape[0])
        expected = len(fields["anchor_sizes"][0]) * len(fields["anchor_ratios"])
    if anchors != expected:
        raise UnknownLayoutError(f"{origin}: a {kind} head with {anchors} anchors per location; the release has {expected}")
    return fields


def official_key_map(model: nn.Module) -> dict[str, str]:
    """{our state-dict key: official detectron2 key} for a detector with the official layout
    (resnet_msra backbone, head without conv towers)."""
    cfg = model.config
    if cfg.backbone.kind not in ("resnet_msra", "swin") or (cfg.kind == "atss" and cfg.head_num_convs != 0):
        raise ValueError("only detectors with a resnet_msra or swin backbone and no ATSS head towers have an official layout")
    body_name = _swin_official_name if cfg.backbone.kind == "swin" else (lambda k: k)
    tower_map = official_tower_key_map(cfg.tower.num_blocks)
    mapping = {}
    for k in model.state_dict():
        if k.startswith("backbone.body."):
            mapping[k] = _D2_BOTTOM_UP + body_name(k[len("backbone.body.") :])
        elif k.startswith("backbone.fpn."):
            m = re.fullmatch(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d)\.0\.(weight|bias)", k)
            if m:
                kind = "fpn_lateral" if m.group(1) == "inner_blocks" else "fpn_output"
                mapping[k] = f"backbone.backbone.{kind}{int(m.group(2)) + cfg.first_level}.{m.group(3)}"
            else:
                mapping[k] = "backbone.backbone.top_block." + k[len("backbone.fpn.extra_blocks.") :]
        elif k.startswith("tower."):
            mapping[k] = _D2_TOWER + tower_map[k[len("tower.") :]]
        elif k.startswith("head."):
            # Faster R-CNN's head holds detectron2's top-level proposal_generator / roi_heads.
            mapping[k] = k[len("head."):] if cfg.kind == "faster_rcnn" else k
        else:
            raise RuntimeError(f"no official name for {k}")
    return mapping


def infer_official_config(state: dict[str, Tensor], origin: str = "checkpoint"):
    """A `DetectorConfig` whose kind, widths and depths match an official DyHead state dict (ATSS,
    RetinaNet or Faster R-CNN; the kind is read from the head keys)."""
    from ..detector import DetectorConfig

    kind = official_detector_kind(state, origin)
    backbone = official_backbone_config(state, origin)
    require_keys(state, ["backbone.backbone.fpn_lateral3.weight"], origin)
    head_fields = _head_fields(kind, state, origin)
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
    num_classes = head_fields.pop("num_classes")
    if num_classes == 80:
        names, ids = COCO_CLASS_NAMES, COCO_CATEGORY_IDS
    else:
        names = tuple(f"class_{i}" for i in range(num_classes))
        ids = tuple(range(1, num_classes + 1))
    fields = dict(
        backbone=backbone,
        fpn_channels=fpn_channels,
        tower=DyHeadConfig(num_blocks=num_blocks, channels=channels, dyrelu_reduction=reduction),
        num_classes=num_classes,
        class_names=names,
        category_ids=ids,
        **head_fields,
    )
    try:
        return DetectorConfig(**fields)
    except ValueError as exc:
        raise UnknownLayoutError(f"{origin}: the tensor shapes do not describe a valid detector ({exc})") from None


def official_backbone_config(state: dict[str, Tensor], origin: str = "checkpoint") -> BackboneConfig:
    """The bottom-up network of an official file, widths and depth read from its shapes: the Swin of
    the Swin-T release, else the MSRA ResNet of the R50 releases."""
    if is_official_swin(state):
        return swin_backbone_config(state, origin)
    p = _D2_BOTTOM_UP
    require_keys(state, [p + "stem.conv1.weight", p + "res2.0.conv1.weight", p + "res2.0.conv3.weight"], origin)
    res4_blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(p) + r"res4\.(\d+)\.", k))}
    depth = _MSRA_DEPTH_BY_RES4.get(len(res4_blocks))
    if depth is None:
        raise UnknownLayoutError(f"{origin}: a ResNet with {len(res4_blocks)} res4 blocks is not ResNet-50/101/152")
    return BackboneConfig(
        kind="resnet_msra",
        depth=depth,
        stem_out=int(state[p + "stem.conv1.weight"].shape[0]),
        base_width=int(state[p + "res2.0.conv1.weight"].shape[0]),
        res2_out=int(state[p + "res2.0.conv3.weight"].shape[0]),
    )


def detector_from_official_state_dict(
    state: dict[str, Tensor], origin: str = "checkpoint", coarser_branch=None, **overrides
):
    """Build a `DyHeadDetector` from an official ATSS + DyHead state dict; every key is used
    (legacy anchor buffers excepted). Returns (model, info)."""
    from ..detector import DyHeadDetector

    cfg = apply_overrides(infer_official_config(state, origin), coarser_branch, overrides, origin)
    model = DyHeadDetector(cfg)
    load_mapped(model, state, official_key_map(model), origin, ignore=_is_legacy_anchor_key)
    if cfg.backbone.kind == "swin":
        check_swin_position_index(model, origin)
    notes = []
    legacy = sorted(k for k in state if _is_legacy_anchor_key(k))
    if legacy:
        notes.append(
            f"ignored {len(legacy)} anchor buffer(s) of detectron2 <= v0.4 ({', '.join(legacy)}): anchors are recomputed"
        )
    return model, LoadInfo("detectron2", origin, cfg, {}, tuple(notes))


# ----------------------------------------------------------------------------------------------------
# Swin-T (dyhead_swint_atss_fpn_2x_ms; conformance README section 12)
#
# ``backbone.backbone.bottom_up.`` holds the official ``extra/swint.py`` module: ``patch_embed.{proj,
# norm}``, ``layers.<i>.blocks.<j>.{norm1, attn.{relative_position_bias_table, relative_position_index,
# qkv, proj}, norm2, mlp.{fc1, fc2}}``, ``layers.<i>.downsample.{norm, reduction}`` (i < 3) and the
# output norms ``norm<i>`` of the stages that feed the FPN. `dyhead.swin` uses the same names except
# torchvision's MLP (``mlp.0`` / ``mlp.3``).

_SWIN_MLP_NAMES = {".mlp.0.": ".mlp.fc1.", ".mlp.3.": ".mlp.fc2."}


def _swin_official_name(ours: str) -> str:
    """Our Swin key (relative to the body) -> the official one (relative to ``bottom_up.``)."""
    for mine, theirs in _SWIN_MLP_NAMES.items():
        ours = ours.replace(mine, theirs)
    return ours


def is_official_swin(state: dict) -> bool:
    return _D2_BOTTOM_UP + "patch_embed.proj.weight" in state


def swin_backbone_config(state: dict[str, Tensor], origin: str = "checkpoint") -> BackboneConfig:
    """``BackboneConfig(kind="swin")`` read from the shapes: embed dim (patch-embed conv), blocks per
    stage (the ``layers.<i>.blocks.<j>`` indices), heads and window (``relative_position_bias_table``
    [(2w-1)^2, heads]), MLP ratio (``fc1`` rows / width), the stages feeding the FPN (``norm<i>``)."""
    p = _D2_BOTTOM_UP
    proj = state[p + "patch_embed.proj.weight"]  # [C, 3, 4, 4]
    if tuple(proj.shape[1:]) != (3, 4, 4):
        raise UnknownLayoutError(f"{origin}: a Swin patch embedding of shape {list(proj.shape)}, expected [C, 3, 4, 4]")
    blocks: dict[int, set[int]] = {}
    for k in state:
        if m := re.match(re.escape(p) + r"layers\.(\d+)\.blocks\.(\d+)\.", k):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if sorted(blocks) != list(range(len(blocks))) or any(b != set(range(len(b))) for b in blocks.values()):
        raise UnknownLayoutError(f"{origin}: Swin layer/block indices are not contiguous: "
                                 f"{ {i: sorted(b) for i, b in sorted(blocks.items())} }")
    embed_dim = int(proj.shape[0])
    tables = [p + f"layers.{i}.blocks.0.attn.relative_position_bias_table" for i in range(len(blocks))]
    require_keys(state, tables + [p + "layers.0.blocks.0.mlp.fc1.weight"], origin)
    side = round(state[tables[0]].shape[0] ** 0.5)  # 2w - 1
    fields = dict(
        kind="swin",
        swin_embed_dim=embed_dim,
        swin_depths=tuple(len(blocks[i]) for i in range(len(blocks))),
        swin_num_heads=tuple(int(state[t].shape[1]) for t in tables),
        swin_window_size=(side + 1) // 2,
        swin_mlp_ratio=state[p + "layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        swin_out_features=tuple(f"stage{i + 2}" for i in range(len(blocks)) if p + f"norm{i}.weight" in state),
    )
    try:
        return BackboneConfig(**fields)
    except ValueError as exc:
        raise UnknownLayoutError(f"{origin}: the Swin tensor shapes do not describe a supported backbone ({exc})") from None


def check_swin_position_index(model: nn.Module, origin: str) -> None:
    """The ``relative_position_index`` buffers are deterministic: a file whose values differ from the
    formula (`dyhead.swin.relative_position_index`) was not written by the official model."""
    for name, buffer in model.state_dict().items():
        if name.endswith("relative_position_index"):
            expected = relative_position_index(model.config.backbone.swin_window_size)
            if not torch.equal(buffer.cpu(), expected):
                theirs = _D2_BOTTOM_UP + _swin_official_name(name[len("backbone.body."):])
                raise CheckpointError(f"{origin}: {theirs} does not hold the relative position index of a "
                                      f"{model.config.backbone.swin_window_size}x{model.config.backbone.swin_window_size} window")

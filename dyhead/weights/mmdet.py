"""The DyHead tower of an mmdetection checkpoint (``.../dyhead_blocks.<b>.spatial_conv_{high,mid,low}``).

The tower only: mmdetection's "high" is the coarser neighbour, "mid" the same level, "low" the finer
one (stride 2); its deformable convs have no bias (GroupNorm follows), so ours get zero bias; its
DyReLU 1x1 convs become our Linear layers. mmdetection crops the offsets for the coarser branch, so
the tower is built with ``CoarserBranchMode.CROP`` unless asked otherwise.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from ..config import CoarserBranchMode, DyHeadConfig
from .errors import UnknownLayoutError
from .info import LoadInfo
from .io import load_mapped, require_keys

__all__ = ["mmdet_tower_key_map", "load_mmdet_tower", "is_mmdet"]


def is_mmdet(tensors: dict) -> bool:
    return any(".dyhead_blocks." in k or k.startswith("dyhead_blocks.") for k in tensors)


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


def load_mmdet_tower(state: dict[str, Tensor], origin: str, coarser_branch=None):
    from ..tower import DyHeadTower

    prefixes = {m.group(1) for k in state if (m := re.match(r"(.*?)dyhead_blocks\.\d+\.", k))}
    if len(prefixes) != 1:
        raise UnknownLayoutError(f"{origin}: expected one mmdetection DyHead, found prefixes {sorted(prefixes)}")
    prefix = prefixes.pop()
    blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"dyhead_blocks\.(\d+)\.", k))}
    num_blocks = len(blocks)
    first = f"{prefix}dyhead_blocks.0."
    require_keys(state, [first + "spatial_conv_mid.conv.weight", first + "task_attn_module.conv1.conv.weight"], origin)
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
    load_mapped(tower, tower_state, key_map, origin, transforms=linear, fill=fill)
    others = len(state) - len(tower_state)
    notes = [
        "mmdetection's deformable convs have no bias (GroupNorm follows): biases set to 0",
        f"coarser branch mode: {mode.value} (mmdetection crops the offsets)",
    ] + ([f"{others} key(s) outside the DyHead tower were not used"] if others else [])
    return tower, LoadInfo("mmdet", origin, cfg, {}, tuple(notes), prefix=prefix)

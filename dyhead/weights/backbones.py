"""ImageNet backbone files that start a detector's training: what each holds and its key map.

* torchvision ResNet state dicts (``resnet50-0676ba61.pth``: ``conv1.weight``, ``bn1.*``,
  ``layer1.0.conv1.weight`` ... ``fc.*``) -> ``BackboneConfig(kind="resnet_torchvision")``;
* detectron2's MSRA ResNets (``ImageNetPretrained/MSRA/R-50.pkl``, a pickle of numpy arrays with
  Detectron names: ``conv1_w``, ``res_conv1_bn_{s,b}``, ``res2_0_branch2a_w``, ``res2_0_branch2a_bn_{s,b}``,
  ``res2_0_branch1_w`` ..., ``fc1000_{w,b}``) -> ``BackboneConfig(kind="resnet_msra")`` with the widths
  read from the shapes; read by `pickle_safe` (numpy arrays only, never code);
* the Swin Transformer release's ImageNet weights (``swin_tiny_patch4_window7_224.pth``:
  ``{"model": {patch_embed.*, layers.<i>.blocks.<j>.*, layers.<i>.downsample.*, norm.*, head.*}}``),
  the initialisation of the official Swin-T DyHead config -> ``BackboneConfig(kind="swin")``.

Each `*_key_map(body)` maps our body keys (relative to ``backbone.body.``) to the file's; keys of the
body that the file cannot provide are listed by `*_fill`, file keys the detector does not use (the
ImageNet classifier, Swin's final norm and shifted-window masks) are left out and reported.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torch import Tensor

from ..backbone import BackboneConfig
from .errors import UnknownLayoutError

__all__ = ["is_torchvision_resnet", "torchvision_resnet_config", "torchvision_resnet_key_map",
           "is_msra_pickle", "msra_pickle_config", "msra_pickle_key_map", "msra_pickle_fill",
           "is_swin_imagenet", "swin_imagenet_config", "swin_imagenet_key_map"]


def _blocks(state: dict, pattern: str) -> int:
    return len({int(m.group(1)) for k in state if (m := re.match(pattern, k))})


# ----------------------------------------------------------------------------------------------------
# torchvision ResNet


def is_torchvision_resnet(state: dict) -> bool:
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state and "bn1.weight" in state


def torchvision_resnet_config(state: dict[str, Tensor], origin: str) -> BackboneConfig:
    """resnet18/34/50/101/152, from the block type (``conv3`` = bottleneck) and the layer3/layer2 depths."""
    bottleneck = "layer1.0.conv3.weight" in state
    layer3 = _blocks(state, r"layer3\.(\d+)\.")
    layer2 = _blocks(state, r"layer2\.(\d+)\.")
    if bottleneck:
        depth = {6: 50, 23: 101, 36: 152}.get(layer3)
    else:
        depth = {2: 18, 6: 34}.get(layer3)
    if depth is None or (depth == 152 and layer2 != 8):
        raise UnknownLayoutError(f"{origin}: a torchvision ResNet with {layer3} layer3 blocks "
                                 f"({'bottleneck' if bottleneck else 'basic'}) is not resnet18/34/50/101/152")
    return BackboneConfig(kind="resnet_torchvision", depth=depth, frozen_bn=True)


def torchvision_resnet_key_map(body_keys: list[str]) -> dict[str, str]:
    """Our `TorchvisionResNet` uses torchvision's own module names: the identity."""
    return {k: k for k in body_keys}


# ----------------------------------------------------------------------------------------------------
# detectron2 / Detectron MSRA ResNet (.pkl)

_MSRA_CONVS = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}


def is_msra_pickle(state: dict) -> bool:
    return "conv1_w" in state and "res2_0_branch2a_w" in state


def msra_pickle_config(state: dict[str, Tensor], origin: str) -> BackboneConfig:
    """Depth from the res4 block count, widths from ``conv1_w`` (stem), ``res2_0_branch2a_w``
    (bottleneck) and ``res2_0_branch2c_w`` (res2 output)."""
    for key in ("res2_0_branch2c_w", "res_conv1_bn_s"):
        if key not in state:
            raise UnknownLayoutError(f"{origin}: an MSRA ResNet pickle without {key!r}")
    res4 = _blocks(state, r"res4_(\d+)_")
    depth = {6: 50, 23: 101, 36: 152}.get(res4)
    if depth is None:
        raise UnknownLayoutError(f"{origin}: an MSRA ResNet with {res4} res4 blocks is not ResNet-50/101/152")
    return BackboneConfig(kind="resnet_msra", depth=depth, stem_out=int(state["conv1_w"].shape[0]),
                          base_width=int(state["res2_0_branch2a_w"].shape[0]),
                          res2_out=int(state["res2_0_branch2c_w"].shape[0]))


def _msra_name(ours: str) -> str | None:
    """Our ResNetMSRA key -> the Detectron name; None for the BN statistics no file holds."""
    if ours.endswith(("running_mean", "running_var")):
        return None
    if m := re.fullmatch(r"stem\.conv1\.(weight|norm\.weight|norm\.bias)", ours):
        return {"weight": "conv1_w", "norm.weight": "res_conv1_bn_s", "norm.bias": "res_conv1_bn_b"}[m.group(1)]
    m = re.fullmatch(r"res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)\.(weight|norm\.weight|norm\.bias)", ours)
    if m is None:
        raise RuntimeError(f"no MSRA name for {ours}")
    base = f"res{m.group(1)}_{m.group(2)}_{_MSRA_CONVS[m.group(3)]}"
    return base + {"weight": "_w", "norm.weight": "_bn_s", "norm.bias": "_bn_b"}[m.group(4)]


def msra_pickle_key_map(body_keys: list[str]) -> dict[str, str]:
    return {k: name for k in body_keys if (name := _msra_name(k)) is not None}


def msra_pickle_fill(body_keys: list[str]) -> dict[str, Callable[[Tensor], Tensor]]:
    """The MSRA files hold the frozen BN as an affine map only (``_s``, ``_b``): mean 0 and variance
    1 - eps make FrozenBN apply exactly that map, as detectron2's FrozenBatchNorm2d does."""
    fill: dict[str, Callable[[Tensor], Tensor]] = {}
    for k in body_keys:
        if k.endswith("running_mean"):
            fill[k] = torch.zeros_like
        elif k.endswith("running_var"):
            fill[k] = lambda t: torch.full_like(t, 1.0 - 1e-5)
    return fill


# ----------------------------------------------------------------------------------------------------
# Swin Transformer ImageNet release


def is_swin_imagenet(state: dict) -> bool:
    return "patch_embed.proj.weight" in state and "layers.0.blocks.0.attn.qkv.weight" in state


def swin_imagenet_config(state: dict[str, Tensor], origin: str) -> BackboneConfig:
    """Embed dim (patch-embed conv), blocks per stage, heads and window (relative-position bias
    table [(2w-1)^2, heads]) and MLP ratio from the shapes; drop-path 0.2 and stage3-5 into the FPN
    (BackboneConfig's defaults, the official Swin-T DyHead config)."""
    proj = state["patch_embed.proj.weight"]  # [C, 3, 4, 4]
    stages = _blocks(state, r"layers\.(\d+)\.")
    depths = tuple(_blocks(state, rf"layers\.{i}\.blocks\.(\d+)\.") for i in range(stages))
    tables = [f"layers.{i}.blocks.0.attn.relative_position_bias_table" for i in range(stages)]
    if tuple(proj.shape[1:]) != (3, 4, 4) or any(t not in state for t in tables):
        raise UnknownLayoutError(f"{origin}: not a Swin Transformer of the official release's layout")
    embed_dim = int(proj.shape[0])
    side = round(state[tables[0]].shape[0] ** 0.5)  # 2w - 1
    try:
        return BackboneConfig(kind="swin", swin_embed_dim=embed_dim, swin_depths=depths,
                              swin_num_heads=tuple(int(state[t].shape[1]) for t in tables),
                              swin_window_size=(side + 1) // 2,
                              swin_mlp_ratio=state["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim)
    except (KeyError, ValueError) as exc:
        raise UnknownLayoutError(f"{origin}: the Swin tensor shapes do not describe a supported backbone ({exc})") from None


def swin_imagenet_key_map(body_keys: list[str]) -> dict[str, str]:
    """Our Swin keys -> the release's: the same names except torchvision's MLP (``mlp.0``/``mlp.3``
    = ``mlp.fc1``/``mlp.fc2``). The detection-only output norms ``norm1..3`` have no ImageNet
    counterpart (the classifier's final ``norm`` follows stage 4 alone) and start from LayerNorm's
    init, as in the official Swin detection code."""
    mapping = {}
    for k in body_keys:
        if re.fullmatch(r"norm\d\.(weight|bias)", k):
            continue
        mapping[k] = k.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.3.", ".mlp.fc2.")
    return mapping

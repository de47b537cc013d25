"""Backbones with a feature pyramid: a normalised image batch -> FPN levels P3..P7.

Three bottom-up networks, all ending in the same FPN (torchvision's `FeaturePyramidNetwork` on C3-C5
plus `LastLevelP6P7` fed by P5, as detectron2's DyHead backbone does):

* ``"resnet_msra"`` — the MSRA/detectron2 bottleneck ResNet of the official DyHead release: the stride
  sits in the first 1x1 conv of a stage, frozen BatchNorm everywhere, convs without bias, BGR input in
  0-255 with caffe means. Widths are configurable so the reduced conformance model can be built too.
  Sub-module names mirror detectron2's (``stem.conv1``, ``res2.0.conv1.norm``), so the official
  checkpoint keys map onto it by a prefix change alone.
* ``"resnet_torchvision"`` — torchvision's ResNet (RGB, ImageNet mean/std), optionally loading local
  ImageNet weights. Never downloads.
* ``"small"`` — a narrow residual network for from-scratch training on a CPU.
* ``"swin"`` — the Swin Transformer of the official Swin-T release (`dyhead.swin`), RGB input with
  ImageNet mean/std; its stage3-stage5 outputs (after their LayerNorms) feed the FPN.

Shape legend: N batch, H x W the padded input size, C_l channels of level l, F fpn channels.
Outputs: P3..P7 with strides 8, 16, 32, 64, 128, each [N, F, ceil(H/s), ceil(W/s)].
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from .swin import SwinTransformer

__all__ = [
    "BackboneConfig",
    "BackboneWithFPN",
    "BackboneWeightsError",
    "FrozenBN",
    "ResNetMSRA",
    "SmallBackbone",
    "TorchvisionResNet",
    "build_backbone",
    "CAFFE_BGR_MEAN",
    "IMAGENET_RGB_MEAN",
    "IMAGENET_RGB_STD",
]

#: detectron2's MSRA pixel statistics (BGR order, 0-255 units, std 1): the official DyHead config.
CAFFE_BGR_MEAN = (103.53, 116.28, 123.675)
#: torchvision's ImageNet statistics expressed in 0-255 units (RGB order).
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)

_KINDS = ("resnet_msra", "resnet_torchvision", "small", "swin")
_MSRA_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_TORCHVISION_DEPTHS = (18, 34, 50, 101, 152)


class BackboneWeightsError(RuntimeError):
    """Local backbone weights that are missing or do not fit the architecture."""


@dataclass(frozen=True)
class BackboneConfig:
    kind: str = "resnet_msra"
    depth: int = 50
    #: resnet_msra widths (detectron2 STEM_OUT_CHANNELS, WIDTH_PER_GROUP, RES2_OUT_CHANNELS). The
    #: bottleneck width and the output width double at every stage after res2.
    stem_out: int = 64
    base_width: int = 64
    res2_out: int = 256
    #: resnet_torchvision: frozen BatchNorm (the detection default) instead of trainable BatchNorm.
    frozen_bn: bool = True
    #: resnet_torchvision: a plain torchvision ResNet state dict on disk (ImageNet weights).
    weights_path: Optional[str] = None
    #: small: widths of (stem, stage 2, C3, C4, C5) and residual blocks per stage; norm "batch"|"group".
    small_widths: tuple[int, ...] = (16, 24, 32, 64, 128)
    small_blocks: int = 1
    small_norm: str = "batch"
    #: swin: the official MODEL.SWINT keys (EMBED_DIM, DEPTHS, NUM_HEADS, WINDOW_SIZE, MLP_RATIO,
    #: DROP_PATH_RATE, OUT_FEATURES); Swin-T by default. The FPN reads stage3..stage5 (strides 8-32).
    swin_embed_dim: int = 96
    swin_depths: tuple[int, ...] = (2, 2, 6, 2)
    swin_num_heads: tuple[int, ...] = (3, 6, 12, 24)
    swin_window_size: int = 7
    swin_mlp_ratio: float = 4.0
    swin_drop_path_rate: float = 0.2
    swin_out_features: tuple[str, ...] = ("stage3", "stage4", "stage5")
    #: Input convention. None = the kind's default (MSRA: BGR caffe means, std 1; others: RGB ImageNet).
    pixel_format: Optional[str] = None
    pixel_mean: Optional[tuple[float, ...]] = None
    pixel_std: Optional[tuple[float, ...]] = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown backbone kind {self.kind!r}; expected one of {_KINDS}")
        if self.kind == "resnet_msra" and self.depth not in _MSRA_BLOCKS:
            raise ValueError(f"resnet_msra depth must be one of {sorted(_MSRA_BLOCKS)}, got {self.depth}")
        if self.kind == "resnet_torchvision" and self.depth not in _TORCHVISION_DEPTHS:
            raise ValueError(f"resnet_torchvision depth must be one of {_TORCHVISION_DEPTHS}, got {self.depth}")
        if len(self.small_widths) != 5:
            raise ValueError(f"small_widths needs 5 widths (stem, s2, C3, C4, C5), got {self.small_widths}")
        if self.small_norm not in ("batch", "group"):
            raise ValueError(f"small_norm must be 'batch' or 'group', got {self.small_norm!r}")
        if self.kind == "swin":
            self._check_swin()
        msra = self.kind == "resnet_msra"
        fmt = self.pixel_format or ("BGR" if msra else "RGB")
        if fmt not in ("BGR", "RGB"):
            raise ValueError(f"pixel_format must be 'BGR' or 'RGB', got {fmt!r}")
        mean = self.pixel_mean if self.pixel_mean is not None else (CAFFE_BGR_MEAN if msra else IMAGENET_RGB_MEAN)
        std = self.pixel_std if self.pixel_std is not None else ((1.0, 1.0, 1.0) if msra else IMAGENET_RGB_STD)
        object.__setattr__(self, "pixel_format", fmt)
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in std))
        object.__setattr__(self, "small_widths", tuple(int(v) for v in self.small_widths))

    def _check_swin(self) -> None:
        for name in ("swin_depths", "swin_num_heads", "swin_out_features"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        dims = [self.swin_embed_dim * 2**i for i in range(len(self.swin_depths))]
        if len(self.swin_num_heads) != len(dims) or any(d % h for d, h in zip(dims, self.swin_num_heads)):
            raise ValueError(f"swin stage widths {dims} must divide by their head counts {self.swin_num_heads}")
        if self.swin_out_features != ("stage3", "stage4", "stage5") or len(dims) != 4:
            raise ValueError("the FPN reads the stage3, stage4 and stage5 outputs of a 4-stage Swin, got "
                             f"out_features {list(self.swin_out_features)} of {len(dims)} stages")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "depth": self.depth,
            "stem_out": self.stem_out,
            "base_width": self.base_width,
            "res2_out": self.res2_out,
            "frozen_bn": self.frozen_bn,
            "weights_path": self.weights_path,
            "small_widths": list(self.small_widths),
            "small_blocks": self.small_blocks,
            "small_norm": self.small_norm,
            "swin_embed_dim": self.swin_embed_dim,
            "swin_depths": list(self.swin_depths),
            "swin_num_heads": list(self.swin_num_heads),
            "swin_window_size": self.swin_window_size,
            "swin_mlp_ratio": self.swin_mlp_ratio,
            "swin_drop_path_rate": self.swin_drop_path_rate,
            "swin_out_features": list(self.swin_out_features),
            "pixel_format": self.pixel_format,
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneConfig":
        d = dict(d)
        for key in ("small_widths", "pixel_mean", "pixel_std", "swin_depths", "swin_num_heads", "swin_out_features"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


# ----------------------------------------------------------------------------------------------------
# MSRA / detectron2 ResNet


class FrozenBN(FrozenBatchNorm2d):
    """torchvision's frozen BatchNorm (4 buffers, eps 1e-5), evaluated as detectron2 does without
    gradients: ``F.batch_norm(training=False)``. The same affine map as torchvision's rsqrt form,
    kept to reproduce the official float32 rounding."""

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class ConvFrozenBN(nn.Conv2d):
    """A bias-free conv followed by its frozen BatchNorm, stored as ``<name>.weight`` and
    ``<name>.norm.*`` like detectron2's ``Conv2d(norm=...)`` wrapper."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.norm = FrozenBN(out_channels, eps=1e-5)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class MSRAStem(nn.Module):
    """conv 7x7/2 + frozen BN + ReLU, then max-pool 3x3/2 (padding 1): stride 4."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvFrozenBN(3, out_channels, 7, stride=2, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class MSRABottleneck(nn.Module):
    """1x1 (carries the stride, MSRA style) -> 3x3 -> 1x1, plus a projection shortcut when the
    width or stride changes; output ReLU(branch + shortcut)."""

    def __init__(self, in_channels: int, bottleneck: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if in_channels != out_channels or stride != 1:
            self.shortcut = ConvFrozenBN(in_channels, out_channels, 1, stride=stride)
        else:
            self.shortcut = None
        self.conv1 = ConvFrozenBN(in_channels, bottleneck, 1, stride=stride)
        self.conv2 = ConvFrozenBN(bottleneck, bottleneck, 3, padding=1)
        self.conv3 = ConvFrozenBN(bottleneck, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + shortcut)


class ResNetMSRA(nn.Module):
    """detectron2's ResNet (``build_resnet_backbone`` with STRIDE_IN_1X1, FrozenBN, no deformable
    convs). Returns C3, C4, C5 (= res3, res4, res5) at strides 8, 16, 32."""

    def __init__(self, depth: int = 50, stem_out: int = 64, base_width: int = 64, res2_out: int = 256) -> None:
        super().__init__()
        self.stem = MSRAStem(stem_out)
        in_ch, bottleneck, out_ch = stem_out, base_width, res2_out
        self.out_channels: list[int] = []
        #: set by `build_backbone` for an FPN on res2-res5 (Faster R-CNN): C2 is returned first.
        self.with_res2 = False
        self.res2_channels = res2_out
        for stage, num_blocks in enumerate(_MSRA_BLOCKS[depth]):
            first_stride = 1 if stage == 0 else 2
            blocks = []
            for i in range(num_blocks):
                blocks.append(MSRABottleneck(in_ch, bottleneck, out_ch, first_stride if i == 0 else 1))
                in_ch = out_ch
            self.add_module(f"res{stage + 2}", nn.Sequential(*blocks))
            if stage >= 1:
                self.out_channels.append(out_ch)
            bottleneck, out_ch = bottleneck * 2, out_ch * 2

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.res2(self.stem(x))  # [N, res2_out, H/4, W/4]
        c3 = self.res3(x)  # [N, 2*res2_out, H/8, W/8]
        c4 = self.res4(c3)  # [N, 4*res2_out, H/16, W/16]
        c5 = self.res5(c4)  # [N, 8*res2_out, H/32, W/32]
        return [x, c3, c4, c5] if self.with_res2 else [c3, c4, c5]


# ----------------------------------------------------------------------------------------------------
# torchvision ResNet


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet without its classifier, returning C3, C4, C5."""

    def __init__(self, depth: int = 50, frozen_bn: bool = True, weights_path: Optional[str] = None) -> None:
        super().__init__()
        import torchvision

        norm_layer = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=norm_layer)
        if weights_path is not None:
            _load_torchvision_weights(net, weights_path, depth)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if depth >= 50 else 1
        self.out_channels = [128 * expansion, 256 * expansion, 512 * expansion]
        self.with_res2, self.res2_channels = False, 64 * expansion

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5] if self.with_res2 else [c3, c4, c5]


def _load_torchvision_weights(net: nn.Module, weights_path: str, depth: int) -> None:
    path = Path(weights_path)
    if not path.is_file():
        raise BackboneWeightsError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise BackboneWeightsError(
            f"{path}: not a torch state dict loadable with weights_only=True ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneWeightsError(f"{path}: expected a torchvision resnet{depth} state dict, got {type(state).__name__}")
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise BackboneWeightsError(
            f"{path}: does not fit torchvision resnet{depth}: missing {missing[:5]} "
            f"({len(missing)} in all), unexpected {list(result.unexpected_keys)[:5]} "
            f"({len(result.unexpected_keys)} in all)"
        )


# ----------------------------------------------------------------------------------------------------
# Small from-scratch backbone


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(min(8, channels), channels)


class SmallBlock(nn.Module):
    """A basic residual block (3x3 -> 3x3) with a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(norm, out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), _norm(norm, out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class SmallBackbone(nn.Module):
    """A narrow ResNet-like network (stem stride 2, then four stride-2 stages) returning C3, C4, C5
    at strides 8, 16, 32. Meant for training from scratch on a CPU at about 320 px."""

    def __init__(self, widths: tuple[int, ...] = (16, 24, 32, 64, 128), blocks: int = 1, norm: str = "batch"):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False), _norm(norm, widths[0]), nn.ReLU(inplace=True)
        )
        self.stages = nn.ModuleList()
        for i in range(4):
            layers = [SmallBlock(widths[i], widths[i + 1], 2, norm)]
            layers += [SmallBlock(widths[i + 1], widths[i + 1], 1, norm) for _ in range(blocks - 1)]
            self.stages.append(nn.Sequential(*layers))
        self.out_channels = list(widths[2:])
        self.with_res2, self.res2_channels = False, widths[1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)  # stride 2
        x = self.stages[0](x)  # stride 4
        c3 = self.stages[1](x)  # stride 8
        c4 = self.stages[2](c3)  # stride 16
        c5 = self.stages[3](c4)  # stride 32
        return [x, c3, c4, c5] if self.with_res2 else [c3, c4, c5]


# ----------------------------------------------------------------------------------------------------
# Bottom-up network + FPN


class BackboneWithFPN(nn.Module):
    """bottom-up network (C3..C5) -> FPN (P3..P5, nearest top-down, sum) -> P6 = conv3x3/2(P5),
    P7 = conv3x3/2(ReLU(P6)). Equal to detectron2's FPN + ``LastLevelP6P7(in_feature="p5")`` whenever
    every level exactly doubles the next (true for inputs padded to 128)."""

    def __init__(self, body: nn.Module, in_channels: list[int], fpn_channels: int, first_level: int = 3) -> None:
        super().__init__()
        self.body = body
        if first_level == 2:
            # Faster R-CNN + DyHead: FPN on res2-res5, P6 = max_pool2d(P5, 1, stride 2) (detectron2
            # LastLevelMaxPool, no parameters; conformance README 11.3 step 4).
            extra = LastLevelMaxPool()
        elif first_level == 3:
            extra = LastLevelP6P7(fpn_channels, fpn_channels)
        else:
            raise ValueError(f"the FPN starts at P2 or P3, got P{first_level}")
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=extra)
        self.out_channels = fpn_channels
        self.first_level = first_level
        self.strides = tuple(2 ** (first_level + i) for i in range(5))

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.forward_features(images)[1]

    def forward_features(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """images [N, 3, H, W] (normalised, padded) -> ([C3, C4, C5], [P3, P4, P5, P6, P7]), or
        ([C2, .., C5], [P2, .., P6]) for an FPN that starts at P2."""
        bottom_up = self.body(images)
        names = [f"c{self.first_level + i}" for i in range(len(bottom_up))]
        pyramid = self.fpn(OrderedDict(zip(names, bottom_up)))
        return bottom_up, list(pyramid.values())


def build_backbone(cfg: BackboneConfig, fpn_channels: int = 256, first_level: int = 3) -> BackboneWithFPN:
    """The bottom-up network of `cfg` with an FPN on C3-C5 (P3..P7), or on C2-C5 (P2..P6) when
    `first_level` is 2."""
    if cfg.kind == "resnet_msra":
        body = ResNetMSRA(cfg.depth, cfg.stem_out, cfg.base_width, cfg.res2_out)
    elif cfg.kind == "resnet_torchvision":
        body = TorchvisionResNet(cfg.depth, cfg.frozen_bn, cfg.weights_path)
    elif cfg.kind == "swin":
        body = SwinTransformer(
            embed_dim=cfg.swin_embed_dim, depths=cfg.swin_depths, num_heads=cfg.swin_num_heads,
            window_size=cfg.swin_window_size, mlp_ratio=cfg.swin_mlp_ratio,
            drop_path_rate=cfg.swin_drop_path_rate, out_features=cfg.swin_out_features,
        )
    else:
        body = SmallBackbone(cfg.small_widths, cfg.small_blocks, cfg.small_norm)
    in_channels = list(body.out_channels)
    if first_level == 2:
        if not hasattr(body, "with_res2"):
            raise ValueError(f"the {cfg.kind} backbone has no C2 output for an FPN starting at P2")
        body.with_res2 = True
        in_channels = [body.res2_channels] + in_channels
    return BackboneWithFPN(body, in_channels, fpn_channels, first_level)

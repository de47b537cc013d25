"""A DyHead tower written the straightforward way, as the reference for speed benchmarks.

It follows the official `DyConv.forward` (microsoft/DynamicHead, dyhead/dyhead.py) line by line:
per level, one `torchvision.ops.deform_conv2d` call per branch, branches stacked, scale weights from
`AttnConv` + h_sigmoid, a mean, then DyReLU. Parameters use the official names (`DyConv.{0,1,2}`,
`AttnConv.1`, `relu.fc.{0,2}`, `offset`), so our `DyHeadTower`'s weights load through
`dyhead.weights.official_tower_key_map`.

The coarser branch reads its offsets the way the official CUDA kernel does (conformance README,
section 3): the first 18*H'*W' values of each image's [18, H_l, W_l] offset map.

Shape legend: N batch, C channels, H_l x W_l the size of level l (index 0 = finest).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from dyhead.tower import DyHeadTower
from dyhead.weights import official_tower_key_map


def _h_sigmoid(x: Tensor) -> Tensor:
    return F.relu6(x + 3.0) / 6.0


class _Conv3x3Norm(nn.Module):
    """Official `Conv3x3Norm`: ModulatedDeformConv 3x3 + GroupNorm(16)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1)  # holds the weights
        self.bn = nn.GroupNorm(16, channels)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        y = deform_conv2d(
            x, offset, self.conv.weight, self.conv.bias, stride=self.stride, padding=1, mask=mask
        )
        return self.bn(y)


class _DyReLU(nn.Module):
    """Official `DYReLU` with K2=True, use_bias=True, reduction 4, lambda 1, no spatial branch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // 4), nn.ReLU(inplace=True), nn.Linear(channels // 4, 4 * channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        y = _h_sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1).view(n, c))).view(n, 4 * c, 1, 1)
        a1, b1, a2, b2 = torch.split(y, c, dim=1)
        a1 = (a1 - 0.5) * 2.0 + 1.0
        a2 = (a2 - 0.5) * 2.0
        b1 = b1 - 0.5
        b2 = b2 - 0.5
        return torch.max(x * a1 + b1, x * a2 + b2)


class _DyConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.DyConv = nn.ModuleList(
            [_Conv3x3Norm(channels, 1), _Conv3x3Norm(channels, 1), _Conv3x3Norm(channels, 2)]
        )
        self.AttnConv = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, 1, 1), nn.ReLU())
        self.relu = _DyReLU(channels)
        self.offset = nn.Conv2d(channels, 27, 3, padding=1)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        out = []
        for level, feature in enumerate(x):
            offset_mask = self.offset(feature)
            offset = offset_mask[:, :18]  # [N, 18, H_l, W_l]
            mask = offset_mask[:, 18:].sigmoid()  # [N, 9, H_l, W_l]
            branches = [self.DyConv[1](feature, offset, mask)]
            if level > 0:
                branches.append(self.DyConv[2](x[level - 1], offset, mask))
            if level < len(x) - 1:
                coarser = x[level + 1]
                n, _, h, w = coarser.shape
                offset_read = offset.reshape(n, -1)[:, : 18 * h * w].reshape(n, 18, h, w)
                mask_read = mask.reshape(n, -1)[:, : 9 * h * w].reshape(n, 9, h, w)
                y = self.DyConv[0](coarser, offset_read, mask_read)
                branches.append(
                    F.interpolate(y, size=feature.shape[-2:], mode="bilinear", align_corners=True)
                )
            stacked = torch.stack(branches)  # [B, N, C, H_l, W_l]
            attn = _h_sigmoid(torch.stack([self.AttnConv(b) for b in branches]))  # [B, N, 1, 1, 1]
            out.append(self.relu(torch.mean(stacked * attn, dim=0)))
        return out


class ReferenceTower(nn.Module):
    def __init__(self, num_blocks: int, channels: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_DyConv(channels) for _ in range(num_blocks))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        for block in self.blocks:
            features = block(features)
        return features


def reference_from(tower: DyHeadTower) -> ReferenceTower:
    """A `ReferenceTower` holding exactly `tower`'s weights (mapped through the official key map)."""
    cfg = tower.config
    ref = ReferenceTower(cfg.num_blocks, cfg.channels)
    ours = tower.state_dict()
    official = {
        "blocks." + theirs: ours[mine] for mine, theirs in official_tower_key_map(cfg.num_blocks).items()
    }
    ref.load_state_dict(official, strict=True)
    return ref.to(next(tower.parameters()).device)

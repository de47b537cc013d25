"""The ATSS prediction head that sits on the DyHead tower.

Official DyHead config (``MODEL.ATSS.NUM_CONVS 0``): no conv towers; three 1x1 predictors read the
same tower output — class logits (K), box deltas (4, multiplied by a learned per-level `Scale`) and
centerness (1). With ``num_convs > 0`` it is the original ATSS head (Zhang et al., CVPR 2020): a
classification and a box tower of conv3x3 + GroupNorm(32) + ReLU and 3x3 predictors, the baseline
that DyHead replaces (paper Table 2).

Init (conformance README section 5): N(0, 0.01) weights, zero biases, class bias -log((1-p)/p) with
prior p = 0.01, scales 1.0.

Shape legend: N batch, C channels, K classes, H_l x W_l the size of level l.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ATSSHead", "Scale"]


class Scale(nn.Module):
    """A learnable scalar (official ``Scale``: parameter ``scale`` of shape [1])."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(32) as ATSS uses it; narrow test models get fewer groups so that every group keeps
    at least 2 channels (a 1x1 P7 map would otherwise leave one value per group)."""
    return nn.GroupNorm(math.gcd(32, max(1, channels // 2)), channels)


class ATSSHead(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_levels: int = 5,
        num_convs: int = 0,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_convs = num_convs
        if num_convs > 0:
            self.cls_tower = self._tower(in_channels, num_convs)
            self.bbox_tower = self._tower(in_channels, num_convs)
        else:
            self.cls_tower = self.bbox_tower = None
        k = 3 if num_convs > 0 else 1
        self.cls_logits = nn.Conv2d(in_channels, num_classes, k, padding=k // 2)
        self.bbox_pred = nn.Conv2d(in_channels, 4, k, padding=k // 2)
        self.centerness = nn.Conv2d(in_channels, 1, k, padding=k // 2)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0.0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _tower(channels: int, num_convs: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for _ in range(num_convs):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), _group_norm(channels), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """features: L tensors [N, C, H_l, W_l] -> (cls logits [N, K, H_l, W_l], box deltas after the
        level's Scale [N, 4, H_l, W_l], centerness logits [N, 1, H_l, W_l]), one per level."""
        if len(features) != len(self.scales):
            raise ValueError(f"the head was built for {len(self.scales)} levels, got {len(features)}")
        cls_logits, bbox_deltas, centerness = [], [], []
        for level, x in enumerate(features):
            cls_feat = x if self.cls_tower is None else self.cls_tower(x)
            box_feat = x if self.bbox_tower is None else self.bbox_tower(x)
            cls_logits.append(self.cls_logits(cls_feat))
            bbox_deltas.append(self.scales[level](self.bbox_pred(box_feat)))
            centerness.append(self.centerness(box_feat))
        return cls_logits, bbox_deltas, centerness

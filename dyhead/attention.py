"""The three attentions of a DyHead block, as the official code computes them.

Paper: Dai et al., "Dynamic Head: Unifying Object Detection Heads with Attentions", CVPR 2021, Sec. 3.2.
Official code: microsoft/DynamicHead, `dyhead/dyhead.py` (DyConv) and `dyhead/dyrelu.py` (DYReLU).

Shape legend: N batch, C channels, H, W spatial size of one pyramid level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import modulated_deform_conv2d

#: 3x3 kernel: 9 taps, each with a (dy, dx) offset pair and one modulation mask.
KERNEL_TAPS = 9
OFFSET_CHANNELS = 2 * KERNEL_TAPS


def hard_sigmoid(x: Tensor) -> Tensor:
    """relu6(x + 3) / 6, the official `h_sigmoid`.

    Not the paper's max(0, min(1, (x + 1) / 2)) of Eq. (3): the code's version is what the released
    weights expect.
    """
    return F.relu6(x + 3.0) / 6.0


class SpatialOffsets(nn.Conv2d):
    """Predicts the spatial-aware attention of Eq. (4) at one level: offsets and modulation masks.

    A plain 3x3 conv with 27 outputs: channels 0-17 are the raw offsets (no tanh, no scaling;
    channel 2k = dy, 2k+1 = dx of tap k = 3*i + j), channels 18-26 pass a sigmoid and become masks.
    Official name: `offset`. It keeps PyTorch's default Conv2d init, as the official code does.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, OFFSET_CHANNELS + KERNEL_TAPS, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        offset_and_mask = super().forward(x)  # [N, 27, H, W]
        offset = offset_and_mask[:, :OFFSET_CHANNELS]  # [N, 18, H, W]
        mask = offset_and_mask[:, OFFSET_CHANNELS:].sigmoid()  # [N, 9, H, W]
        return offset, mask


class DeformConvNorm(nn.Module):
    """Modulated deformable 3x3 conv followed by GroupNorm: one branch of the official `DyConv`.

    Called without offsets it is an ordinary 3x3 conv, which is exactly the deformable conv with zero
    offsets and masks of one (the neutral value of spatial attention).
    """

    def __init__(self, channels: int, *, stride: int, norm_groups: int) -> None:
        super().__init__()
        self.stride = stride
        # An nn.Conv2d only to hold the weights: default init is uniform(+-1/sqrt(9C)) as the official
        # ModulatedDeformConv's reset_parameters, whose bias starts at zero.
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1)
        nn.init.zeros_(self.conv.bias)
        self.norm = nn.GroupNorm(norm_groups, channels)

    def forward(self, x: Tensor, offset: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Tensor:
        if offset is None:
            y = self.conv(x)
        else:
            y = modulated_deform_conv2d(
                x, offset, mask, self.conv.weight, self.conv.bias, stride=self.stride, padding=1
            )
        return self.norm(y)


class ScaleAttention(nn.Module):
    """Scale-aware attention pi_L (paper Eq. 3), official `AttnConv` + `h_sigmoid`.

    One scalar per image and branch: hard_sigmoid(relu(fc(global average pool))). Because of the
    ReLU the weight lies in [0.5, 1]. One module serves every branch and level of a block.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, 1, kernel_size=1)
        # Official DyConv.init_weights: normal(0, 0.01), bias 0.
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def logits(self, branch: Tensor) -> Tensor:
        """The hard sigmoid's input, [N, C, H, W] -> [N]."""
        pooled = branch.mean(dim=(2, 3), keepdim=True)  # [N, C, 1, 1]
        return F.relu(self.fc(pooled)).flatten()  # [N]

    def forward(self, branch: Tensor) -> Tensor:
        return hard_sigmoid(self.logits(branch))  # [N]


@dataclass(frozen=True)
class DyReLUCoefficients:
    """Task-aware attention's coefficients, each [N, C]: output = max(a1*x + b1, a2*x + b2)."""

    a1: Tensor
    b1: Tensor
    a2: Tensor
    b2: Tensor

    @classmethod
    def neutral(cls, n: int, c: int, *, like: Tensor) -> "DyReLUCoefficients":
        """a1 = 1, b1 = a2 = b2 = 0: the coefficients of a plain ReLU."""
        ones = like.new_ones(n, c)
        zeros = like.new_zeros(n, c)
        return cls(a1=ones, b1=zeros, a2=zeros, b2=zeros)

    def as_dict(self) -> dict[str, Tensor]:
        return {"a1": self.a1, "b1": self.b1, "a2": self.a2, "b2": self.b2}


class TaskAttention(nn.Module):
    """Task-aware attention pi_C (paper Eq. 5): DyReLU-B as the official `DYReLU` computes it.

    Pools one level over H x W, then FC(C -> C/4) -> ReLU -> FC(C/4 -> 4C) -> hard sigmoid gives
    y in [0, 1]^4C, split in the order a1, b1, a2, b2 and normalised to
    a1 in [0, 2], a2 in [-1, 1], b1, b2 in [-0.5, 0.5] (lambda = 2, initial a = (1, 0), b = (0, 0)).
    At y = 0.5 this is a plain ReLU, the paper's initial point.
    The paper's hyper-function differs: it pools over L x S (all levels), has a normalisation layer
    after the two FC layers, and maps the output to [-1, 1] with a shifted sigmoid; the code has no
    normalisation layer, pools each level alone and uses these per-coefficient ranges.
    """

    def __init__(self, channels: int, *, reduction: int) -> None:
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, 4 * channels)

    def coefficients(self, x: Tensor) -> DyReLUCoefficients:
        pooled = x.mean(dim=(2, 3))  # [N, C]
        y = hard_sigmoid(self.fc2(F.relu(self.fc1(pooled))))  # [N, 4C]
        a1, b1, a2, b2 = torch.split(y, self.channels, dim=1)  # each [N, C]
        return DyReLUCoefficients(
            a1=(a1 - 0.5) * 2.0 + 1.0,
            b1=b1 - 0.5,
            a2=(a2 - 0.5) * 2.0,
            b2=b2 - 0.5,
        )

    @staticmethod
    def apply(
        x: Tensor, coeffs: DyReLUCoefficients, *, reuse_input: bool = False, out: Optional[Tensor] = None
    ) -> Tensor:
        """max(a1*x + b1, a2*x + b2) per channel. Without autograd only: reuse_input means x is not
        needed afterwards and may be overwritten; `out` (x's shape and strides) receives the result.
        Each saves allocating a map (at full size a fresh map costs several times the arithmetic)."""
        def per_channel(t: Tensor) -> Tensor:
            return t[:, :, None, None]  # [N, C, 1, 1]

        if torch.is_grad_enabled():
            return torch.maximum(
                x * per_channel(coeffs.a1) + per_channel(coeffs.b1),
                x * per_channel(coeffs.a2) + per_channel(coeffs.b2),
            )
        # Without autograd: the same operations, written into one or two maps instead of five.
        first = torch.mul(x, per_channel(coeffs.a1), out=out) if out is not None else x * per_channel(coeffs.a1)
        first.add_(per_channel(coeffs.b1))
        second = x.mul_(per_channel(coeffs.a2)) if reuse_input else x * per_channel(coeffs.a2)
        second.add_(per_channel(coeffs.b2))
        return torch.maximum(first, second, out=first)

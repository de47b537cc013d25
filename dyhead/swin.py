"""Swin Transformer (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", ICCV 2021) as the official DyHead Swin-T release runs it (microsoft/DynamicHead
``extra/swint.py``; conformance README section 12.3 states every step).

Built from torchvision's Swin parts where they compute what the official code computes:
`torchvision.models.swin_transformer.SwinTransformerBlock` (pre-norm residual attention + GELU MLP,
drop path as torchvision's "row" StochasticDepth) and ``PatchMerging`` (zero-pad to even sizes, concat
(0,0), (1,0), (0,1), (1,1) as (row, col), LayerNorm(4C), Linear(4C -> 2C) without bias). Our own parts,
each saying why in its docstring: the window attention (`window_attention`, `WindowAttention`), the
patch embedding (`PatchEmbed`) and the stage outputs with their LayerNorms (`SwinTransformer`).

Sub-module names mirror the official ones (``patch_embed.proj``, ``layers.<i>.blocks.<j>.attn.qkv``,
``layers.<i>.downsample.reduction``, ``norm<i>``), so the official keys map onto this module by a
prefix change, except torchvision's MLP names (``mlp.0`` / ``mlp.3`` for the official ``mlp.fc1`` /
``mlp.fc2``).

Shape legend: N batch, H x W a stage's token grid, C its channels (embed_dim * 2**i in stage i),
Hp x Wp the grid zero-padded to multiples of the window size w, nW = (Hp/w)(Wp/w) windows,
T = w*w tokens per window, h heads.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import PatchMerging, ShiftedWindowAttention, SwinTransformerBlock

__all__ = [
    "PatchEmbed",
    "SwinStage",
    "SwinTransformer",
    "WindowAttention",
    "relative_position_index",
    "shift_mask",
    "stage_names",
    "window_attention",
]

#: The value the official code adds to the logits of token pairs from different shift regions
#: (``masked_fill(attn_mask != 0, -100.0)``; not -inf).
SHIFT_MASK_VALUE = -100.0


def stage_names(num_stages: int) -> tuple[str, ...]:
    """The official names of the stages: stage i (0-based) is ``stage{i+2}``, at stride 4 * 2**i."""
    return tuple(f"stage{i + 2}" for i in range(num_stages))


def relative_position_index(window: int) -> Tensor:
    """[T, T] int64: the row of the bias table for each (query, key) pair of a window, tokens row-major.
    For tokens (y1, x1), (y2, x2): ``(y1 - y2 + w - 1) * (2w - 1) + (x1 - x2 + w - 1)``.

    The official file stores this [T, T] buffer (``attn.relative_position_index``); torchvision
    stores the same values flattened to [T*T], so the buffer is registered here in the official shape."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)  # [2, T]
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, T, T], each in [0, 2w-2]
    return rel[0] * (2 * window - 1) + rel[1]


def shift_mask(padded_h: int, padded_w: int, window: int, shift: int, device=None, dtype=torch.float32) -> Tensor:
    """[nW, T, T] additive mask of shifted-window attention on the padded (and rolled) grid: 0 within
    a region, -100 between regions. The regions are rows [0, Hp-w), [Hp-w, Hp-shift), [Hp-shift, Hp)
    crossed with the same columns; a window covering the whole padded grid still gets them (the
    official code does not skip the shift there)."""
    regions = torch.zeros(padded_h, padded_w, device=device)
    bounds_h = (0, padded_h - window, padded_h - shift, padded_h)
    bounds_w = (0, padded_w - window, padded_w - shift, padded_w)
    label = 0
    for i in range(3):
        for j in range(3):
            regions[bounds_h[i]:bounds_h[i + 1], bounds_w[j]:bounds_w[j + 1]] = label
            label += 1
    windows = _partition(regions[None, :, :, None], window).flatten(1)  # [nW, T]
    diff = windows[:, None, :] - windows[:, :, None]  # [nW, T, T]
    return torch.zeros_like(diff, dtype=dtype).masked_fill(diff != 0, SHIFT_MASK_VALUE)


def _partition(x: Tensor, window: int) -> Tensor:
    """[N, Hp, Wp, C] -> [N*nW, w, w, C]: windows in row-major order (window rows outer)."""
    n, hp, wp, c = x.shape
    x = x.view(n, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def _reverse(windows: Tensor, n: int, hp: int, wp: int, window: int) -> Tensor:
    """[N*nW, w, w, C] -> [N, Hp, Wp, C], the inverse of `_partition`."""
    c = windows.shape[-1]
    x = windows.view(n, hp // window, wp // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, c)


def window_attention(
    x: Tensor,
    qkv: nn.Linear,
    proj: nn.Linear,
    position_bias: Tensor,
    num_heads: int,
    window: int,
    shift: int,
) -> Tensor:
    """(S)W-MSA as the official Swin computes it. x [N, H, W, C] (already LayerNorm-ed) -> [N, H, W, C].

    Steps (README 12.3 step 4): zero-pad right/bottom to multiples of w (after the norm, so the
    padded tokens are exact zeros, and they are *not* masked: they take part as keys and values);
    roll by (-shift, -shift); split into w x w windows; qkv = Linear(C, 3C) read as [3, h, C/h]
    (q of all heads, then k, then v); logits = (q * (C/h)**-0.5) k^T + relative position bias
    [1, h, T, T] + the shift mask; softmax; times v; heads concatenated; proj; windows merged; roll
    back by (+shift, +shift); crop to H x W.

    Why not torchvision's ``shifted_window_attention``: it computes exactly this except that it
    turns the shift off when the padded grid is a single window along a side (``window_size >=
    pad_H``), while the official code still rolls and masks there (e.g. the 4 x 4 stage5 grid of a
    128-pixel side, padded to 7). Elsewhere the two agree (tests/dyhead/test_swin.py)."""
    n, h, w, c = x.shape
    pad_b, pad_r = (window - h % window) % window, (window - w % window) % window
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # [N, Hp, Wp, C]
    hp, wp = h + pad_b, w + pad_r
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    tokens = _partition(x, window).flatten(1, 2)  # [N*nW, T, C]
    b, t = tokens.shape[:2]
    q, k, v = qkv(tokens).reshape(b, t, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)  # 3 x [N*nW, h, T, C/h]
    q = q * (c // num_heads) ** -0.5
    logits = q @ k.transpose(-2, -1) + position_bias  # [N*nW, h, T, T]
    if shift:
        mask = shift_mask(hp, wp, window, shift, x.device, logits.dtype)  # [nW, T, T]
        logits = (logits.view(n, -1, num_heads, t, t) + mask[None, :, None]).view(b, num_heads, t, t)
    out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, c)  # [N*nW, T, C]
    out = _reverse(proj(out).view(b, window, window, c), n, hp, wp, window)  # [N, Hp, Wp, C]
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out[:, :h, :w, :]


class WindowAttention(ShiftedWindowAttention):
    """torchvision's ``ShiftedWindowAttention`` parameters (``qkv``, ``proj``,
    ``relative_position_bias_table`` [(2w-1)^2, h]) with the official index buffer shape [T, T]
    (`relative_position_index`) and the official forward (`window_attention`)."""

    def define_relative_position_index(self) -> None:
        if self.window_size[0] != self.window_size[1]:
            raise ValueError(f"square windows only, got {self.window_size}")
        self.register_buffer("relative_position_index", relative_position_index(self.window_size[0]))

    def forward(self, x: Tensor) -> Tensor:
        if self.training and (self.attention_dropout or self.dropout):
            raise NotImplementedError("attention dropout is not implemented (the official config uses none)")
        bias = self.get_relative_position_bias()  # [1, h, T, T]
        return window_attention(x, self.qkv, self.proj, bias, self.num_heads, self.window_size[0], self.shift_size[0])


class PatchEmbed(nn.Module):
    """Conv p x p / stride p (with bias) then LayerNorm over channels; x [N, 3, H, W] -> [N, H/p, W/p, C].

    Own module: torchvision's Swin stem (conv, permute, norm) has no padding; the official one first
    zero-pads the right/bottom to a multiple of p (README 12.3 step 3)."""

    def __init__(self, embed_dim: int, patch_size: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[-1] % p) % p, 0, (p - x.shape[-2] % p) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # [N, H/p, W/p, C]


class SwinStage(nn.Module):
    """One official ``BasicLayer``: `depth` blocks alternating W-MSA (even j) and SW-MSA with shift
    w // 2 (odd j), then patch merging when it is not the last stage."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 drop_path: Sequence[float], downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim, num_heads, [window, window], [0, 0] if j % 2 == 0 else [window // 2, window // 2],
                mlp_ratio=mlp_ratio, stochastic_depth_prob=float(drop_path[j]), attn_layer=WindowAttention,
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """x [N, H, W, C] -> (stage output [N, H, W, C], merged [N, ceil(H/2), ceil(W/2), 2C] or None)."""
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else None)


class SwinTransformer(nn.Module):
    """The official detectron2 Swin backbone: patch embedding (no absolute position embedding), stages
    at strides 4, 8, 16, 32, and for each stage named in `out_features` its own output LayerNorm
    ``norm<i>`` (i = the stage index, so ``norm1`` belongs to stage3) applied to the stage output
    before patch merging. Returns those stages channels-first, finest first.

    Own module: torchvision's ``SwinTransformer`` is a classifier (one final norm, no per-stage outputs)."""

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        patch_size: int = 4,
        drop_path_rate: float = 0.2,
        out_features: Sequence[str] = ("stage3", "stage4", "stage5"),
    ) -> None:
        super().__init__()
        names = stage_names(len(depths))
        unknown = [f for f in out_features if f not in names]
        if unknown or len(num_heads) != len(depths):
            raise ValueError(f"out_features {list(out_features)} must be among {names}; "
                             f"{len(depths)} depths need as many head counts, got {len(num_heads)}")
        self.out_features = tuple(out_features)
        self.patch_embed = PatchEmbed(embed_dim, patch_size)
        # Stochastic depth grows linearly over all blocks (official ``dpr``); identity at inference.
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        self.num_features = [embed_dim * 2**i for i in range(len(depths))]
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            self.layers.append(SwinStage(self.num_features[i], depth, num_heads[i], window_size, mlp_ratio,
                                         rates[first:first + depth], downsample=i < len(depths) - 1))
        for i, name in enumerate(names):
            if name in self.out_features:
                self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.out_channels = [self.num_features[names.index(f)] for f in self.out_features]
        self.strides = [patch_size * 2 ** names.index(f) for f in self.out_features]

    def forward(self, x: Tensor) -> list[Tensor]:
        """x [N, 3, H, W] normalised -> the `out_features` stages, each [N, C_i, H_i, W_i]."""
        return self.forward_stages(x)[1]

    def forward_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """x [N, 3, H, W] -> (every stage's output before its norm, the normed `out_features`
        stages), all channels-first [N, C_i, H_i, W_i]."""
        names = stage_names(len(self.layers))
        x = self.patch_embed(x)  # [N, H/4, W/4, C]
        raw, outputs = [], []
        for i, layer in enumerate(self.layers):
            out, x = layer(x)  # out [N, H_i, W_i, C_i]
            raw.append(out.permute(0, 3, 1, 2))
            if names[i] in self.out_features:
                outputs.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
        return raw, outputs

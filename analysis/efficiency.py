"""Cost of the head against its depth: parameters, GMACs and latency (paper Table 2).

Compared are the DyHead tower with 1, 2, 4, 6, 8, 10 blocks and the ATSS baseline head's two
4-conv towers (classification and box, each 4 x conv3x3 + GroupNorm + ReLU, "0 blocks"), all at
256 channels on the five levels P3..P7. The 1x1/3x3 predictors are left out: both variants have them.

Counting convention (conformance README, section 7):

* ``GMACs``: one multiply-add counts 1. `torch.utils.flop_counter.FlopCounterMode` reports 2 FLOPs per
  multiply-add, so GMACs = its FLOPs / 2 / 1e9. It counts convolutions and linear layers (addmm) only;
  GroupNorm, (Dy)ReLU, pooling, upsampling, bias adds and other elementwise ops are not counted.
* torchvision's ``deform_conv2d`` is a custom op the counter does not know (it counts it as 0). A
  formula is registered for it here (`DEFORM_CONV_FLOPS`): the multiply-adds of the dense conv of the
  same shape; the bilinear sampling and the masking (about 2 % more) are not counted.
* Input: 800x1333 padded to a multiple of 32, i.e. 800x1344 (P3..P7 = 100x168 ... 7x11). This is
  the convention that reproduces the paper's per-block increment (21.21 here vs 21.24, every delta
  within 0.21 of Table 2); the official test-time padding to 128 (896x1408) gives 24.84 per block.
  The paper does not say what its "GFLOPs" count: that they are multiply-adds is inferred from this
  match (`PAPER_FLOPS_NOTE`), not stated.

The counts run on meta tensors (no memory, no arithmetic: fast); the latency runs real tensors on a
device, with random weights (speed does not depend on the values).

For reference the whole ATSS R50 detector is counted too (`detector_gmacs`): 209.78 GMACs for the
baseline at 800x1344, not the paper's 254.39 (whose counting tool is unknown), and its deltas differ
from the tower deltas by the predictors (the baseline's are 3x3, DyHead's 1x1: 3.90 GMACs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from dyhead.config import DyHeadConfig
from dyhead.detector import feature_sizes
from dyhead.head import ATSSHead
from dyhead.device import inference_autocast, synchronize
from dyhead.tower import DyHeadTower

__all__ = [
    "BLOCK_COUNTS",
    "CONVENTION",
    "DEFORM_CONV_FLOPS",
    "PAPER_TABLE2",
    "PAPER_BASELINE_GFLOPS",
    "PAPER_FLOPS_NOTE",
    "PAPER_PER_BLOCK",
    "deform_conv2d_flop",
    "count_gmacs",
    "detector_gmacs",
    "head_module",
    "measure_latency",
    "efficiency_table",
    "padded_size",
    "plot_efficiency",
    "plotly_efficiency",
]

#: Table 2 rows: 0 = the ATSS baseline towers.
BLOCK_COUNTS: tuple[int, ...] = (0, 1, 2, 4, 6, 8, 10)
#: Paper Table 2: "GFLOPs" change against the baseline (254.39 for the whole ATSS R50 detector).
PAPER_TABLE2: dict[int, float] = {1: -84.69, 2: -63.45, 4: -20.97, 6: 21.50, 8: 63.98, 10: 106.46}
PAPER_BASELINE_GFLOPS = 254.39
#: What the paper's "FLOPs" are is not stated in it; this is the reading this project takes, and why.
PAPER_FLOPS_NOTE = (
    "the paper does not say what its 'GFLOPs' count or with which tool; reading them as multiply-adds is an "
    "inference from the per-depth deltas, which match this multiply-add count (21.21 per block here, 21.24 in "
    "Table 2); its 254.39 baseline is not reproduced (this count: 209.78 GMACs for the whole baseline detector at "
    "800x1344), so only the deltas are compared"
)
#: (106.46 - (-84.69)) / 9, the per-block increment Table 2 implies.
PAPER_PER_BLOCK = 21.24

CONVENTION = (
    "GMACs (1 multiply-add = 1; = FlopCounterMode FLOPs / 2), convolutions and linear layers only, "
    "deform_conv2d counted as the dense conv of the same shape, on {h}x{w} "
    "(800x1333 padded to a multiple of {pad}), {c} channels, batch 1, levels P3-P7; "
    "0 blocks = the ATSS head's cls + box towers (2 x 4 x conv3x3 + GN + ReLU), predictors excluded"
)


# ------------------------------------------------------------------------------------------------
# Counting


def deform_conv2d_flop(
    input_shape,
    weight_shape,
    offset_shape,
    mask_shape,
    bias_shape,
    *args,
    out_shape=None,
    **kwargs,
) -> int:
    """FLOPs of ``torch.ops.torchvision.deform_conv2d`` in FlopCounterMode's convention (2 per MAC).

    Counted as the dense conv of the same shape: N * C_out * H_out * W_out * (C_in / groups) * kh * kw
    multiply-adds; weight is [C_out, C_in / groups, kh, kw], out [N, C_out, H_out, W_out]. The bilinear
    sampling of the inputs and the mask multiply are not counted.
    """
    c_out, c_in_per_group, kh, kw = weight_shape
    n, _, h_out, w_out = out_shape
    return 2 * n * c_out * h_out * w_out * c_in_per_group * kh * kw


#: Pass as ``FlopCounterMode(custom_mapping=DEFORM_CONV_FLOPS)``.
DEFORM_CONV_FLOPS: dict = {torch.ops.torchvision.deform_conv2d: deform_conv2d_flop}


def count_gmacs(fn: Callable[[], object], count_deform_conv: bool = True) -> tuple[float, dict[str, float]]:
    """Run ``fn()`` under FlopCounterMode; return (total GMACs, {op name: GMACs}).

    With ``count_deform_conv=False`` torchvision's deform_conv2d counts as 0, as the stock counter has it.
    """
    counter = FlopCounterMode(display=False, custom_mapping=DEFORM_CONV_FLOPS if count_deform_conv else None)
    with counter, torch.inference_mode():
        fn()
    per_op = {str(op): flops / 2e9 for op, flops in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops() / 2e9, per_op


def padded_size(height: int = 800, width: int = 1333, divisor: int = 32) -> tuple[int, int]:
    """(H, W) rounded up to a multiple of `divisor` (800x1333 /32 -> 800x1344)."""
    return (-(-height // divisor) * divisor, -(-width // divisor) * divisor)


class _BaselineTowers(nn.Module):
    """The ATSS head's cls and box towers (no predictors) applied to every level."""

    def __init__(self, channels: int, num_levels: int, num_convs: int = 4) -> None:
        super().__init__()
        head = ATSSHead(channels, num_classes=1, num_levels=num_levels, num_convs=num_convs)
        self.cls_tower = head.cls_tower
        self.bbox_tower = head.bbox_tower

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return [t(x) for x in features for t in (self.cls_tower, self.bbox_tower)]


def head_module(num_blocks: int, channels: int = 256, num_levels: int = 5) -> nn.Module:
    """0 -> the ATSS baseline towers; n >= 1 -> a DyHead tower of n blocks (official coarser branch)."""
    if num_blocks == 0:
        return _BaselineTowers(channels, num_levels)
    return DyHeadTower(DyHeadConfig(num_blocks=num_blocks, channels=channels, num_levels=num_levels))


def detector_gmacs(num_blocks: int, height: int, width: int) -> tuple[float, int]:
    """(GMACs, parameters) of the whole ATSS R50 detector (ResNet-50 + FPN + head) with `num_blocks`
    DyHead blocks (0 = the ATSS baseline with its 4-conv towers and 3x3 predictors), on meta tensors.
    The paper's 254.39 baseline is not reproduced by this count (209.78 at 800x1344; conformance
    README, section 7): only the deltas are compared."""
    from dyhead.detector import PRESETS, build_detector

    base = PRESETS["atss_r50_baseline" if num_blocks == 0 else "atss_r50_dyhead6"]
    cfg = replace(base, tower=replace(base.tower, num_blocks=num_blocks))
    with torch.device("meta"):
        model = build_detector(cfg).eval()
        images = torch.randn(1, 3, height, width)  # [1, 3, H, W]
    gmacs, _ = count_gmacs(lambda: model(images))
    return gmacs, sum(p.numel() for p in model.parameters())


def _pyramid(sizes: Sequence[tuple[int, int]], channels: int, device, dtype=torch.float32) -> list[Tensor]:
    return [torch.randn(1, channels, h, w, device=device, dtype=dtype) for h, w in sizes]  # [1, C, H_l, W_l]


def measure_latency(module: nn.Module, features: Sequence[Tensor], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time (ms) of one forward pass, under the inference autocast policy
    (`dyhead.device.inference_autocast`: float16 on CUDA, float32 on the CPU); CUDA work is synchronised."""
    device = features[0].device
    times = []
    with torch.inference_mode(), inference_autocast(device):
        for i in range(warmup + repeats):
            synchronize(device)
            start = time.perf_counter()
            module(features)
            synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    return times[len(times) // 2]


@dataclass(frozen=True)
class EfficiencySettings:
    height: int
    width: int
    pad: int
    channels: int

    @property
    def padded(self) -> tuple[int, int]:
        return padded_size(self.height, self.width, self.pad)

    @property
    def convention(self) -> str:
        h, w = self.padded
        return CONVENTION.format(h=h, w=w, pad=self.pad, c=self.channels)


def efficiency_table(
    blocks: Sequence[int] = BLOCK_COUNTS,
    channels: int = 256,
    image_size: tuple[int, int] = (800, 1333),
    pad: int = 32,
    latency: bool = True,
    latency_repeats: int = 3,
    device: Optional[torch.device | str] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    whole_detector: bool = True,
) -> pd.DataFrame:
    """One row per depth: blocks, label, params, gmacs, delta_gmacs (vs 0 blocks), paper_delta,
    per_block_gmacs, latency_ms (NaN without latency), and with `whole_detector` the GMACs and
    parameters of the whole ATSS R50 detector (`detector_gmacs`; 256 channels only).

    GMACs are counted on meta tensors; latency (when asked) is measured on `device` (default: CUDA
    when present, else CPU). `df.attrs["convention"]` states the counting convention and input size.
    """
    settings = EfficiencySettings(image_size[0], image_size[1], pad, channels)
    sizes = feature_sizes(*settings.padded)  # P3..P7
    if latency:
        device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu"
        )
    blocks = list(blocks)
    if 0 not in blocks:
        blocks = [0] + blocks  # the deltas need the baseline
    rows = []
    for i, n in enumerate(blocks):
        with torch.device("meta"):
            meta_module = head_module(n, channels).eval()
            meta_features = _pyramid(sizes, channels, "meta")
        gmacs, per_op = count_gmacs(lambda: meta_module(meta_features))
        params = sum(p.numel() for p in meta_module.parameters())
        latency_ms = float("nan")
        if latency:
            module = head_module(n, channels).eval().to(device)
            latency_ms = measure_latency(module, _pyramid(sizes, channels, device), repeats=latency_repeats)
            del module
        whole = detector_gmacs(n, *settings.padded) if whole_detector and channels == 256 else (float("nan"), 0)
        rows.append({
            "detector_gmacs": whole[0],
            "detector_params": whole[1],
            "blocks": n,
            "label": "ATSS baseline (2x4 convs)" if n == 0 else f"DyHead x{n}",
            "params": int(params),
            "gmacs": gmacs,
            "gmacs_deform_conv": sum(v for k, v in per_op.items() if "deform_conv2d" in k),
            "latency_ms": latency_ms,
        })
        if progress is not None:
            progress(i + 1, len(blocks))
    df = pd.DataFrame(rows)
    base = df.loc[df.blocks == 0, "gmacs"].iloc[0]
    df["delta_gmacs"] = df["gmacs"] - base
    df["paper_delta"] = df["blocks"].map(PAPER_TABLE2)
    df["delta_minus_paper"] = df["delta_gmacs"] - df["paper_delta"]
    df["per_block_gmacs"] = [g / n if n else float("nan") for g, n in zip(df.gmacs, df.blocks)]
    df["params_delta"] = df["params"] - df.loc[df.blocks == 0, "params"].iloc[0]
    df.attrs["convention"] = settings.convention
    df.attrs["input_size"] = f"{settings.padded[0]}x{settings.padded[1]}"
    df.attrs["latency_device"] = str(device) if latency else "not measured"
    return df[[
        "blocks", "label", "params", "params_delta", "gmacs", "gmacs_deform_conv", "per_block_gmacs",
        "delta_gmacs", "paper_delta", "delta_minus_paper", "detector_gmacs", "detector_params", "latency_ms",
    ]]


# ------------------------------------------------------------------------------------------------
# Figures


def plot_efficiency(df: pd.DataFrame):
    """Paper-style figure: GMACs delta vs depth next to Table 2's, and latency when measured."""
    import matplotlib.pyplot as plt

    has_latency = df["latency_ms"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_latency else 1, figsize=(9 if has_latency else 5, 3.6), squeeze=False)
    ax = axes[0, 0]
    dy = df[df.blocks > 0]
    ax.plot(dy.blocks, dy.delta_gmacs, "o-", label="this implementation")
    paper = dy.dropna(subset=["paper_delta"])
    ax.plot(paper.blocks, paper.paper_delta, "s--", label="paper Table 2")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xlabel("DyHead blocks")
    ax.set_ylabel("GMACs vs ATSS towers")
    ax.set_title("Head cost vs depth")
    ax.legend(frameon=False, fontsize=8)
    if has_latency:
        ax2 = axes[0, 1]
        ax2.plot(df.blocks, df.latency_ms, "o-")
        ax2.set_xlabel("DyHead blocks (0 = ATSS towers)")
        ax2.set_ylabel(f"latency (ms), {df.attrs.get('latency_device', '')}")
        ax2.set_title("Head latency")
    fig.text(0.01, 0.005, _wrap(df.attrs.get("convention", ""), 140), fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def plotly_efficiency(df: pd.DataFrame):
    import plotly.graph_objects as go

    dy = df[df.blocks > 0]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=dy.blocks, y=dy.delta_gmacs, mode="lines+markers", name="this implementation"))
    fig.add_trace(go.Scatter(x=dy.blocks, y=dy.paper_delta, mode="lines+markers", name="paper Table 2",
                             line=dict(dash="dash")))
    fig.update_layout(xaxis_title="DyHead blocks", yaxis_title="GMACs vs ATSS towers",
                      title="Head cost vs depth (" + df.attrs.get("input_size", "") + ")")
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))

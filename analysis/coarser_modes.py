"""The three readings of the coarser branch's offsets, compared on one image.

The official block runs the coarser neighbour's deformable conv at level l+1's size with level l's
offset and mask maps (microsoft/DynamicHead issue 25). `CoarserBranchMode` names three readings:
OFFICIAL (the CUDA kernel reads the start of the flattened buffer), CROP (mmdetection: the top-left
corner) and UPSAMPLE_FIRST (upsample level l+1 first, then the conv at level l: no mismatch). The same
weights are run under each, and every difference is measured against OFFICIAL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dyhead.config import CoarserBranchMode
from dyhead.trace import TraceSpec

from .detection_diff import DetectionDiff, diff_summary, match_detections
from .levels import level_name

__all__ = ["MODES", "CoarserComparison", "compare_coarser_modes", "plot_coarser_modes",
           "plotly_coarser_modes"]

MODES = (CoarserBranchMode.OFFICIAL, CoarserBranchMode.CROP, CoarserBranchMode.UPSAMPLE_FIRST)


@dataclass
class CoarserComparison:
    """features: one row per (mode, block, level): max/mean |difference| of the block output vs
    OFFICIAL, and the relative mean difference (mean |diff| / mean |official|).
    scale_weights: one row per (mode, block, level, source_level): weight and difference vs OFFICIAL.
    detections: one row per mode: detections and matched/added/removed vs OFFICIAL.
    diffs: {mode value: DetectionDiff vs OFFICIAL}."""

    features: pd.DataFrame
    scale_weights: pd.DataFrame
    detections: pd.DataFrame
    diffs: dict[str, DetectionDiff]


def compare_coarser_modes(model, image: np.ndarray, iou_threshold: float = 0.5,
                          score_threshold: float = 0.3) -> CoarserComparison:
    """Run one HxWx3 uint8 RGB image through `model`'s weights under every `CoarserBranchMode`."""
    spec = TraceSpec(scale=True, outputs=True)

    def run(mode):  # one pass per mode, the mode passed per call: the same loaded weights serve all three
        result = model.infer([image], coarser_branch=mode, trace=spec)
        return result.detections[0], result.trace

    ref_dets, ref_trace = run(CoarserBranchMode.OFFICIAL)
    feat_rows, weight_rows, det_rows, diffs = [], [], [], {}
    names = model.config.class_names
    for mode_value in (m.value for m in MODES):
        # one mode's outputs at a time beside the official ones (full size: ~140 MB each at 256 channels)
        dets, trace = (ref_dets, ref_trace) if mode_value == CoarserBranchMode.OFFICIAL.value else run(mode_value)
        mode = mode_value
        for b, (block, ref_block) in enumerate(zip(trace.blocks, ref_trace.blocks)):
            for level, (lt, ref_lt) in enumerate(zip(block.levels, ref_block.levels)):
                d = (lt.output.float() - ref_lt.output.float()).abs()
                feat_rows.append({
                    "mode": mode, "block": b + 1, "level": level, "level_name": level_name(level),
                    "max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
                    "rel_mean_diff": float(d.mean() / ref_lt.output.float().abs().mean().clamp_min(1e-12)),
                })
                for src in sorted(lt.scale_weights):
                    w = float(lt.scale_weights[src][0])
                    w_ref = float(ref_lt.scale_weights[src][0])
                    weight_rows.append({"mode": mode, "block": b + 1, "level": level, "level_name": level_name(level),
                                        "source_level": src, "source_name": level_name(src), "weight": w,
                                        "diff_vs_official": w - w_ref})
        diff = match_detections(ref_dets, dets, iou_threshold, score_threshold, names)
        diffs[mode] = diff
        det_rows.append({"mode": mode, **diff_summary(diff)})
    return CoarserComparison(pd.DataFrame(feat_rows), pd.DataFrame(weight_rows), pd.DataFrame(det_rows), diffs)


def plot_coarser_modes(cmp: CoarserComparison):
    """Relative mean difference of each block output vs OFFICIAL (heat maps, blocks x levels) for
    CROP and UPSAMPLE_FIRST, with the detection changes in the titles."""
    import matplotlib.pyplot as plt

    others = [m.value for m in MODES if m is not CoarserBranchMode.OFFICIAL]
    fig, axes = plt.subplots(1, len(others), figsize=(5.2 * len(others), 3.6), squeeze=False)
    f = cmp.features
    vmax = max(float(f[f["mode"].isin(others)].rel_mean_diff.max()), 1e-12)
    for ax, mode in zip(axes[0], others):
        sub = f[f["mode"] == mode]
        blocks = sorted(sub.block.unique())
        levels = sorted(sub.level.unique())
        grid = sub.pivot(index="block", columns="level", values="rel_mean_diff").loc[blocks, levels].to_numpy()
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, f"{100 * v:.1f}%", ha="center", va="center", fontsize=7, color="white" if v < vmax / 2 else "black")
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([level_name(l) for l in levels])
        ax.set_yticks(range(len(blocks)))
        ax.set_yticklabels([f"block {b}" for b in blocks])
        s = cmp.detections.set_index("mode").loc[mode]
        ax.set_title(f"{mode} vs official: {int(s.matched)} matched, {int(s.added)} added, {int(s.removed)} removed",
                     fontsize=8)
        fig.colorbar(im, ax=ax, label="mean |diff| / mean |official|")
    fig.tight_layout()
    return fig


def plotly_coarser_modes(cmp: CoarserComparison):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    others = [m.value for m in MODES if m is not CoarserBranchMode.OFFICIAL]
    fig = make_subplots(rows=1, cols=len(others), subplot_titles=[f"{m} vs official" for m in others])
    f = cmp.features
    for k, mode in enumerate(others):
        sub = f[f["mode"] == mode]
        grid = sub.pivot(index="block", columns="level", values="rel_mean_diff")
        fig.add_trace(go.Heatmap(z=grid.to_numpy(), x=[level_name(l) for l in grid.columns],
                                 y=[f"block {b}" for b in grid.index], coloraxis="coloraxis"), row=1, col=k + 1)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="rel. diff")),
                      title="Block outputs vs the official coarser-branch reading")
    return fig

"""Feature maps before the head and after each attention step (paper Figure 4).

For one image, every pyramid level is taken at these stages:

* ``before head``: the FPN output, i.e. the DyHead tower's input (the paper's "backbone" maps);
* ``block b, spatial+scale``: inside block b, the scale-weighted mean of the deformable-conv branches
  (after the spatial- and scale-aware steps, before DyReLU);
* ``block b``: the output of block b (after the task-aware step).

Each [C, H, W] map is reduced to one map (or an RGB map) per level by a `reduction`:

* ``mean_abs``: mean over channels of |x|;  ``l2``: L2 norm over channels;  ``max``: max over channels;
* ``channel:<k>``: channel k as is;
* ``pca``: the first three principal components of the C-dim pixel vectors as RGB. The components are
  fitted on each map separately (different blocks have different channel bases), their signs fixed
  so that each projection has a positive third moment, and each component is divided by the largest
  |projection| of that component over the maps of the colour group (see below), so 0.5 grey = 0.

Colour scale (`color_scale`): ``"per_level"`` (default) uses one range per level shared by every
stage shown, so that a level's maps compare across blocks; ``"global"`` one range for all levels and
stages; ``"per_map"`` each map its own range (where each map is strong, not how strong). The range is
[min, max] of the reduced maps in the group (only the part covering the image, not the padding).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .levels import level_label, level_name

__all__ = [
    "REDUCTIONS",
    "FeatureStages",
    "ReducedMaps",
    "feature_stages",
    "reduce_feature",
    "reduce_stages",
    "COLOR_SCALES",
    "overlay",
    "colorize",
    "paper_stages",
    "plot_feature_grid",
    "plotly_feature_grid",
]

REDUCTIONS = ("mean_abs", "l2", "max", "channel:<k>", "pca")


@dataclass
class FeatureStages:
    """The maps of one image. `maps[stage]` is a list over levels of [C, h_l, w_l] tensors (on CPU,
    float32), cropped to the part of the padded map that covers the image."""

    image: np.ndarray  # HxWx3 uint8 RGB, the original image
    stages: list[str]  # in pipeline order
    maps: dict[str, list[Tensor]]
    num_blocks: int


def _stage_names(num_blocks: int) -> list[str]:
    names = ["before head"]
    for b in range(1, num_blocks + 1):
        names += [f"block {b}, spatial+scale", f"block {b}"]
    return names


@torch.inference_mode()
def feature_stages(model, image: np.ndarray, switches=None) -> FeatureStages:
    """Run the model's backbone and tower on one HxWx3 uint8 RGB image and collect every stage."""
    batch, resized_sizes, _ = model.preprocess([image])
    device = batch.device
    ctx = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()
    with ctx:
        _, pyramid = model.backbone.forward_features(batch)
        _, trace = model.tower(pyramid, switches=switches, return_trace=True)
    rh, rw = resized_sizes[0]
    strides = model.config.strides

    def crop(levels: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for x, s in zip(levels, strides):
            h, w = -(-rh // s), -(-rw // s)  # cells that cover the unpadded image
            out.append(x[0, :, :h, :w].float().cpu())  # [C, h, w]
        return out

    maps = {"before head": crop(trace.inputs)}
    for b, block in enumerate(trace.blocks, start=1):
        maps[f"block {b}, spatial+scale"] = crop([lt.after_spatial_scale for lt in block.levels])
        maps[f"block {b}"] = crop([lt.output for lt in block.levels])
    return FeatureStages(image=image, stages=_stage_names(len(trace.blocks)), maps=maps, num_blocks=len(trace.blocks))


def _check_reduction(reduction: str) -> Optional[int]:
    if reduction.startswith("channel:"):
        try:
            return int(reduction.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"reduction {reduction!r}: expected channel:<index>, e.g. channel:0") from None
    if reduction not in ("mean_abs", "l2", "max", "pca"):
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    return None


def reduce_feature(x: Tensor, reduction: str = "mean_abs") -> np.ndarray:
    """[C, H, W] -> [H, W] float32 (or [H, W, 3] for "pca": the raw, sign-fixed projections)."""
    channel = _check_reduction(reduction)
    if channel is not None:
        if not 0 <= channel < x.shape[0]:
            raise ValueError(f"channel {channel} out of range: the map has {x.shape[0]} channels")
        return x[channel].numpy().astype(np.float32)
    if reduction == "mean_abs":
        return x.abs().mean(0).numpy().astype(np.float32)
    if reduction == "l2":
        return x.pow(2).sum(0).sqrt().numpy().astype(np.float32)
    if reduction == "max":
        return x.amax(0).numpy().astype(np.float32)
    return _pca3(x)


def _pca3(x: Tensor) -> np.ndarray:
    """First three principal components of the pixel vectors of [C, H, W] -> [H, W, 3]."""
    c, h, w = x.shape
    pixels = x.reshape(c, h * w).T.double()  # [HW, C]
    centered = pixels - pixels.mean(0, keepdim=True)
    k = min(3, c, h * w)
    if h * w > 1:
        _, _, v = torch.linalg.svd(centered, full_matrices=False)  # v: [min(HW, C), C]
        proj = centered @ v[:k].T  # [HW, k]
    else:
        proj = centered[:, :0].new_zeros(h * w, k)
    skew = (proj**3).mean(0)
    proj = proj * torch.where(skew < 0, -1.0, 1.0)  # sign convention: positive third moment
    out = np.zeros((h * w, 3), np.float32)
    out[:, :k] = proj.numpy()
    return out.reshape(h, w, 3)


@dataclass
class ReducedMaps:
    """Reduced maps `maps[stage][level]` ([h, w] or [h, w, 3] for PCA) and the colour range of each
    map: `ranges[(stage, level)] = (vmin, vmax)` (for PCA: (-m, m) per component, as [3] arrays)."""

    reduction: str
    color_scale: str
    stages: list[str]
    maps: dict[str, list[np.ndarray]]
    ranges: dict[tuple[str, int], tuple]

    @property
    def num_levels(self) -> int:
        return len(self.maps[self.stages[0]])

    def normalized(self, stage: str, level: int) -> np.ndarray:
        """The map scaled to [0, 1] with its colour range ([h, w], or [h, w, 3] for PCA)."""
        m = self.maps[stage][level]
        lo, hi = self.ranges[(stage, level)]
        if self.reduction == "pca":
            return np.clip(0.5 + 0.5 * m / np.maximum(hi, 1e-12), 0.0, 1.0)
        return np.clip((m - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


COLOR_SCALES = ("per_level", "global", "per_map")


def _range(arrays: Sequence[np.ndarray], pca: bool) -> tuple:
    if pca:
        m = np.max([np.abs(a).reshape(-1, 3).max(0) for a in arrays], axis=0)  # [3]
        return (-m, m)
    return (min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays))


def reduce_stages(stages: FeatureStages, reduction: str = "mean_abs", color_scale: str = "per_level",
                  which: Optional[Sequence[str]] = None) -> ReducedMaps:
    """Reduce every map of `which` stages (default all) and compute the colour ranges:
    "per_level" one range per level over the stages shown (maps of a level compare across blocks),
    "global" one range for everything shown, "per_map" each map its own range (shapes only: the
    magnitudes no longer compare)."""
    if color_scale not in COLOR_SCALES:
        raise ValueError(f"color_scale must be one of {COLOR_SCALES}, got {color_scale!r}")
    _check_reduction(reduction)
    which = list(stages.stages if which is None else which)
    unknown = [s for s in which if s not in stages.maps]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; available: {stages.stages}")
    maps = {s: [reduce_feature(x, reduction) for x in stages.maps[s]] for s in which}
    levels = range(len(stages.maps[which[0]]))
    pca = reduction == "pca"
    if color_scale == "per_map":
        ranges = {(s, l): _range([maps[s][l]], pca) for s in which for l in levels}
    elif color_scale == "per_level":
        per_level = {l: _range([maps[s][l] for s in which], pca) for l in levels}
        ranges = {(s, l): per_level[l] for s in which for l in levels}
    else:
        g = _range([maps[s][l] for s in which for l in levels], pca)
        ranges = {(s, l): g for s in which for l in levels}
    return ReducedMaps(reduction, color_scale, which, maps, ranges)


def colorize(normalized: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """[h, w] in [0, 1] -> [h, w, 3] uint8 with a matplotlib colormap; [h, w, 3] is taken as RGB."""
    if normalized.ndim == 3:
        return (normalized * 255.0 + 0.5).astype(np.uint8)
    import matplotlib

    rgba = matplotlib.colormaps[cmap](normalized)
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, normalized: np.ndarray, opacity: float = 0.6, cmap: str = "inferno") -> np.ndarray:
    """The coloured map resized (bilinear) to the image and blended over it:
    (1 - opacity) * image + opacity * colour. Returns HxWx3 uint8."""
    from PIL import Image

    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    h, w = image.shape[:2]
    color = Image.fromarray(colorize(normalized, cmap)).resize((w, h), Image.BILINEAR)
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * np.asarray(color, np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def paper_stages(num_blocks: int) -> list[str]:
    """Figure 4's rows: before the head and after blocks 2, 4, 6 (every other block of any tower)."""
    picks = list(range(2, num_blocks + 1, 2)) or list(range(1, num_blocks + 1))
    return ["before head"] + [f"block {b}" for b in picks]


def plot_feature_grid(stages: FeatureStages, reduction: str = "mean_abs", color_scale: str = "per_level",
                      rows: Optional[Sequence[str]] = None, opacity: float = 0.6, cmap: str = "inferno"):
    """Paper-style grid: rows = stages (default `paper_stages`), columns = levels P3..P7, each cell
    the reduced map overlaid on the image."""
    import matplotlib.pyplot as plt

    rows = list(paper_stages(stages.num_blocks) if rows is None else rows)
    reduced = reduce_stages(stages, reduction, color_scale, which=rows)
    num_levels = reduced.num_levels
    fig, axes = plt.subplots(len(rows), num_levels, figsize=(2.2 * num_levels, 2.0 * len(rows) + 0.6),
                             squeeze=False)
    for r, stage in enumerate(rows):
        for level in range(num_levels):
            ax = axes[r, level]
            ax.imshow(overlay(stages.image, reduced.normalized(stage, level), opacity, cmap))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(level_label(level, num_levels).replace(" (", "\n("), fontsize=7)
            if level == 0:
                ax.set_ylabel(stage, fontsize=8)
    scale_text = {"per_level": "one colour range per level across rows", "global": "one colour range for all maps",
                  "per_map": "each map its own colour range"}[color_scale]
    fig.text(0.01, 0.005, f"reduction: {reduction}; {scale_text}; opacity {opacity:g}", fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plotly_feature_grid(stages: FeatureStages, reduction: str = "mean_abs", color_scale: str = "per_level",
                        rows: Optional[Sequence[str]] = None, opacity: float = 0.6, cmap: str = "inferno"):
    """The same grid for the app (images in plotly subplots)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = list(paper_stages(stages.num_blocks) if rows is None else rows)
    reduced = reduce_stages(stages, reduction, color_scale, which=rows)
    num_levels = reduced.num_levels
    fig = make_subplots(rows=len(rows), cols=num_levels, column_titles=[level_name(l) for l in range(num_levels)],
                        row_titles=rows, horizontal_spacing=0.01, vertical_spacing=0.02)
    for r, stage in enumerate(rows):
        for level in range(num_levels):
            fig.add_trace(go.Image(z=overlay(stages.image, reduced.normalized(stage, level), opacity, cmap)),
                          row=r + 1, col=level + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(height=180 * len(rows) + 60, margin=dict(l=10, r=60, t=40, b=10))
    return fig

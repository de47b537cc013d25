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

Colour scale (`color_scale`, `COLOR_SCALE_TEXT`): ``"per_map"`` (default) gives each (stage, level)
map its own range, so that every map shows where it responds; ``"per_stage"`` one range per row
(stage), so that the levels of one stage compare; ``"per_level"`` one range per level shared by every
stage shown, and ``"global"`` one range for everything. The shared scales compare magnitudes, and
magnitudes differ across stages by an order of magnitude: the FPN maps (before the head) are not
normalised, the blocks end in GroupNorm and DyReLU (demo model, sample 0, P3, mean |x|: FPN 0.61-3.07,
block 2 0.07-0.45), so under a shared scale the block rows look dark because of their magnitude, not
because of where they respond. The range is [min, max] of the reduced maps in the group (only the
part covering the image, not the padding).

Placement (`overlay`): a level's map keeps ceil(h / stride) x ceil(w / stride) cells, and cell (i, j)
covers pixels [i * stride, (i + 1) * stride) of the resized (network input) image, so the last row
and column of cells reach beyond the image. With the geometry known (`FeatureStages.resized_size`
and `strides`, see `with_geometry`) each cell is drawn where it lies and the part beyond the image is
cropped; cell centres land where the sampling-point view puts them (`cell_centre_pixel`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from dyhead.trace import TraceSpec

from .levels import level_label

__all__ = [
    "REDUCTIONS",
    "FeatureStages",
    "ReducedMaps",
    "feature_stages",
    "stage_trace_spec",
    "stages_from_trace",
    "reduce_feature",
    "reduce_stages",
    "COLOR_SCALES",
    "COLOR_SCALE_TEXT",
    "color_scale_note",
    "with_geometry",
    "cell_centre_pixel",
    "overlay",
    "stage_overlay",
    "colorize",
    "paper_stages",
    "plot_feature_grid",
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
    # Where the cells lie (`with_geometry`): the network-input size (h, w) the image was resized to,
    # and each level's stride. None: unknown, and `overlay` stretches each map over the whole image.
    resized_size: Optional[tuple[int, int]] = None
    strides: Optional[tuple[int, ...]] = None
    #: maps reduced while they were recorded: reduced[reduction][stage][level] ([h, w] or [h, w, 3]);
    #: `maps` is then empty and only these reductions are available (`stage_trace_spec`).
    reduced: dict = dataclasses.field(default_factory=dict)
    channels: int = 0

    def reduced_map(self, stage: str, level: int, reduction: str) -> np.ndarray:
        """One reduced map: precomputed when available, else reduced from `maps`."""
        if reduction in self.reduced:
            return self.reduced[reduction][stage][level]
        if not self.maps:
            raise ValueError(f"reduction {reduction!r} was not computed for these maps "
                             f"(available: {sorted(self.reduced)})")
        return reduce_feature(self.maps[stage][level], reduction)


def with_geometry(stages: FeatureStages, resized_size: Optional[Sequence[int]] = None,
                  strides: Optional[Sequence[int]] = None, model=None) -> FeatureStages:
    """A copy of `stages` that knows where its cells lie: the resized (network input) size and the
    level strides, given, or taken from `model` (its preprocessing of `stages.image` and its config)."""
    if model is not None:
        if resized_size is None:
            _, sizes, _ = model.preprocess([stages.image])
            resized_size = sizes[0]
        if strides is None:
            strides = model.config.strides
    if resized_size is None or strides is None:
        raise ValueError("with_geometry needs resized_size and strides, or a model")
    return dataclasses.replace(stages, resized_size=(int(resized_size[0]), int(resized_size[1])),
                               strides=tuple(int(s) for s in strides))


def _stage_names(num_blocks: int) -> list[str]:
    names = ["before head"]
    for b in range(1, num_blocks + 1):
        names += [f"block {b}, spatial+scale", f"block {b}"]
    return names


def stage_trace_spec(reductions: Optional[Sequence[str]] = None) -> TraceSpec:
    """The `TraceSpec` of the feature-map stages: tower input, each block's spatial+scale mean and
    output, cut to the image. With `reductions`, each map is reduced as soon as it is computed and
    only the reduced maps are kept (``{reduction: [h, w] or [h, w, 3]}`` per map, see `reduce_feature`);
    without, the [C, h, w] maps are kept (float32, on the CPU). Batch of one image."""
    if reductions is not None:
        reductions = tuple(dict.fromkeys(reductions))
        for r in reductions:
            _check_reduction(r)

        def keep(x: Tensor, level: int):
            x = x[0].float().cpu()
            return {"channels": int(x.shape[0]), **{r: reduce_feature(x, r) for r in reductions}}
    else:
        def keep(x: Tensor, level: int):
            return x[0].float().cpu()

    return TraceSpec(pyramid=True, mid=True, outputs=True, crop=True, reduce=keep)


def stages_from_trace(trace, image: np.ndarray, resized_size: Sequence[int], strides: Sequence[int]) -> FeatureStages:
    """`FeatureStages` from a tower trace recorded with `stage_trace_spec` (by `DyHeadDetector.infer`)."""
    rows = {"before head": list(trace.inputs)}
    for b, block in enumerate(trace.blocks, start=1):
        rows[f"block {b}, spatial+scale"] = [lt.after_spatial_scale for lt in block.levels]
        rows[f"block {b}"] = [lt.output for lt in block.levels]
    first = rows["before head"][0]
    if isinstance(first, dict):  # reduced while recorded
        names = [k for k in first if k != "channels"]
        reduced = {r: {stage: [m[r] for m in maps] for stage, maps in rows.items()} for r in names}
        maps, channels = {}, int(first["channels"])
    else:
        reduced, maps, channels = {}, rows, int(first.shape[0])
    return FeatureStages(image=image, stages=_stage_names(len(trace.blocks)), maps=maps, num_blocks=len(trace.blocks),
                         resized_size=(int(resized_size[0]), int(resized_size[1])),
                         strides=tuple(int(s) for s in strides), reduced=reduced, channels=channels)


def feature_stages(model, image: np.ndarray, switches=None, coarser_branch=None,
                   reductions: Optional[Sequence[str]] = None, precision: str = "auto") -> FeatureStages:
    """Run the model once (backbone and tower, no head) on one HxWx3 uint8 RGB image through
    `DyHeadDetector.infer` and collect every stage (see `stage_trace_spec` for `reductions`)."""
    result = model.infer([image], switches=switches, coarser_branch=coarser_branch, detections=False,
                         trace=stage_trace_spec(reductions), precision=precision)
    return stages_from_trace(result.trace, image, result.resized_sizes[0], model.config.strides)


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
    """First three principal components of the pixel vectors of [C, H, W] -> [H, W, 3].

    The components are the top eigenvectors of the C x C scatter matrix of the centred pixel vectors
    (accumulated in float32, decomposed in float64): the same components as an SVD of the pixels, at
    a fraction of the cost for maps of many pixels (a full-size P3 map has ~17k)."""
    c, h, w = x.shape
    pixels = x.reshape(c, h * w).T.float()  # [HW, C]
    centered = pixels - pixels.mean(0, keepdim=True)
    k = min(3, c, h * w)
    if h * w > 1:
        scatter = (centered.T @ centered).double()  # [C, C]
        _, vectors = torch.linalg.eigh(scatter)  # ascending eigenvalues
        top = vectors[:, -k:].flip(1).float()  # [C, k], largest first
        proj = (centered @ top).double()  # [HW, k]
    else:
        proj = centered[:, :0].double().new_zeros(h * w, k)
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


COLOR_SCALES = ("per_map", "per_stage", "per_level", "global")

#: What each colour scale means, for captions, figure notes and CSV headers.
COLOR_SCALE_TEXT = {
    "per_map": "each map (stage, level) its own colour range: where each map responds; brightness does not "
               "compare between maps",
    "per_stage": "one colour range per row (stage): the levels of a stage compare; rows do not",
    "per_level": "shared across rows, one colour range per level: a level compares across stages, but the FPN "
                 "row is about 10x larger than the block outputs, which then look dark",
    "global": "shared by every map shown: magnitudes compare everywhere, the FPN row dominates",
}


def color_scale_note(color_scale: str) -> str:
    """'colour scale per_map: each map (stage, level) its own colour range ...' (for notes and captions)."""
    if color_scale not in COLOR_SCALE_TEXT:
        raise ValueError(f"color_scale must be one of {COLOR_SCALES}, got {color_scale!r}")
    return f"colour scale {color_scale}: {COLOR_SCALE_TEXT[color_scale]}"


def _range(arrays: Sequence[np.ndarray], pca: bool) -> tuple:
    if pca:
        m = np.max([np.abs(a).reshape(-1, 3).max(0) for a in arrays], axis=0)  # [3]
        return (-m, m)
    return (min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays))


def reduce_stages(stages: FeatureStages, reduction: str = "mean_abs", color_scale: str = "per_map",
                  which: Optional[Sequence[str]] = None) -> ReducedMaps:
    """Reduce every map of `which` stages (default all) and compute the colour ranges
    (`COLOR_SCALE_TEXT`): "per_map" each map its own range (where it responds; magnitudes no longer
    compare), "per_stage" one range per stage over its levels, "per_level" one range per level over the
    stages shown, "global" one range for everything shown."""
    if color_scale not in COLOR_SCALES:
        raise ValueError(f"color_scale must be one of {COLOR_SCALES}, got {color_scale!r}")
    _check_reduction(reduction)
    which = list(stages.stages if which is None else which)
    unknown = [s for s in which if s not in stages.stages]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; available: {stages.stages}")
    num_levels = len(stages.maps[which[0]]) if stages.maps else len(next(iter(stages.reduced.values()))[which[0]])
    maps = {s: [stages.reduced_map(s, l, reduction) for l in range(num_levels)] for s in which}
    levels = range(num_levels)
    pca = reduction == "pca"
    if color_scale == "per_map":
        ranges = {(s, l): _range([maps[s][l]], pca) for s in which for l in levels}
    elif color_scale == "per_stage":
        per_stage = {s: _range([maps[s][l] for l in levels], pca) for s in which}
        ranges = {(s, l): per_stage[s] for s in which for l in levels}
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


def cell_centre_pixel(index, stride: int, scale: float = 1.0):
    """Image pixel (a coordinate along one axis) of the centre of level cell `index`: cell u covers
    resized-image pixels [u * stride, (u + 1) * stride), its centre (u + 0.5) * stride (the anchor
    centres); `scale` maps resized-image pixels to the image drawn (original / resized size)."""
    return (np.asarray(index, dtype=np.float64) + 0.5) * stride * scale


def _cell_weights(out_size: int, cells: int, stride: Optional[int], resized: Optional[int]) -> np.ndarray:
    """[out_size, cells] bilinear weights that sample a row (or column) of cells at the centres of
    `out_size` image pixels. With the geometry (stride, resized length) pixel p lies at resized-image
    coordinate (p + 0.5) * resized / out_size and cell coordinate that / stride - 0.5, so cell centres
    land at `cell_centre_pixel` and the cells beyond the image are cropped; without it the cells are
    stretched over the whole image."""
    centres = np.arange(out_size, dtype=np.float64) + 0.5
    if stride is None or resized is None:
        u = centres * cells / out_size - 0.5
    else:
        u = centres * (resized / out_size) / stride - 0.5
    u = np.clip(u, 0.0, cells - 1.0)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, cells - 1)
    frac = u - lo
    weights = np.zeros((out_size, cells), np.float64)
    np.add.at(weights, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(out_size), hi), frac)
    return weights


def overlay(image: np.ndarray, normalized: np.ndarray, opacity: float = 0.6, cmap: str = "inferno",
            stride: Optional[int] = None, resized_size: Optional[Sequence[int]] = None) -> np.ndarray:
    """The coloured map placed on the image and blended: (1 - opacity) * image + opacity * colour.

    With `stride` and `resized_size` (the network-input size (h, w) of the image) each cell is drawn
    where it lies (cell (i, j) covers resized-image pixels [i * stride, (i + 1) * stride), scaled to the
    pixels of `image`, which may be the original or a downscaled copy), colours interpolated bilinearly
    between cell centres, and the part of the last cells beyond the image cropped. Without them the
    map is stretched over the whole image, which is right only when the image is a whole number of
    cells. Returns HxWx3 uint8."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if (stride is None) != (resized_size is None):
        raise ValueError("give both stride and resized_size, or neither")
    h, w = image.shape[:2]
    color = colorize(normalized, cmap).astype(np.float64)  # [hc, wc, 3]
    rh, rw = (None, None) if resized_size is None else (int(resized_size[0]), int(resized_size[1]))
    wy = _cell_weights(h, color.shape[0], stride, rh)  # [h, hc]
    wx = _cell_weights(w, color.shape[1], stride, rw)  # [w, wc]
    placed = wx @ np.tensordot(wy, color, axes=(1, 0))  # [h, w, 3]
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * placed.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def paper_stages(num_blocks: int) -> list[str]:
    """Figure 4's rows: before the head and after blocks 2, 4, 6 (every other block of any tower)."""
    picks = list(range(2, num_blocks + 1, 2)) or list(range(1, num_blocks + 1))
    return ["before head"] + [f"block {b}" for b in picks]


def _cell_geometry(stages: FeatureStages, level: int) -> dict:
    """overlay's keyword arguments that place level `level`'s cells (empty when unknown)."""
    if stages.resized_size is None or stages.strides is None:
        return {}
    return {"stride": stages.strides[level], "resized_size": stages.resized_size}


def stage_overlay(stages: FeatureStages, reduced: ReducedMaps, stage: str, level: int, opacity: float = 0.6,
                  cmap: str = "inferno", image: Optional[np.ndarray] = None) -> np.ndarray:
    """One cell of the grid: the reduced map of (stage, level) in its colour range, placed on `image`
    (default the stages' image; a downscaled copy works the same)."""
    image = stages.image if image is None else image
    return overlay(image, reduced.normalized(stage, level), opacity, cmap, **_cell_geometry(stages, level))


def plot_feature_grid(stages: FeatureStages, reduction: str = "mean_abs", color_scale: str = "per_map",
                      rows: Optional[Sequence[str]] = None, opacity: float = 0.6, cmap: str = "inferno"):
    """Paper-style grid: rows = stages (default `paper_stages`), columns = levels P3..P7, each cell
    the reduced map overlaid on the image; the colour scale is stated under the grid."""
    import matplotlib.pyplot as plt

    rows = list(paper_stages(stages.num_blocks) if rows is None else rows)
    reduced = reduce_stages(stages, reduction, color_scale, which=rows)
    num_levels = reduced.num_levels
    fig, axes = plt.subplots(len(rows), num_levels, figsize=(2.2 * num_levels, 2.0 * len(rows) + 0.8),
                             squeeze=False)
    for r, stage in enumerate(rows):
        for level in range(num_levels):
            ax = axes[r, level]
            ax.imshow(stage_overlay(stages, reduced, stage, level, opacity, cmap))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(level_label(level, num_levels).replace(" (", "\n("), fontsize=7)
            if level == 0:
                ax.set_ylabel(stage, fontsize=8)
    import textwrap

    note = f"reduction: {reduction}; {color_scale_note(color_scale)}; {cmap}, dark = low; opacity {opacity:g}"
    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(note, 150)), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig

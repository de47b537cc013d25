"""Two models side by side on the same images: two checkpoints, or one checkpoint under two
coarser-branch modes or two sets of attention switches.

* detections: per image, the boxes of A and B matched within a class by IoU (`match_detections`):
  matched, only in A, only in B;
* feature maps: the block outputs of A and B reduced the same way and drawn on one colour scale per
  level shared by both (`compare_feature_maps`);
* scale ratios: `ratio_summary` of each model over the same images;
* AP: COCOeval (`dyhead.evaluate.coco_evaluate`) of each model's detections on the same images.

One `DyHeadDetector.infer` pass per (model, image) gives the detections and the scale weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from dyhead.trace import TraceSpec

from .ablation import _percent  # COCOeval's fraction in percent, -1 -> NaN
from .detection_diff import match_detections
from .levels import level_name

__all__ = ["Side", "ImagePass", "run_side", "compare_detections", "compare_ap", "compare_scale_ratios",
           "compare_feature_maps", "pair_maps", "plot_compare_maps", "DETECTION_COLUMNS"]

DETECTION_COLUMNS = ("image_id", "file_name", "status", "class", "score_a", "score_b", "iou",
                     "x1", "y1", "x2", "y2")


@dataclass
class Side:
    """One side of the comparison: a loaded model, how it is run, and its label."""

    model: object
    label: str
    switches: object = None
    coarser: Optional[str] = None


@dataclass
class ImagePass:
    """What one side computed on the images: detections per image and the scale weights
    (`analysis.scale_ratios.WEIGHT_COLUMNS`)."""

    detections: dict = field(default_factory=dict)  # image_id -> Detections (original pixels)
    weights: pd.DataFrame = None
    image_ids: list = field(default_factory=list)


def run_side(side: Side, records, images: Optional[dict] = None) -> ImagePass:
    """One pass per image (detections + scale weights) over `records` (`analysis.sources.ImageRecord`);
    `images`: image_id -> array, to reuse decoded images."""
    from dyhead.preprocess import load_image

    from .scale_ratios import WEIGHT_COLUMNS, weights_from_trace

    out = ImagePass()
    rows = []
    for rec in records:
        image = images[rec.image_id] if images and rec.image_id in images else load_image(rec.path)
        res = side.model.infer([image], switches=side.switches, coarser_branch=side.coarser,
                               trace=TraceSpec(scale=True))
        out.detections[rec.image_id] = res.detections[0]
        out.image_ids.append(rec.image_id)
        if res.trace is not None and res.trace.blocks:
            rows += weights_from_trace(res.trace, [rec])
    out.weights = pd.DataFrame(rows, columns=list(WEIGHT_COLUMNS))
    return out


def compare_detections(a: ImagePass, b: ImagePass, records, class_names: Sequence[str],
                       score_threshold: float = 0.3, iou_threshold: float = 0.5) -> pd.DataFrame:
    """One row per box (`DETECTION_COLUMNS`): status "matched" (box of A; iou and both scores),
    "only A" or "only B"; boxes in original-image pixels, from `score_threshold` up."""
    rows = []
    for rec in records:
        diff = match_detections(a.detections[rec.image_id], b.detections[rec.image_id], iou_threshold,
                                score_threshold, class_names)
        for m in diff.matched.itertuples():
            x1, y1, x2, y2 = (float(v) for v in diff.ref.boxes[m.ref_index])
            rows.append((rec.image_id, rec.file_name, "matched", m._4, m.ref_score, m.other_score, m.iou, x1, y1, x2, y2))
        for r in diff.removed.itertuples():
            rows.append((rec.image_id, rec.file_name, "only A", r._3, r.score, np.nan, np.nan, r.x1, r.y1, r.x2, r.y2))
        for r in diff.added.itertuples():
            rows.append((rec.image_id, rec.file_name, "only B", r._3, np.nan, r.score, np.nan, r.x1, r.y1, r.x2, r.y2))
    return pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))


def compare_ap(sides: Sequence[Side], passes: Sequence[ImagePass], data_root, split: str = "val") -> pd.DataFrame:
    """AP (COCOeval, percent) of each side's detections on the images of its pass."""
    from dyhead.coco_results import detections_to_coco
    from dyhead.data.coco import load_coco
    from dyhead.evaluate import coco_evaluate

    from .sources import resolve_dataset

    coco_gt = load_coco(resolve_dataset(data_root, split).annotation_file)
    rows = []
    for side, p in zip(sides, passes):
        results = []
        for image_id in p.image_ids:
            results += detections_to_coco(p.detections[image_id], side.model.config.category_ids, image_id=image_id)
        metrics = coco_evaluate(coco_gt, results, list(p.image_ids))
        rows.append({"model": side.label, "images": len(p.image_ids),
                     **{k: _percent(metrics[k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}})
    return pd.DataFrame(rows)


def compare_scale_ratios(sides: Sequence[Side], passes: Sequence[ImagePass]) -> pd.DataFrame:
    """`ratio_summary` of each side (column "model"); empty for a side without scale weights."""
    from .scale_ratios import compute_ratios, ratio_summary

    frames = [ratio_summary(compute_ratios(p.weights)).assign(model=s.label) for s, p in zip(sides, passes)
              if len(p.weights)]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    return df[["model"] + [c for c in df.columns if c != "model"]]


@dataclass
class MapPair:
    """Reduced maps of A and B for the same stages, with one colour range per (stage, level) shared by both."""

    stages: list
    maps_a: dict  # stage -> list over levels of [h, w]
    maps_b: dict
    ranges: dict  # (stage, level) -> (lo, hi)
    table: pd.DataFrame


def compare_feature_maps(a: Side, b: Side, image: np.ndarray, stages: Optional[Sequence[str]] = None,
                         reduction: str = "mean_abs") -> MapPair:
    """The block outputs (default: before head and the last block) of A and B on one image, reduced
    by `reduction`; each (stage, level) gets one colour range covering both models' maps."""
    from .feature_maps import feature_stages

    sa = feature_stages(a.model, image, a.switches, a.coarser, reductions=[reduction])
    sb = feature_stages(b.model, image, b.switches, b.coarser, reductions=[reduction])
    return pair_maps(sa, sb, stages, reduction)


def pair_maps(sa, sb, stages: Optional[Sequence[str]] = None, reduction: str = "mean_abs") -> MapPair:
    """Two `FeatureStages` of the same image (reduced by `reduction`) as a `MapPair` on shared ranges."""
    if stages is None:
        stages = ["before head"] + ([f"block {sa.num_blocks}"] if sa.num_blocks else [])
    stages = [s for s in stages if s in sa.stages and s in sb.stages]
    L = len(sa.reduced[reduction][stages[0]]) if reduction in sa.reduced else len(sa.maps[stages[0]])
    maps_a = {s: [np.asarray(sa.reduced_map(s, l, reduction)) for l in range(L)] for s in stages}
    maps_b = {s: [np.asarray(sb.reduced_map(s, l, reduction)) for l in range(L)] for s in stages}
    ranges, rows = {}, []
    for s in stages:
        for l, (ma, mb) in enumerate(zip(maps_a[s], maps_b[s])):
            lo, hi = float(min(ma.min(), mb.min())), float(max(ma.max(), mb.max()))
            ranges[(s, l)] = (lo, hi)
            same = ma.shape == mb.shape
            rows.append({"stage": s, "level": l, "level_name": level_name(l), "mean_a": float(ma.mean()),
                         "mean_b": float(mb.mean()),
                         "max_abs_diff": float(np.abs(ma - mb).max()) if same else np.nan,
                         "color_min": lo, "color_max": hi})
    return MapPair(list(stages), maps_a, maps_b, ranges, pd.DataFrame(rows))


def plot_compare_maps(pair: MapPair, label_a: str, label_b: str):
    """Rows: each stage for A then B; columns: levels; one colour range per (stage, level) for both."""
    import matplotlib.pyplot as plt

    L = len(next(iter(pair.maps_a.values())))
    fig, axes = plt.subplots(2 * len(pair.stages), L, figsize=(2.2 * L, 2.0 * 2 * len(pair.stages)), squeeze=False)
    for i, s in enumerate(pair.stages):
        for k, (label, maps) in enumerate(((label_a, pair.maps_a), (label_b, pair.maps_b))):
            for l in range(L):
                lo, hi = pair.ranges[(s, l)]
                ax = axes[2 * i + k, l]
                ax.imshow(maps[s][l], cmap="inferno", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if l == 0:
                    ax.set_ylabel(f"{label}\n{s}", fontsize=7)
                if 2 * i + k == 0:
                    ax.set_title(level_name(l), fontsize=8)
                ax.set_xlabel(f"[{lo:.3g}, {hi:.3g}]", fontsize=6)
    fig.suptitle("one colour range per stage and level, shared by both models", fontsize=8)
    fig.tight_layout()
    return fig

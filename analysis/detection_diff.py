"""What changes in one image's detections between two runs of a model (e.g. an attention off).

Boxes are matched within a class, greedily by IoU: every (reference, other) pair of the same label
with IoU >= `iou_threshold` is a candidate; candidates are taken in decreasing IoU (ties: higher
reference score first) and a pair is kept when neither box is matched yet. Unmatched reference boxes
are "removed", unmatched other boxes "added". Only boxes scoring at least `score_threshold` take part.

Shape legend: M reference detections, M' other detections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

__all__ = ["DetectionDiff", "match_detections", "diff_summary", "draw_detections", "plot_detection_pair",
           "plotly_detection_pair"]


@dataclass
class DetectionDiff:
    """matched: one row per pair (ref_index, other_index, label, iou, ref_score, other_score,
    score_change, center_shift in pixels); removed / added: one row per box (index, label, score,
    x1, y1, x2, y2). Indices refer to the thresholded detections (`ref` / `other` below)."""

    matched: pd.DataFrame
    removed: pd.DataFrame
    added: pd.DataFrame
    ref: object  # Detections after the score threshold
    other: object

    @property
    def summary(self) -> dict:
        return diff_summary(self)


def _threshold(dets, score_threshold: float):
    from dyhead.postprocess import Detections

    keep = dets.scores >= score_threshold
    return Detections(dets.boxes[keep].float().cpu(), dets.scores[keep].float().cpu(), dets.labels[keep].cpu())


def _box_rows(dets, indices: Sequence[int], class_names: Optional[Sequence[str]]) -> pd.DataFrame:
    rows = []
    for i in indices:
        x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
        label = int(dets.labels[i])
        rows.append({"index": int(i), "label": label, "class": class_names[label] if class_names else str(label),
                     "score": float(dets.scores[i]), "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    return pd.DataFrame(rows, columns=["index", "label", "class", "score", "x1", "y1", "x2", "y2"])


def match_detections(ref, other, iou_threshold: float = 0.5, score_threshold: float = 0.3,
                     class_names: Optional[Sequence[str]] = None) -> DetectionDiff:
    """Match `other` detections to `ref` ones (both `Detections`, same image and pixel frame)."""
    ref = _threshold(ref, score_threshold)
    other = _threshold(other, score_threshold)
    iou = box_iou(ref.boxes, other.boxes) if len(ref) and len(other) else torch.zeros(len(ref), len(other))  # [M, M']
    same = ref.labels[:, None] == other.labels[None, :]  # [M, M']
    cand = torch.nonzero(same & (iou >= iou_threshold)).tolist()
    cand.sort(key=lambda ij: (-float(iou[ij[0], ij[1]]), -float(ref.scores[ij[0]]), ij[0], ij[1]))
    used_ref, used_other, pairs = set(), set(), []
    for i, j in cand:
        if i not in used_ref and j not in used_other:
            used_ref.add(i)
            used_other.add(j)
            pairs.append((i, j))
    rows = []
    for i, j in sorted(pairs):
        c_ref = (ref.boxes[i, :2] + ref.boxes[i, 2:]) / 2
        c_other = (other.boxes[j, :2] + other.boxes[j, 2:]) / 2
        label = int(ref.labels[i])
        rows.append({
            "ref_index": i, "other_index": j, "label": label,
            "class": class_names[label] if class_names else str(label),
            "iou": float(iou[i, j]), "ref_score": float(ref.scores[i]), "other_score": float(other.scores[j]),
            "score_change": float(other.scores[j] - ref.scores[i]),
            "center_shift": float(torch.linalg.vector_norm(c_other - c_ref)),
        })
    matched = pd.DataFrame(rows, columns=["ref_index", "other_index", "label", "class", "iou", "ref_score",
                                          "other_score", "score_change", "center_shift"])
    removed = _box_rows(ref, [i for i in range(len(ref)) if i not in used_ref], class_names)
    added = _box_rows(other, [j for j in range(len(other)) if j not in used_other], class_names)
    return DetectionDiff(matched, removed, added, ref, other)


def diff_summary(diff: DetectionDiff) -> dict:
    m = diff.matched
    return {
        "reference": len(diff.ref),
        "other": len(diff.other),
        "matched": len(m),
        "added": len(diff.added),
        "removed": len(diff.removed),
        "mean_abs_score_change": float(m.score_change.abs().mean()) if len(m) else float("nan"),
        "mean_iou": float(m.iou.mean()) if len(m) else float("nan"),
        "max_center_shift": float(m.center_shift.max()) if len(m) else float("nan"),
    }


def draw_detections(ax, image: np.ndarray, dets, class_names: Optional[Sequence[str]] = None,
                    highlight: Optional[set] = None, highlight_color: str = "#ff00ff") -> None:
    """Image with boxes on a matplotlib axis; boxes whose index is in `highlight` are drawn in
    `highlight_color` (e.g. removed or added ones), the others in green."""
    from matplotlib.patches import Rectangle

    ax.imshow(image)
    highlight = highlight or set()
    # Highlighted boxes (the changes) last, so that they are drawn on top.
    for i in sorted(range(len(dets)), key=lambda i: i in highlight):
        x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
        color = highlight_color if i in highlight else "#00e000"
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, ec=color))
        label = int(dets.labels[i])
        name = class_names[label] if class_names else str(label)
        ax.text(x1, y1, f"{name} {float(dets.scores[i]):.2f}", fontsize=5, color="white", va="bottom",
                bbox=dict(facecolor=color, alpha=0.6, pad=0.5, lw=0))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_detection_pair(image: np.ndarray, diff: DetectionDiff, ref_title: str, other_title: str,
                        class_names: Optional[Sequence[str]] = None):
    """Side by side: reference detections (removed ones in magenta) and the other run (added ones in
    orange); matched boxes in green."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    draw_detections(axes[0], image, diff.ref, class_names, set(diff.removed["index"]), "#ff00ff")
    draw_detections(axes[1], image, diff.other, class_names, set(diff.added["index"]), "#ff8c00")
    s = diff.summary
    axes[0].set_title(f"{ref_title}: {s['reference']} boxes ({s['removed']} removed in magenta)", fontsize=8)
    axes[1].set_title(f"{other_title}: {s['other']} boxes ({s['added']} added in orange)", fontsize=8)
    fig.tight_layout()
    return fig


def plotly_detection_pair(image: np.ndarray, diff: DetectionDiff, ref_title: str, other_title: str,
                          class_names: Optional[Sequence[str]] = None):
    """The same side-by-side view for the app: boxes as rectangles over the image, hover text per box."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = diff.summary
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.02, subplot_titles=[
        f"{ref_title}: {s['reference']} boxes ({s['removed']} removed)",
        f"{other_title}: {s['other']} boxes ({s['added']} added)",
    ])
    panels = ((diff.ref, set(diff.removed["index"]), "#ff00ff"), (diff.other, set(diff.added["index"]), "#ff8c00"))
    for col, (dets, highlight, color) in enumerate(panels, start=1):
        fig.add_trace(go.Image(z=image), row=1, col=col)
        for i in range(len(dets)):
            x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
            label = int(dets.labels[i])
            name = class_names[label] if class_names else str(label)
            c = color if i in highlight else "#00e000"
            fig.add_trace(go.Scatter(x=[x1, x2, x2, x1, x1], y=[y1, y1, y2, y2, y1], mode="lines",
                                     line=dict(color=c, width=2), hoverinfo="text", showlegend=False,
                                     text=f"{name} {float(dets.scores[i]):.2f}"), row=1, col=col)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_layout(margin=dict(l=5, r=5, t=40, b=5))
    return fig

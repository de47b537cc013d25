"""A detection probe: what the DyHead tower computed at the anchor point that scored one detection.

ATSS scores each detection at one anchor point of one pyramid level (`dyhead.postprocess.Detections`
carries both: ``levels`` and ``locations`` = y * W_l + x on the level's padded map). At that level and
cell, per block, the probe collects

* the scale weights of the level (one per source: finer l-1, the level itself, coarser l+1);
* where each branch's deformable conv samples, in image pixels: the level's own branch (stride 1 on
  level l), the finer branch (stride 2 on level l-1: tap k of cell (y, x) reads (2y + i - 1 + dy,
  2x + j - 1 + dx) in level l-1 cells) and the coarser branch (see `branch_sampling_points`);
* the DyReLU coefficients of the level (pooled per level, so one set per image and level);
* the reduced feature maps cropped around the box (`crop_maps`);

and, from extra passes with attentions switched off, whether the detection survives each global
knock-out (`knockout_effect`). Everything here works on plain arrays (numpy, pandas), so the app's
cached per-image results and a fresh `DyHeadDetector.infer` trace feed it alike.

Shape legend: L levels, H_l x W_l the padded map of level l, C channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .feature_maps import cell_centre_pixel
from .levels import level_name

__all__ = ["ProbeCell", "detection_cells", "branch_sampling_points", "probe_blocks", "probe_points", "crop_maps",
           "knockout_effect", "BRANCHES"]

#: Branch names in the order the page lists them, with the source level relative to the output level.
BRANCHES = (("finer", -1), ("same", 0), ("coarser", +1))


@dataclass(frozen=True)
class ProbeCell:
    """One anchor point: pyramid level (0 = P3) and cell (row, column) on its padded map."""

    level: int
    y: int
    x: int


def detection_cells(levels: np.ndarray, locations: np.ndarray, level_sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    """(level, y, x) [M, 3] of detections from their level and location y * W_l + x (`Detections`)."""
    levels = np.asarray(levels, dtype=np.int64)
    locations = np.asarray(locations, dtype=np.int64)
    widths = np.array([w for _, w in level_sizes], dtype=np.int64)
    w = widths[levels] if len(levels) else np.zeros(0, dtype=np.int64)
    return np.stack([levels, locations // np.maximum(w, 1), locations % np.maximum(w, 1)], axis=1) \
        if len(levels) else np.zeros((0, 3), dtype=np.int64)


def _coarser_read(offset: np.ndarray, mask: np.ndarray, size: tuple[int, int], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The offsets and masks the coarser branch's conv reads at level l+1's `size` (`dyhead.block`)."""
    import torch

    from dyhead.block import _coarser_offsets
    from dyhead.config import CoarserBranchMode

    o, m = _coarser_offsets(torch.from_numpy(np.ascontiguousarray(offset))[None],
                            torch.from_numpy(np.ascontiguousarray(mask))[None], size, CoarserBranchMode(mode))
    return o[0].numpy(), m[0].numpy()


def branch_sampling_points(offsets: Sequence[np.ndarray], masks: Sequence[np.ndarray], cell: ProbeCell,
                           strides: Sequence[int], scale_yx: tuple[float, float],
                           coarser_mode: str = "official") -> pd.DataFrame:
    """Where each branch of output level `cell.level` samples for cell (y, x), in original-image pixels.

    offsets[l]: [18, H_l, W_l] (dy, dx of tap k = 3i + j in channels 2k, 2k+1, in cells of the map the
    conv reads), masks[l]: [9, H_l, W_l], of one block. Branches:

    * same: stride-1 conv on level l: (y + i - 1 + dy, x + j - 1 + dx) in level-l cells;
    * finer: stride-2 conv on level l-1 with the same offsets: (2y + i - 1 + dy, 2x + j - 1 + dx) in
      level l-1 cells;
    * coarser, ``upsample_first``: the conv runs on level l+1 upsampled to level l's size
      (bilinear, align_corners=True), so a level-l coordinate v lies at v (H'-1)/(H-1) on level l+1;
    * coarser, ``official`` / ``crop``: the conv runs at level l+1's size and its output is upsampled;
      shown is the level l+1 cell nearest to (y, x) under that upsampling, with the offsets that cell's
      conv actually reads (the first 18 H'W' values of the buffer, or its top-left corner).

    Returns one row per (branch, tap): branch, source_level, tap, i, j, dy, dx, mask, grid_y/x and
    sample_y/x (pixels), and read_y/x (the cell whose offsets were used, on the source map for coarser).
    """
    level, y, x = cell.level, cell.y, cell.x
    L = len(offsets)
    sy, sx = scale_yx
    rows = []

    def add(branch, src, gy, gx, oy, ox, off, msk, to_src_y, to_src_x, ry, rx):
        for k in range(9):
            i, j = divmod(k, 3)
            dy, dx = float(off[2 * k, oy, ox]), float(off[2 * k + 1, oy, ox])
            grid_v = (to_src_y(gy + i - 1), to_src_x(gx + j - 1))
            samp_v = (to_src_y(gy + i - 1 + dy), to_src_x(gx + j - 1 + dx))
            rows.append({
                "branch": branch, "source_level": src, "source_name": level_name(src), "tap": k, "i": i, "j": j,
                "dy": dy, "dx": dx, "mask": float(msk[k, oy, ox]),
                "grid_y": float(cell_centre_pixel(grid_v[0], strides[src], sy)),
                "grid_x": float(cell_centre_pixel(grid_v[1], strides[src], sx)),
                "sample_y": float(cell_centre_pixel(samp_v[0], strides[src], sy)),
                "sample_x": float(cell_centre_pixel(samp_v[1], strides[src], sx)),
                "read_y": ry, "read_x": rx,
            })

    ident = (lambda v: v)
    off, msk = offsets[level], masks[level]
    if level > 0:  # stride 2 on the finer map: output cell y reads 2y + i - 1 (+ dy)
        add("finer", level - 1, 2 * y, 2 * x, y, x, off, msk, ident, ident, y, x)
    add("same", level, y, x, y, x, off, msk, ident, ident, y, x)
    if level < L - 1:
        H, W = off.shape[-2:]
        Hc, Wc = offsets[level + 1].shape[-2:]
        fy = (Hc - 1) / (H - 1) if H > 1 else 0.0  # align_corners=True: level-l v -> v * fy on level l+1
        fx = (Wc - 1) / (W - 1) if W > 1 else 0.0
        if coarser_mode == "upsample_first":
            add("coarser", level + 1, y, x, y, x, off, msk, lambda v: v * fy, lambda v: v * fx, y, x)
        else:
            yc, xc = int(round(y * fy)), int(round(x * fx))
            c_off, c_msk = _coarser_read(off, msk, (Hc, Wc), coarser_mode)
            add("coarser", level + 1, yc, xc, yc, xc, c_off, c_msk, ident, ident, yc, xc)
    return pd.DataFrame(rows)


def probe_points(offsets: Sequence[Sequence[np.ndarray]], masks: Sequence[Sequence[np.ndarray]], cell: ProbeCell,
                 strides: Sequence[int], scale_yx: tuple[float, float], coarser_mode: str = "official") -> pd.DataFrame:
    """`branch_sampling_points` of every block (offsets[b][l], masks[b][l]), with a 1-based block column."""
    frames = [branch_sampling_points(o, m, cell, strides, scale_yx, coarser_mode).assign(block=b + 1)
              for b, (o, m) in enumerate(zip(offsets, masks))]
    df = pd.concat(frames, ignore_index=True)
    return df[["block"] + [c for c in df.columns if c != "block"]]


def probe_blocks(weights: pd.DataFrame, offsets, masks, dyrelu, cell: ProbeCell) -> pd.DataFrame:
    """One row per block (1-based) for the probed level and cell: the level's scale weights per source
    (w_finer, w_same, w_coarser; empty where the level has no such neighbour, and absent when scale
    attention is off), the mean |offset| (sqrt(dy^2 + dx^2), level cells) and mean mask over the 9 taps
    at the cell, and the channel means of the DyReLU coefficients a1, b1, a2, b2.

    weights: rows (block, level, source_level, weight) (0-based blocks); offsets[b][l] [18, H, W],
    masks[b][l] [9, H, W], dyrelu[b][l] {"a1", "b1", "a2", "b2"} each [C]."""
    rows = []
    for b in range(len(offsets)):
        w = weights[(weights.block == b) & (weights.level == cell.level)] if len(weights) else weights
        row = {"block": b + 1, "level": cell.level, "level_name": level_name(cell.level), "y": cell.y, "x": cell.x}
        for name, rel in BRANCHES:
            v = w.loc[w.source_level == cell.level + rel, "weight"] if len(w) else []
            row[f"w_{name}"] = float(v.iloc[0]) if len(v) else float("nan")
        off = offsets[b][cell.level][:, cell.y, cell.x].reshape(9, 2)  # [9, (dy, dx)]
        row["offset_mean_abs"] = float(np.sqrt((off ** 2).sum(axis=1)).mean())
        row["mask_mean"] = float(masks[b][cell.level][:, cell.y, cell.x].mean())
        for k, v in dyrelu[b][cell.level].items():
            row[f"{k}_mean"] = float(np.mean(v))
        rows.append(row)
    return pd.DataFrame(rows)


def crop_maps(stages, level: int, box_xyxy: Optional[Sequence[float]], cell: ProbeCell, resized_size: Sequence[int],
              original_size: Sequence[int], strides: Sequence[int], reduction: str = "mean_abs",
              margin: int = 2) -> tuple[dict[str, np.ndarray], tuple[int, int, int, int]]:
    """Each stage's reduced map of `level` cut to the cells covering the box (original-image pixels
    xyxy; None = the cell alone) plus `margin` cells: ({stage: [h, w] crop}, (y0, y1, x0, x1) cells)."""
    rh, rw = resized_size
    oh, ow = original_size
    s = strides[level]
    if box_xyxy is not None:
        x1, y1, x2, y2 = (float(v) for v in box_xyxy)
        ry, rx = rh / oh, rw / ow  # original -> resized pixels
        cy0, cy1 = int(np.floor(y1 * ry / s)), int(np.ceil(y2 * ry / s))
        cx0, cx1 = int(np.floor(x1 * rx / s)), int(np.ceil(x2 * rx / s))
    else:
        cy0, cy1, cx0, cx1 = cell.y, cell.y + 1, cell.x, cell.x + 1
    cy0, cy1 = min(cy0, cell.y), max(cy1, cell.y + 1)
    cx0, cx1 = min(cx0, cell.x), max(cx1, cell.x + 1)
    crops = {}
    window = None
    for stage in stages.stages:
        m = stages.reduced_map(stage, level, reduction)
        h, w = m.shape[:2]
        window = (max(0, cy0 - margin), min(h, cy1 + margin), max(0, cx0 - margin), min(w, cx1 + margin))
        crops[stage] = np.asarray(m[window[0]:window[1], window[2]:window[3]])
    return crops, window


def knockout_effect(box: Sequence[float], label: int, score: float, other_boxes: np.ndarray, other_scores: np.ndarray,
                    other_labels: np.ndarray, iou_threshold: float = 0.5) -> dict:
    """What became of one detection in another run (e.g. an attention off): "kept" (a box of the same
    class with IoU >= `iou_threshold`, the best such), "class changed" (only a box of another class
    overlaps that much) or "removed". Returns status, iou, other_score, score_change, other_label."""
    import torch
    from torchvision.ops import box_iou

    out = {"status": "removed", "iou": float("nan"), "other_score": float("nan"), "score_change": float("nan"),
           "other_label": -1}
    if len(other_scores) == 0:
        return out
    iou = box_iou(torch.tensor([list(map(float, box))]), torch.as_tensor(np.asarray(other_boxes, dtype=np.float32))
                  .reshape(-1, 4)).numpy()[0]  # [M']
    same = (np.asarray(other_labels) == int(label)) & (iou >= iou_threshold)
    pick, status = None, "removed"
    if same.any():
        pick, status = int(np.argmax(np.where(same, iou, -1.0))), "kept"
    elif (iou >= iou_threshold).any():
        pick, status = int(np.argmax(iou)), "class changed"
    if pick is not None:
        out.update(status=status, iou=float(iou[pick]), other_score=float(other_scores[pick]),
                   score_change=float(other_scores[pick]) - float(score), other_label=int(other_labels[pick]))
    return out

"""Dataset-level internals of the DyHead tower: per block and level, the scale weights of each source,
offset magnitudes, mask means and DyReLU coefficients over a dataset, broken down by the size (COCO
small / medium / large) and class of the ground-truth objects that ATSS assigns to each level.

One pass over the images (`collect_internals`) writes a long table (`INTERNAL_COLUMNS`), one row per
(image, block, level, subset):

* subset "level": the whole level, its cells that cover the image; offset_mean_abs = mean over those
  cells and the 9 taps of sqrt(dy^2 + dx^2) (in level cells), mask_mean = mean mask;
* subset "object": one row per ground-truth object with at least one ATSS-positive anchor on the level
  (`dyhead.atss_assigner.atss_assign`, boxes scaled to the network input as in training); offsets and
  masks averaged over those anchors' cells; size from the annotation's COCO area (small < 32^2 <=
  medium < 96^2 <= large), class from its category.

Scale weights (w_finer, w_same, w_coarser: w(l<-l-1), w(l<-l), w(l<-l+1); empty where the level has no
such neighbour) and the channel means of the DyReLU coefficients (a1, b1, a2, b2) are one value per
image and level, so an object row carries its level's values: the size and class breakdowns average
them over the objects assigned there. Each image runs alone (batch 1, the official test path).

The pass follows `analysis.tables.ResumableTable` (rows appended and flushed per image, finished image
ids in a ``.done`` file, resumed after an interruption) and shards like the scale-ratio pass: under
``torchrun`` rank r takes images r::N into its own file and rank 0 merges them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from dyhead.config import CoarserBranchMode
from dyhead.distributed import rank_and_world
from dyhead.preprocess import ImageLoadError, load_image
from dyhead.trace import TraceSpec

from .levels import LEVEL_NOTE, level_name
from .sources import dataset_images, resolve_dataset
from .tables import ResumableTable, TableMismatchError, format_rows, read_table, write_preamble

__all__ = ["INTERNAL_COLUMNS", "INTERNALS_NOTE", "size_class", "image_internals", "collect_internals",
           "InternalsRun", "internals_summary", "plot_internals", "SUMMARY_VALUES"]

INTERNAL_COLUMNS = ("image_id", "block", "level", "level_name", "subset", "size", "class", "cells",
                    "w_finer", "w_same", "w_coarser", "offset_mean_abs", "mask_mean", "a1", "b1", "a2", "b2")
SUMMARY_VALUES = ("w_finer", "w_same", "w_coarser", "offset_mean_abs", "mask_mean", "a1", "b1", "a2", "b2")
INTERNALS_NOTE = ("one row per (image, block, level, subset); block 0-based; subset 'level' = the level's cells "
                  "covering the image, 'object' = the ATSS-positive anchors of one ground-truth object assigned to "
                  "the level (size by COCO area: small < 32^2 <= medium < 96^2 <= large); offset_mean_abs = mean "
                  "sqrt(dy^2 + dx^2) over cells and the 9 taps (level cells); mask_mean = mean mask; w_* = the "
                  "level's scale weights w(l<-l-1), w(l<-l), w(l<-l+1) (empty: no such neighbour, or scale off); "
                  "a1..b2 = channel means of the level's DyReLU coefficients (one value per image and level)")

_SPEC = TraceSpec(scale=True, spatial=True, dyrelu=True)


def size_class(area: float) -> str:
    """COCO's object sizes: small < 32^2 <= medium < 96^2 <= large (area in original pixels)."""
    return "small" if area < 32 ** 2 else ("medium" if area < 96 ** 2 else "large")


def image_internals(model, image: np.ndarray, image_id: int, annotations: Sequence[dict],
                    category_names: dict, coarser_branch=None) -> list[tuple]:
    """The rows (`INTERNAL_COLUMNS`) of one image: one `DyHeadDetector.infer` pass that stops after the
    tower, plus the ATSS assignment of its ground-truth boxes (COCO annotations, crowd boxes left out)."""
    from dyhead.atss_assigner import atss_assign

    result = model.infer([image], trace=_SPEC, detections=False, coarser_branch=coarser_branch)
    trace = result.trace
    strides = model.config.strides
    cells = result.level_cells(0, strides)  # (rows, cols) covering the image, per level
    (rh, rw), (oh, ow) = result.resized_sizes[0], result.original_sizes[0]
    anchors = model.anchors(torch.empty((0, 3) + tuple(result.input_size)))  # [A_l, 4] per level
    anns = [a for a in annotations if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    assigned = [[] for _ in anchors]  # per level: (annotation index, anchor positions)
    if anns:
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32)
        boxes *= torch.tensor([rw / ow, rh / oh, rw / ow, rh / oh])
        matched = atss_assign([a.cpu() for a in anchors], boxes).matched_gt  # [A]
        start = 0
        for level, anc in enumerate(anchors):
            m = matched[start:start + anc.shape[0]]
            start += anc.shape[0]
            for g in m[m >= 0].unique().tolist():
                assigned[level].append((g, (m == g).nonzero().flatten()))
    rows = []
    for b, block in enumerate(trace.blocks):
        for level, lt in enumerate(block.levels):
            w = {k: float(v[0]) for k, v in lt.scale_weights.items()} if lt.scale_weights else {}
            ws = [w.get(level + d, float("nan")) for d in (-1, 0, 1)]
            dy = [float(v[0].float().mean()) for v in (lt.dyrelu.a1, lt.dyrelu.b1, lt.dyrelu.a2, lt.dyrelu.b2)]
            off = lt.offset[0].float()  # [18, H_l, W_l]
            H, W = off.shape[-2:]
            mag = off.reshape(9, 2, H, W).norm(dim=1).mean(dim=0)  # [H_l, W_l], mean over taps
            msk = lt.mask[0].float().mean(dim=0)  # [H_l, W_l]
            h, wc = cells[level]
            rows.append((image_id, b, level, level_name(level), "level", "", "", h * wc, *ws,
                         float(mag[:h, :wc].mean()), float(msk[:h, :wc].mean()), *dy))
            for g, positions in assigned[level]:
                ann = anns[g]
                area = float(ann.get("area") or ann["bbox"][2] * ann["bbox"][3])
                rows.append((image_id, b, level, level_name(level), "object", size_class(area),
                             category_names.get(ann["category_id"], str(ann["category_id"])), int(positions.numel()),
                             *ws, float(mag.flatten()[positions].mean()), float(msk.flatten()[positions].mean()), *dy))
    return rows


@dataclass
class InternalsRun:
    csv: Optional[Path]  # the merged (or only) table; None on ranks other than 0
    shard_csv: Path
    images: int  # images of this rank
    computed: int  # images computed in this call (the rest were finished before)
    skipped: list[tuple[str, str]]
    seconds: float


def collect_internals(model, data_root, out_csv: str | Path, split: str = "val", max_images: Optional[int] = None,
                      rank: Optional[int] = None, world_size: Optional[int] = None,
                      progress: Optional[Callable[[int, int], None]] = None, show_progress: bool = True,
                      coarser_branch=None, merge_timeout_s: float = 3600.0) -> InternalsRun:
    """The pass over a COCO split (first `max_images` by image id) into `out_csv`, resumable and
    shardable (see the module docstring). progress(done, total) after every image of this rank."""
    from dyhead.data.coco import load_coco

    from .scale_ratios import model_fingerprint, shard_path

    t0 = time.perf_counter()
    if rank is None or world_size is None:
        r, w = rank_and_world()
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    out_csv = Path(out_csv)
    paths = resolve_dataset(data_root, split)
    coco = load_coco(paths.annotation_file)
    names = {int(c["id"]): str(c["name"]) for c in coco.dataset["categories"]}
    all_records = dataset_images(data_root, split, max_images)
    records = all_records[rank::world_size]
    shard = shard_path(out_csv, rank, world_size)
    mode = CoarserBranchMode(coarser_branch or model.config.tower.coarser_branch).value
    run_note = "run: " + json.dumps({"model": model_fingerprint(model), "annotations": str(paths.annotation_file),
                                     "coarser_branch": mode, "batch_size": 1}, sort_keys=True)
    table = ResumableTable(shard, (INTERNALS_NOTE, LEVEL_NOTE, run_note), INTERNAL_COLUMNS)
    table.complete_path.unlink(missing_ok=True)
    try:
        done = {int(k) for k in table.open({r.image_id for r in records})}
    except TableMismatchError as exc:
        raise ValueError(str(exc)) from None
    model.eval()
    skipped, computed = [], 0
    finished = sum(1 for r in records if r.image_id in done)
    bar = None
    if show_progress:
        from dyhead.progress import progress_bar

        bar = progress_bar(len(records), initial=finished, desc=f"internals [{rank}/{world_size}]", unit="img")
    try:
        with table:
            for rec in records:
                if rec.image_id in done:
                    continue
                try:
                    image = load_image(rec.path)
                    rows = image_internals(model, image, rec.image_id, coco.imgToAnns.get(rec.image_id, []), names,
                                           coarser_branch)
                except ImageLoadError as exc:
                    skipped.append((str(rec.path), str(exc)))
                    rows = []
                table.append(rows, [rec.image_id])
                computed += 1
                finished += 1
                if bar is not None:
                    bar.update(1)
                if progress is not None:
                    progress(finished, len(records))
    finally:
        if bar is not None:
            bar.close()
    table.complete_path.write_text(f"{len(records)}\n")
    merged: Optional[Path] = out_csv if world_size == 1 else None
    if world_size > 1:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if rank == 0:
            merged = _merge(out_csv, [shard_path(out_csv, r, world_size) for r in range(world_size)], all_records,
                            merge_timeout_s)
    return InternalsRun(merged, shard, len(records), computed, skipped, time.perf_counter() - t0)


def _merge(out_csv: Path, shards: list[Path], records, timeout_s: float) -> Path:
    """Every shard's rows in image order into `out_csv` (after each shard is complete)."""
    deadline = time.monotonic() + timeout_s
    while not all(ResumableTable(s, (), ()).complete_path.exists() for s in shards):
        if time.monotonic() > deadline:
            raise TimeoutError(f"internals shards not complete after {timeout_s:.0f} s")
        time.sleep(1.0)
    frames = [read_table(s) for s in shards]
    df = pd.concat(frames, ignore_index=True)
    order = {rec.image_id: i for i, rec in enumerate(records)}
    df = df.assign(_o=df.image_id.map(order)).sort_values(["_o"], kind="stable").drop(columns="_o")
    with out_csv.open("w", encoding="utf-8") as f:
        write_preamble(f, frames[0].attrs["notes"], INTERNAL_COLUMNS)
        f.write(format_rows(list(df[list(INTERNAL_COLUMNS)].itertuples(index=False, name=None))))
    ResumableTable(out_csv, (), ()).done_path.write_text("".join(f"{r.image_id}\n" for r in records))
    return out_csv


def internals_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Means per (breakdown, group, block, level): breakdown "all" = the level rows (group "all"),
    "size" and "class" = the object rows grouped by their object's size or class. n = rows averaged
    (images for "all", objects for the others). Block 1-based."""
    frames = []
    lv = df[df.subset == "level"]
    g = lv.groupby(["block", "level"], sort=True)
    frames.append(g[list(SUMMARY_VALUES)].mean().assign(n=g.size(), breakdown="all", group="all").reset_index())
    obj = df[df.subset == "object"]
    for by in ("size", "class"):
        if obj.empty:
            continue
        g = obj.groupby([by, "block", "level"], sort=True)
        frames.append(g[list(SUMMARY_VALUES)].mean().assign(n=g.size(), breakdown=by).reset_index()
                      .rename(columns={by: "group"}))
    out = pd.concat(frames, ignore_index=True)
    out["block"] = out["block"] + 1
    out["level_name"] = out["level"].map(level_name)
    return out[["breakdown", "group", "block", "level", "level_name", "n"] + list(SUMMARY_VALUES)]


def plot_internals(summary: pd.DataFrame, block: Optional[int] = None):
    """Four panels of one block (default the last, 1-based): the scale weight of each source per level,
    mean |offset| and mean mask per level and block, and mean |offset| per level by object size."""
    import matplotlib.pyplot as plt

    allb = summary[summary.breakdown == "all"]
    block = int(block or allb.block.max())
    one = allb[allb.block == block]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    x = np.arange(len(one))
    for k, (col, color) in enumerate((("w_finer", "#1f77b4"), ("w_same", "#7f7f7f"), ("w_coarser", "#d62728"))):
        axes[0].bar(x + (k - 1) * 0.27, one[col].fillna(0), 0.27, color=color, label=col[2:])
    axes[0].set_xticks(x, one.level_name)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title(f"block {block}: mean scale weight per source", fontsize=9)
    axes[0].legend(fontsize=7)
    for ax, col, title in ((axes[1], "offset_mean_abs", "mean |offset| (level cells)"), (axes[2], "mask_mean", "mean mask")):
        for level, d in allb.groupby("level"):
            ax.plot(d.block, d[col], marker="o", label=level_name(level))
        ax.set_xlabel("block")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    sizes = summary[(summary.breakdown == "size") & (summary.block == block)]
    for k, size in enumerate(("small", "medium", "large")):
        d = sizes[sizes.group == size].set_index("level")["offset_mean_abs"].reindex(one.level.values)
        axes[3].bar(x + (k - 1) * 0.27, d.fillna(0).values, 0.27, label=size)
    axes[3].set_xticks(x, one.level_name)
    axes[3].set_title(f"block {block}: mean |offset| at assigned objects, by size", fontsize=9)
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    return fig

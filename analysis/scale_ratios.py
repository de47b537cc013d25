"""Learned scale ratios over a dataset (paper Figure 3).

The paper: "the learned scale ratios (calculated by dividing the learned weight of higher resolution
by the learned weight of lower resolution)", one histogram per level over all COCO val2017 images.

In the official block, output level l averages up to three branches, each weighted by a scale-
attention scalar per image: w(l <- l-1) from the finer (higher-resolution) level, w(l <- l) from
level l itself and w(l <- l+1) from the coarser (lower-resolution) level. The ratio used here
(`RATIO_DEFINITION`):

    ratio(l) = w(l <- l-1) / w(l <- l+1)          for the inner levels P4, P5, P6
    ratio(P3) = w(P3 <- P3) / w(P3 <- P4)          (no finer neighbour: the level itself in its place)
    ratio(P7) = w(P7 <- P6) / w(P7 <- P7)          (no coarser neighbour: the level itself in its place)

ratio > 1: level l leans towards the higher-resolution source; < 1: towards the lower-resolution one.
At P3 and P7 the pair is a different one (the level's own weight against one neighbour), so their
ratios do not compare with the inner levels' and are labelled with their own pair (`ratio_label`).
The weights are clamped to [0.5, 1] (a ReLU before the hard sigmoid): a weight at the 0.5 floor or
the 1.0 ceiling says only that the logit left the hard sigmoid's linear range, and a ratio of exactly
1 often means both weights sit at the floor, not that the model weighs the two sources alike
(`weight_saturation`, `ratio_summary`'s share_both_at_floor). The paper does not say which block its
Figure 3 shows; every figure here names its block.
Levels are P3..P7 (strides 8..128); the paper's figure numbers them the other way round ("level 5" =
P3, the highest resolution). The raw weights are kept (CSV, long format) so that any other
definition can be computed from the same pass.

The pass streams over the dataset in batches, appends each batch to the CSV (flushed) and records the
finished image ids in a side file; run again, it resumes where it stopped. Under ``torchrun`` each
rank takes images rank::world into its own shard and rank 0 merges the shards when all are done.
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

from .levels import LEVEL_NOTE, level_name, paper_level
from .sources import ImageRecord, dataset_images, resolve_dataset
from .tables import ResumableTable, TableMismatchError, format_rows, read_table, write_preamble

__all__ = [
    "RATIO_DEFINITION",
    "WEIGHT_COLUMNS",
    "RATIO_COLUMNS",
    "ScaleRatioRun",
    "ratio_sources",
    "ratio_label",
    "WEIGHT_FLOOR",
    "WEIGHT_CEILING",
    "weight_saturation",
    "saturation_note",
    "weights_from_trace",
    "collect_scale_weights",
    "scale_weights_for_images",
    "compute_ratios",
    "write_ratios_csv",
    "ratio_summary",
    "read_table",
    "shard_path",
    "merge_shards",
    "plot_scale_ratios",
    "plotly_scale_ratios",
]

RATIO_DEFINITION = (
    "scale ratio of level l = w(l<-l-1) / w(l<-l+1): the scale-attention weight of the finer "
    "(higher-resolution) source divided by that of the coarser (lower-resolution) source; at P3, "
    "which has no finer neighbour, w(P3<-P3) / w(P3<-P4); at P7, which has no coarser neighbour, "
    "w(P7<-P6) / w(P7<-P7); ratio > 1 leans to higher resolution"
)

WEIGHT_COLUMNS = ("image_id", "file_name", "block", "level", "level_name", "source_level", "source_name", "weight")
RATIO_COLUMNS = ("image_id", "file_name", "block", "level", "level_name", "paper_level", "numerator_source",
                 "denominator_source", "numerator_weight", "denominator_weight", "ratio")
#: The range of the official scale weights, relu6(ReLU(x) + 3) / 6: the ReLU holds them at 0.5 or
#: above, relu6 at 1.0 or below. A weight within `_AT_BOUND` of a bound counts as sitting there.
WEIGHT_FLOOR, WEIGHT_CEILING = 0.5, 1.0
_AT_BOUND = 1e-6
_WEIGHTS_PREAMBLE = (
    "scale-attention weights w(level <- source_level) of every image, block (0-based) and output level; "
    + LEVEL_NOTE,
    RATIO_DEFINITION,
)


# ------------------------------------------------------------------------------------------------
# The ratio


def ratio_sources(level: int, num_levels: int) -> tuple[int, int]:
    """(numerator source, denominator source) of level `level` (see `RATIO_DEFINITION`)."""
    finer = level - 1 if level > 0 else level
    coarser = level + 1 if level < num_levels - 1 else level
    return finer, coarser


def ratio_label(level: int, num_levels: int) -> str:
    """The pair a level's ratio divides, e.g. "P4: w(P4<-P3) / w(P4<-P5)", "P3: w(P3<-P3) / w(P3<-P4)"."""
    num, den = ratio_sources(level, num_levels)
    name = level_name(level)
    return f"{name}: w({name}<-{level_name(num)}) / w({name}<-{level_name(den)})"


def weights_from_trace(trace, records: Sequence[ImageRecord]) -> list[tuple]:
    """Rows (image_id, file_name, block, level, level_name, source_level, source_name, weight) from a
    `TowerTrace` of a batch whose images are `records`, in (image, block, level, source) order."""
    # One device->host copy per (block, level, source): [N] each.
    values = [
        [{src: lt.scale_weights[src].float().cpu().tolist() for src in sorted(lt.scale_weights)} for lt in block.levels]
        for block in trace.blocks
    ]
    rows = []
    for i, rec in enumerate(records):
        for b, block_values in enumerate(values):
            for level, per_source in enumerate(block_values):
                for src, w in per_source.items():
                    rows.append((rec.image_id, rec.file_name, b, level, level_name(level), src, level_name(src), w[i]))
    return rows


# ------------------------------------------------------------------------------------------------
# CSV files with a '#' preamble (`analysis.tables`), written incrementally


def shard_path(out_csv: str | Path, rank: int, world_size: int) -> Path:
    """The file one rank writes: the output itself for one process, else ``<stem>.rank{r}of{w}.csv``."""
    out_csv = Path(out_csv)
    if world_size == 1:
        return out_csv
    return out_csv.with_name(f"{out_csv.stem}.rank{rank}of{world_size}{out_csv.suffix}")


def _done_path(csv_path: Path) -> Path:
    return ResumableTable(csv_path, (), ()).done_path


def _complete_path(csv_path: Path) -> Path:
    return ResumableTable(csv_path, (), ()).complete_path


# ------------------------------------------------------------------------------------------------
# The pass over a dataset


@dataclass
class ScaleRatioRun:
    weights_csv: Path  # the merged (or only) file of raw weights; None until merged on rank 0
    shard_csv: Path
    images: int  # images of this rank
    computed: int  # images computed in this call (the rest were finished before)
    skipped: list[tuple[str, str]]  # (file, reason) of unreadable images
    merged: bool


def model_fingerprint(model) -> str:
    """A short hash of the model's config and parameter values (to refuse resuming another model's file)."""
    import hashlib

    config = getattr(model, "config", None)
    text = json.dumps(config.to_dict(), sort_keys=True) if hasattr(config, "to_dict") else type(model).__name__
    with torch.no_grad():
        sums = torch.stack([p.detach().float().abs().sum() for p in model.parameters()]).cpu().tolist()
    text += ";" + ",".join(f"{v:.5g}" for v in sums)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def collect_scale_weights(
    model,
    data_root: Optional[str | Path],
    out_csv: str | Path,
    split: str = "val",
    max_images: Optional[int] = None,
    batch_size: int = 1,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    show_progress: bool = True,
    merge_timeout_s: float = 3600.0,
    coarser_branch=None,
) -> ScaleRatioRun:
    """Record every scale-attention weight of the model over a COCO split into `out_csv` (long
    format, `WEIGHT_COLUMNS`), resuming a run that was interrupted.

    Images are taken in increasing image-id order (the first `max_images`); rank r of `world_size`
    takes images r::world_size (defaults: torch.distributed's, or the RANK / WORLD_SIZE variables,
    else 0 of 1). With several ranks each writes `shard_path(out_csv, r, w)`; rank 0 then waits for
    every shard to be complete and merges them into `out_csv` in image order.

    batch_size: images per forward pass. Images of a batch are padded to a common size, and scale
    attention pools over the padded map, so batch 1 (the official test path) gives each image's own
    weights; larger batches are faster on a GPU and differ slightly for the smaller images.
    Batches are formed from fixed positions in the rank's list, so a resumed run batches exactly as
    an uninterrupted one. progress(done, total) is called after every computed batch (and once at the start of a resumed
    run), counting this rank's images.
    On CUDA the network runs under float16 autocast.
    """
    if rank is None or world_size is None:
        r, w = rank_and_world()
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is out of range for world size {world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    all_records = dataset_images(data_root, split, max_images)
    records = all_records[rank::world_size]
    shard = shard_path(out_csv, rank, world_size)
    _complete_path(shard).unlink(missing_ok=True)
    run_note = "run: " + json.dumps(
        {"model": model_fingerprint(model), "annotations": str(dataset_annotation_file(data_root, split)),
         "batch_size": batch_size,
         "coarser_branch": CoarserBranchMode(coarser_branch or model.config.tower.coarser_branch).value},
        sort_keys=True)
    table = ResumableTable(shard, _WEIGHTS_PREAMBLE + (run_note,), WEIGHT_COLUMNS)
    try:
        done = {int(k) for k in table.open({r.image_id for r in records})}
    except TableMismatchError as exc:
        raise ValueError(str(exc)) from None

    model.eval()
    skipped: list[tuple[str, str]] = []
    computed = 0
    finished = sum(1 for r in records if r.image_id in done)
    batches = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    bar = _progress_bar(len(records), finished, show_progress, f"scale weights [{rank}/{world_size}]")
    if progress is not None and finished:
        progress(finished, len(records))  # resumed: what an earlier run finished
    try:
        with table:
            for batch in batches:
                todo = [r for r in batch if r.image_id not in done]
                if todo:
                    loaded, images = [], []
                    for rec in batch:  # the whole batch, so that its padding matches an uninterrupted run
                        try:
                            images.append(load_image(rec.path))
                            loaded.append(rec)
                        except ImageLoadError as exc:
                            if rec in todo:
                                skipped.append((str(rec.path), str(exc)))
                    if loaded:
                        trace = _trace(model, images, coarser_branch=coarser_branch)
                        keep = [rec in todo for rec in loaded]
                        rows = weights_from_trace(trace, loaded)
                        per_image = len(rows) // len(loaded)
                        rows = [row for i, k in enumerate(keep) if k for row in rows[i * per_image:(i + 1) * per_image]]
                    else:
                        rows = []
                    table.append(rows, [rec.image_id for rec in todo])
                    done.update(rec.image_id for rec in todo)
                    computed += len(todo)
                    finished += len(todo)
                    if bar is not None:
                        bar.update(len(todo))
                    if progress is not None:
                        progress(finished, len(records))
    finally:
        if bar is not None:
            bar.close()
    table.complete_path.write_text(f"{len(records)}\n")

    merged = False
    if world_size > 1 and rank == 0:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        merge_shards(out_csv, world_size, all_records, timeout_s=merge_timeout_s)
        merged = True
    elif world_size == 1:
        merged = True
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return ScaleRatioRun(out_csv if merged else None, shard, len(records), computed, skipped, merged)


def dataset_annotation_file(data_root, split: str) -> Path:
    return resolve_dataset(data_root, split).annotation_file


def scale_weights_for_images(model, images: Sequence[np.ndarray], names: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The weights of a few HxWx3 uint8 RGB images in memory (one forward pass each), in the CSV's
    long format (`WEIGHT_COLUMNS`; image_id = position 1..n). For a dataset use `collect_scale_weights`."""
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
    if len(names) != len(images):
        raise ValueError(f"{len(images)} images but {len(names)} names")
    model.eval()
    rows = []
    for i, (image, name) in enumerate(zip(images, names)):
        trace = _trace(model, [image])
        rows += weights_from_trace(trace, [ImageRecord(i + 1, str(name), Path(str(name)))])
    return pd.DataFrame(rows, columns=list(WEIGHT_COLUMNS))


def _progress_bar(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from dyhead.progress import progress_bar

    return progress_bar(total, initial=initial, desc=desc, unit="img")


def _trace(model, images: list[np.ndarray], use_amp: bool = True, coarser_branch=None):
    """The scale weights of a batch: one `DyHeadDetector.infer` pass that stops after the tower and
    records the scale attention only. use_amp=False forces float32 (else the one autocast policy)."""
    return model.infer(images, trace=TraceSpec(scale=True), detections=False, coarser_branch=coarser_branch,
                       precision="auto" if use_amp else "float32").trace


def merge_shards(out_csv: str | Path, world_size: int, records: Optional[Sequence[ImageRecord]] = None,
                 timeout_s: float = 3600.0, poll_s: float = 1.0) -> Path:
    """Wait until every rank's shard is complete, then write `out_csv` with all rows in image order
    (the order of `records` when given, else increasing image id)."""
    out_csv = Path(out_csv)
    shards = [shard_path(out_csv, r, world_size) for r in range(world_size)]
    deadline = time.monotonic() + timeout_s
    while not all(_complete_path(s).exists() for s in shards):
        if time.monotonic() > deadline:
            missing = [str(s) for s in shards if not _complete_path(s).exists()]
            raise TimeoutError(f"shards not complete after {timeout_s:.0f} s: {missing}")
        time.sleep(poll_s)
    frames = [read_table(s) for s in shards]
    df = pd.concat(frames, ignore_index=True)
    if records is not None:
        order = {rec.image_id: i for i, rec in enumerate(records)}
        df["_order"] = df["image_id"].map(order)
    else:
        df["_order"] = df["image_id"]
    df = df.sort_values(["_order", "block", "level", "source_level"], kind="stable").drop(columns="_order")
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        write_preamble(f, frames[0].attrs["notes"], WEIGHT_COLUMNS)
        f.write(format_rows(list(df[list(WEIGHT_COLUMNS)].itertuples(index=False, name=None))))
    tmp.replace(out_csv)
    _done_path(out_csv).write_text("".join(f"{i}\n" for i in dict.fromkeys(df["image_id"].tolist())))
    return out_csv


# ------------------------------------------------------------------------------------------------
# Ratios and summaries


def compute_ratios(weights: pd.DataFrame, num_levels: Optional[int] = None) -> pd.DataFrame:
    """One row per (image, block, level) with the scale ratio (`RATIO_COLUMNS`, `RATIO_DEFINITION`)."""
    if num_levels is None:
        num_levels = int(weights["level"].max()) + 1
    w = weights.set_index(["image_id", "block", "level", "source_level"])["weight"]
    keys = weights[["image_id", "file_name", "block", "level"]].drop_duplicates()
    rows = []
    for image_id, file_name, block, level in keys.itertuples(index=False, name=None):
        num, den = ratio_sources(level, num_levels)
        w_num, w_den = float(w[(image_id, block, level, num)]), float(w[(image_id, block, level, den)])
        rows.append((image_id, file_name, block, level, level_name(level), paper_level(level, num_levels),
                     level_name(num), level_name(den), w_num, w_den, w_num / w_den))
    df = pd.DataFrame(rows, columns=list(RATIO_COLUMNS))
    df.attrs["definition"] = RATIO_DEFINITION
    return df


def write_ratios_csv(ratios: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        write_preamble(f, (RATIO_DEFINITION, LEVEL_NOTE), RATIO_COLUMNS)
        f.write(format_rows(list(ratios[list(RATIO_COLUMNS)].itertuples(index=False, name=None))))
    return path


def _at(values, bound: float) -> np.ndarray:
    return np.abs(np.asarray(values, dtype=float) - bound) <= _AT_BOUND


def ratio_summary(ratios: pd.DataFrame) -> pd.DataFrame:
    """Per block and level: the pair divided (`ratio_label`), images, median, geometric mean,
    10th/90th percentile, the shares of images with ratio > 1, < 1 and = 1, and the share whose two
    weights both sit at the 0.5 floor (a ratio of 1 that says nothing about the two sources)."""
    num_levels = int(ratios["level"].max()) + 1
    rows = []
    for (block, level, name), df in ratios.groupby(["block", "level", "level_name"]):
        v = df["ratio"].to_numpy(dtype=float)
        both_floor = _at(df["numerator_weight"], WEIGHT_FLOOR) & _at(df["denominator_weight"], WEIGHT_FLOOR)
        rows.append({
            "block": block, "level": level, "level_name": name, "pair": ratio_label(int(level), num_levels),
            "images": len(v),
            "median": float(np.median(v)),
            "geo_mean": float(np.exp(np.mean(np.log(v)))),
            "p10": float(np.percentile(v, 10)),
            "p90": float(np.percentile(v, 90)),
            "share_above_1": float(np.mean(v > 1.0 + _AT_BOUND)),
            "share_below_1": float(np.mean(v < 1.0 - _AT_BOUND)),
            "share_equal_1": float(np.mean(np.abs(v - 1.0) <= _AT_BOUND)),
            "share_both_at_floor": float(np.mean(both_floor)),
        })
    out = pd.DataFrame(rows)
    out.attrs["definition"] = RATIO_DEFINITION
    return out


def weight_saturation(weights: pd.DataFrame) -> pd.DataFrame:
    """Per block and output level: the number of weights (images x source levels) and the shares
    sitting at the 0.5 floor (the logit was <= 0 and the ReLU cut it) and at the 1.0 ceiling (logit >= 3)."""
    df = weights.assign(at_floor=_at(weights["weight"], WEIGHT_FLOOR), at_ceiling=_at(weights["weight"], WEIGHT_CEILING))
    return df.groupby(["block", "level", "level_name"]).agg(
        weights=("weight", "size"), share_at_floor=("at_floor", "mean"), share_at_ceiling=("at_ceiling", "mean"),
    ).reset_index()


def saturation_note(weights: pd.DataFrame, ratios: pd.DataFrame, block: Optional[int] = None) -> str:
    """One sentence with the shares of weights at the floor and at the ceiling, and of ratios that
    are exactly 1 and that have both weights at the floor, over every block or one (0-based) `block`."""
    if block is not None:
        weights = weights[weights["block"] == block]
        ratios = ratios[ratios["block"] == block]
    w = weights["weight"].to_numpy(float)
    both = _at(ratios["numerator_weight"], WEIGHT_FLOOR) & _at(ratios["denominator_weight"], WEIGHT_FLOOR)
    equal = np.abs(ratios["ratio"].to_numpy(float) - 1.0) <= _AT_BOUND
    where = "all blocks" if block is None else f"block {block + 1}"
    return (f"{where}: {100 * np.mean(_at(w, WEIGHT_FLOOR)):.1f} % of the scale weights sit at the 0.5 floor and "
            f"{100 * np.mean(_at(w, WEIGHT_CEILING)):.1f} % at the 1.0 ceiling; {100 * np.mean(equal):.1f} % of "
            f"the ratios are exactly 1, {100 * np.mean(both):.1f} % because both weights sit at the floor")


# ------------------------------------------------------------------------------------------------
# Figures

_LEVEL_COLORS = ("#6a3d9a", "#e31a1c", "#33a02c", "#ff7f00", "#1f78b4")  # P3 purple ... P7 blue, as the paper


def _log_bins(values: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(np.min(values)), float(np.max(values))
    span = max(abs(np.log10(lo)), abs(np.log10(hi)), 1e-3) * 1.05  # symmetric around 1
    return np.logspace(-span, span, bins + 1)


def plot_scale_ratios(ratios: pd.DataFrame, blocks: Optional[Sequence[int]] = None, bins: int = 40,
                      focus_block: Optional[int] = None):
    """Per-level histograms of the scale ratio (log x axis, centred on 1), one panel per block (shared
    bins) plus a larger panel for `focus_block` (0-based, default the last; its own bins). The paper
    does not say which block its Figure 3 shows; the large panel's title names the one drawn. The
    legend names each level's pair (`ratio_label`): at P3 and P7 it is not finer / coarser."""
    import matplotlib.pyplot as plt

    all_blocks = sorted(ratios["block"].unique())
    blocks = list(all_blocks if blocks is None else blocks)
    last = all_blocks[-1] if focus_block is None else int(focus_block)
    levels = sorted(ratios["level"].unique())
    num_levels = len(levels)
    edges = _log_bins(ratios["ratio"].to_numpy(float), bins)
    ncols = min(3, len(blocks))
    nrows = -(-len(blocks) // ncols)
    fig = plt.figure(figsize=(4.0 * ncols + 5.0, 2.8 * max(nrows, 1.5) + 0.8))
    grid = fig.add_gridspec(nrows, ncols + 2)
    for k, b in enumerate(blocks):
        ax = fig.add_subplot(grid[k // ncols, k % ncols])
        _hist_panel(ax, ratios[ratios.block == b], levels, num_levels, edges, small=True)
        ax.set_title(f"block {b + 1}", fontsize=9)
    ax = fig.add_subplot(grid[:, ncols:])
    last_ratios = ratios[ratios.block == last]
    # The large panel gets its own bins (its block alone), the small ones share theirs.
    _hist_panel(ax, last_ratios, levels, num_levels, _log_bins(last_ratios["ratio"].to_numpy(float), bins), small=False)
    which = f"last block ({last + 1})" if last == all_blocks[-1] else f"block {last + 1} of {all_blocks[-1] + 1}"
    ax.set_title(f"{which}: scale ratio per level", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper right")
    n_images = ratios["image_id"].nunique()
    caption = (f"{n_images} images. " + RATIO_DEFINITION + ". " + LEVEL_NOTE + ".")
    fig.text(0.01, 0.005, _wrap(caption, 170), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def _hist_panel(ax, df: pd.DataFrame, levels, num_levels: int, edges: np.ndarray, small: bool) -> None:
    for level in levels:
        v = df.loc[df.level == level, "ratio"].to_numpy(float)
        if v.size == 0:
            continue
        ax.hist(v, bins=edges, alpha=0.55, color=_LEVEL_COLORS[level % len(_LEVEL_COLORS)],
                label=ratio_label(level, num_levels))
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ticks = _ratio_ticks(edges[0], edges[-1])
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.axvline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set_xlabel("scale ratio (each level's pair in the legend)", fontsize=7 if small else 9)
    ax.set_ylabel("images", fontsize=7 if small else 9)
    ax.tick_params(labelsize=7 if small else 8)


def _ratio_ticks(lo: float, hi: float, count: int = 7) -> list[float]:
    """Ticks b**k (k = -3..3) for the smallest "nice" base b that spans most of the axis: symmetric around 1
    on the log axis (b and 1/b sit at the same distance from 1)."""
    half = count // 2
    for base in (1.005, 1.01, 1.02, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0):
        if base**half >= hi**0.75:  # the outermost ticks cover at least 3/4 of the half-axis
            break
    ticks = [base**k for k in range(-half, half + 1)]
    ticks = [t for t in ticks if lo <= t <= hi] or [1.0]
    for digits in (2, 3, 4):  # the fewest significant digits that keep the ticks distinct
        rounded = [float(f"{t:.{digits}g}") for t in ticks]
        if len(set(rounded)) == len(rounded):
            return rounded
    return rounded


def plotly_scale_ratios(ratios: pd.DataFrame, block: Optional[int] = None, bins: int = 40):
    """Interactive per-level histograms of one block (default: the last)."""
    import plotly.graph_objects as go

    if block is None:
        block = int(ratios["block"].max())
    df = ratios[ratios.block == block]
    num_levels = int(ratios["level"].max()) + 1
    edges = np.log10(_log_bins(ratios["ratio"].to_numpy(float), bins))
    fig = go.Figure()
    for level in sorted(df["level"].unique()):
        v = np.log10(df.loc[df.level == level, "ratio"].to_numpy(float))
        fig.add_trace(go.Histogram(
            x=v, name=ratio_label(level, num_levels), opacity=0.6,
            xbins=dict(start=float(edges[0]), end=float(edges[-1]), size=float(edges[1] - edges[0])),
            marker_color=_LEVEL_COLORS[level % len(_LEVEL_COLORS)],
        ))
    fig.add_vline(x=0.0, line_dash="dash", line_color="gray")
    fig.update_layout(barmode="overlay", title=f"Scale ratio per level, block {block + 1}",
                      xaxis_title="log10 scale ratio (each level's pair in the legend; 0 = equal weights, "
                                  "which includes both weights at the 0.5 floor)", yaxis_title="images")
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))

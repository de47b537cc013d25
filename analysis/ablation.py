"""Attention on/off at inference: COCO AP of one trained model with attentions switched off (an
analogue of the paper's Table 1), and what changes in one image's detections.

The paper's Table 1 retrains a model for every combination of scale-aware (L), spatial-aware (S) and
task-aware (C) attention. Here one trained model is evaluated with attentions switched off at test
time (`AttentionSwitches`, neutral values: scale weights 1, zero offsets with masks 1, a plain ReLU),
in all 8 combinations and one attention in one block at a time. These knock-outs measure how much the
trained model relies on each attention; they are not retrained ablations and need not match Table 1.

Settings are evaluated in `ablation_settings` order: all attentions on first (the reference), then the
other seven global combinations, then the one-block knock-outs, so that the most telling rows come first.
With `csv_path`, `ablation_table` appends each row to the CSV as soon as it is computed; a run started
again with the same notes skips the rows already there (an interrupted run loses at most the setting it
was on), and a global-only file is extended by a later run with the one-block rows.

AP numbers come from `dyhead.evaluate.evaluate_detector` (pycocotools COCOeval), in percent; NaN where
the dataset has no object of that size range (COCOeval's -1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from dyhead.config import AttentionSwitches, knock_out

from .detection_diff import diff_summary, match_detections, plot_detection_pair
from .sources import dataset_images, dataset_root
from .tables import ResumableTable, TableMismatchError, read_table

__all__ = [
    "KNOCKOUT_NOTE",
    "batch_size_note",
    "METRIC_COLUMNS",
    "ABLATION_COLUMNS",
    "AblationCSVError",
    "AblationSetting",
    "table1_settings",
    "global_settings",
    "knockout_settings",
    "ablation_settings",
    "ablation_table",
    "read_ablation_csv",
    "detection_changes",
    "plot_ablation",
    "plotly_ablation",
    "plot_detection_changes",
]

KNOCKOUT_NOTE = (
    "inference-time knock-outs of one trained model (attentions switched off at test time), "
    "not retrained ablations as in the paper's Table 1"
)
METRIC_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def batch_size_note(batch_size: int) -> str:
    """The note every AP table carries about the images per forward pass it was computed with."""
    return (f"batch size {batch_size} (1 = each image alone, as the official test path; larger batches pad "
            "images to a common size, which changes what the attentions pool over)")


#: The columns of `ablation_table`'s DataFrame and CSV, in order.
ABLATION_COLUMNS = ("setting", "kind", "L", "S", "C", "block", "attention", *METRIC_COLUMNS, "images", "delta_AP")
CHECK, CROSS = "\u2713", "\u2717"

#: The paper's Table 1 row order as (L = scale, S = spatial, C = task).
TABLE1_ORDER: tuple[tuple[bool, bool, bool], ...] = (
    (False, False, False),
    (True, False, False),
    (False, True, False),
    (False, False, True),
    (False, True, True),
    (True, False, True),
    (True, True, False),
    (True, True, True),
)
#: The order in which the global combinations are evaluated: the all-on reference first, then one
#: attention off, two off, all three off.
GLOBAL_ORDER: tuple[tuple[bool, bool, bool], ...] = (
    (True, True, True),
    (False, True, True),
    (True, False, True),
    (True, True, False),
    (False, False, True),
    (False, True, False),
    (True, False, False),
    (False, False, False),
)


class AblationCSVError(ValueError):
    """An ablation CSV that cannot be resumed: written for other settings, or with other rows."""


@dataclass(frozen=True)
class AblationSetting:
    name: str
    kind: str  # "all blocks" or "one block"
    switches: object  # AttentionSwitches or a per-block tuple
    scale: bool
    spatial: bool
    task: bool
    block: Optional[int] = None  # 1-based block of a one-block knock-out
    attention: Optional[str] = None


def table1_settings() -> list[AblationSetting]:
    """The 8 on/off combinations in every block, in the paper's Table 1 order."""
    return [_global_setting(*flags) for flags in TABLE1_ORDER]


def global_settings() -> list[AblationSetting]:
    """The same 8 combinations in evaluation order (`GLOBAL_ORDER`: all on first)."""
    return [_global_setting(*flags) for flags in GLOBAL_ORDER]


def _global_setting(scale: bool, spatial: bool, task: bool) -> AblationSetting:
    sw = AttentionSwitches(scale=scale, spatial=spatial, task=task)
    name = "L S C: " + " ".join(CHECK if v else CROSS for v in (scale, spatial, task))
    return AblationSetting(name, "all blocks", sw, scale, spatial, task)


def knockout_settings(num_blocks: int) -> list[AblationSetting]:
    """One attention off in one block, all others on."""
    out = []
    for b in range(num_blocks):
        for attention in ("scale", "spatial", "task"):
            flags = {a: a != attention for a in ("scale", "spatial", "task")}
            out.append(AblationSetting(f"block {b + 1}: {attention} off", "one block",
                                       knock_out(num_blocks, b, attention), block=b + 1, attention=attention,
                                       **flags))
    return out


def ablation_settings(num_blocks: int, one_block: bool = True) -> list[AblationSetting]:
    """Evaluation order: the 8 global combinations (`global_settings`), then, with `one_block`,
    every one-block knock-out (block 1 scale, spatial, task, block 2 ...)."""
    return global_settings() + (knockout_settings(num_blocks) if one_block else [])


def ablation_table(model, data_root, split: str = "val", max_images: Optional[int] = None,
                   one_block: bool = True, batch_size: int = 1,
                   progress: Optional[Callable[[int, int], None]] = None, show_progress: bool = False,
                   settings: Optional[Sequence[AblationSetting]] = None,
                   csv_path: Optional[str | Path] = None, notes: Sequence[str] = (),
                   on_row: Optional[Callable[[dict, float], None]] = None, coarser_branch=None) -> pd.DataFrame:
    """COCO AP (percent) of `model` on a split for each setting, in `ablation_settings` order: the 8
    global combinations (all on first), then (with `one_block`) every one-block knock-out.
    Columns `ABLATION_COLUMNS`: setting, kind, L, S, C (check marks), block, attention, AP..APl,
    images, delta_AP (vs all on). `df.attrs["note"]` = `KNOCKOUT_NOTE`.
    batch_size 1 (default) runs each image alone, as the official test path does: batched images are
    padded to a common size, which changes what the attentions pool over.

    csv_path: append each row to this CSV as soon as it is computed, under `notes` ('# ' lines), with
    the shared resumable protocol (`analysis.tables.ResumableTable`: a ``.done`` file lists the
    finished settings). An existing file is resumed: its notes and header must equal this run's, else
    `AblationCSVError`; finished settings are not computed again, a row cut off by an interruption is
    dropped, and the DataFrame returned holds every row of the file in `ablation_settings` order.
    coarser_branch: the coarser-branch mode of every pass (None = the model's own).
    progress(done, total) is called after each setting (resumed ones count as done); on_row(row,
    seconds) after each setting computed now; show_progress: one progress bar over all images."""
    from dyhead.evaluate import evaluate_detector
    from dyhead.progress import progress_bar

    data_root = dataset_root(data_root, split)
    num_blocks = model.config.tower.num_blocks
    order = list(settings) if settings is not None else ablation_settings(num_blocks, True)
    if settings is None:
        settings = ablation_settings(num_blocks, one_block)
    rows: list[dict] = []
    table = None
    if csv_path is not None:
        csv_path = Path(csv_path)
        table = ResumableTable(csv_path, list(notes), ABLATION_COLUMNS)
        try:
            done = table.open([s.name for s in order])
        except TableMismatchError as exc:
            raise AblationCSVError(str(exc)) from None
        if done:
            rows = read_ablation_csv(csv_path).to_dict("records")
    finished = {r["setting"] for r in rows}
    todo = [s for s in settings if s.name not in finished]
    reference = _all_on_ap(rows)
    total = max(len(settings), len(rows))
    if progress is not None and rows:
        progress(min(len(rows), total), total)
    bar = None
    if show_progress and todo:
        images = len(dataset_images(data_root, split, max_images))
        bar = progress_bar(len(todo) * images, desc="ablation", unit="img")
    try:
        for s in todo:
            start = time.perf_counter()
            result = evaluate_detector(model, data_root, split, switches=s.switches, max_images=max_images,
                                       batch_size=batch_size, progress=False, bar=bar, coarser_branch=coarser_branch)
            row = {
                "setting": s.name, "kind": s.kind,
                "L": CHECK if s.scale else CROSS, "S": CHECK if s.spatial else CROSS, "C": CHECK if s.task else CROSS,
                "block": s.block if s.block is not None else "all", "attention": s.attention or "",
                **{m: _percent(result[m]) for m in METRIC_COLUMNS},
                "images": int(result["num_images"]),
            }
            if _is_all_on(row):
                reference = row["AP"]
            row["delta_AP"] = row["AP"] - reference
            rows.append(row)
            if table is not None:
                table.append([tuple(row[c] for c in ABLATION_COLUMNS)], [s.name])
            if on_row is not None:
                on_row(row, time.perf_counter() - start)
            if progress is not None:
                progress(len(rows), total)
    finally:
        if bar is not None:
            bar.close()
        if table is not None:
            table.close()
    if csv_path is not None:
        df = read_ablation_csv(csv_path)
        attrs = dict(df.attrs)
        rank = {s.name: i for i, s in enumerate(order)}
        df = df.iloc[sorted(range(len(df)), key=lambda i: rank.get(df["setting"].iloc[i], len(rank)))]
        df = df.reset_index(drop=True)
        df.attrs.update(attrs)
        return df
    df = pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))
    _set_delta(df)
    df.attrs["note"] = KNOCKOUT_NOTE
    return df


def read_ablation_csv(path: str | Path) -> pd.DataFrame:
    """An ablation CSV written by `ablation_table(csv_path=...)` as its DataFrame (block as "all" or an
    int, attention "" for the global rows); the '# ' lines go to `df.attrs["notes"]`."""
    df = read_table(path)
    df["block"] = [b if str(b) == "all" else int(b) for b in df["block"]]
    df["attention"] = ["" if pd.isna(a) else str(a) for a in df["attention"]]
    df["images"] = df["images"].astype(int)
    _set_delta(df)
    df.attrs["note"] = KNOCKOUT_NOTE
    return df


def _is_all_on(row) -> bool:
    return row["kind"] == "all blocks" and row["L"] == row["S"] == row["C"] == CHECK


def _all_on_ap(rows: Sequence[dict]) -> float:
    return next((float(r["AP"]) for r in rows if _is_all_on(r)), float("nan"))


def _set_delta(df: pd.DataFrame) -> None:
    df["delta_AP"] = df["AP"] - _all_on_ap(df.to_dict("records"))


def _percent(value: float) -> float:
    """COCOeval's fraction in percent; its -1 (no ground truth in that size range) becomes NaN."""
    value = float(value)
    return 100.0 * value if value >= 0 else float("nan")


def detection_changes(model, image: np.ndarray, settings: Optional[Sequence[AblationSetting]] = None,
                      iou_threshold: float = 0.5, score_threshold: float = 0.3):
    """One image's detections with all attentions on (reference) and with each setting (default: each
    attention off in every block). Returns (summary DataFrame with one row per setting: matched,
    added, removed, mean |score change|, mean IoU; {setting name: DetectionDiff})."""
    if settings is None:
        settings = [AblationSetting(f"{a} off", "all blocks", AttentionSwitches(**{a: False}),
                                    **{x: x != a for x in ("scale", "spatial", "task")})
                    for a in ("scale", "spatial", "task")]
    names = model.config.class_names
    ref = model.predict([image])[0]
    diffs, rows = {}, []
    for s in settings:
        other = model.predict([image], switches=s.switches)[0]
        diff = match_detections(ref, other, iou_threshold, score_threshold, names)
        diffs[s.name] = diff
        rows.append({"setting": s.name, **diff_summary(diff)})
    df = pd.DataFrame(rows)
    df.attrs["note"] = (f"reference: all attentions on; boxes scoring >= {score_threshold:g}, matched within a class "
                        f"greedily by IoU >= {iou_threshold:g}; " + KNOCKOUT_NOTE)
    return df, diffs


def plot_detection_changes(image: np.ndarray, diffs: dict, class_names=None):
    """One side-by-side figure per setting: {setting name: figure}."""
    return {name: plot_detection_pair(image, d, "all attentions on", name, class_names) for name, d in diffs.items()}


def _table1_order(t1: pd.DataFrame) -> pd.DataFrame:
    """The global rows in the paper's Table 1 order, whatever order they were computed in."""
    rank = {tuple(CHECK if v else CROSS for v in flags): i for i, flags in enumerate(TABLE1_ORDER)}
    return t1.iloc[sorted(range(len(t1)), key=lambda i: rank[(t1.L.iloc[i], t1.S.iloc[i], t1.C.iloc[i])])]


def plot_ablation(df: pd.DataFrame):
    """Left: AP of the 8 on/off combinations (Table 1 order); right: AP change of each one-block
    knock-out (blocks x attention)."""
    import matplotlib.pyplot as plt

    t1 = _table1_order(df[df.kind == "all blocks"])
    ko = df[df.kind == "one block"]
    fig, axes = plt.subplots(1, 2 if len(ko) else 1, figsize=(11 if len(ko) else 6, 3.8), squeeze=False)
    ax = axes[0, 0]
    labels = [f"{r.L} {r.S} {r.C}" for r in t1.itertuples()]
    ax.bar(range(len(t1)), t1["AP"], color="#4c72b0")
    for x, v in enumerate(t1["AP"]):
        ax.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    full = t1[(t1.L == CHECK) & (t1.S == CHECK) & (t1.C == CHECK)]
    if len(full):
        ax.axhline(float(full["AP"].iloc[0]), color="0.4", lw=0.8, ls="--")
    ax.set_xticks(range(len(t1)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_xlabel("L (scale)  S (spatial)  C (task), on in every block")
    ax.set_ylabel("AP (%)")
    ax.set_title("Attentions switched off at inference", fontsize=9)
    if len(ko):
        ax2 = axes[0, 1]
        blocks = sorted(ko.block.unique())
        atts = ["scale", "spatial", "task"]
        grid = np.array([[float(ko[(ko.block == b) & (ko.attention == a)].delta_AP.iloc[0]) for b in blocks] for a in atts])
        lim = max(float(np.nanmax(np.abs(grid))), 1e-6)
        im = ax2.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax2.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7)
        ax2.set_xticks(range(len(blocks)))
        ax2.set_xticklabels([str(b) for b in blocks])
        ax2.set_yticks(range(3))
        ax2.set_yticklabels(atts)
        ax2.set_xlabel("block with the attention off")
        ax2.set_title("AP change, one attention off in one block", fontsize=9)
        fig.colorbar(im, ax=ax2, label="AP change (points)")
    images = int(df["images"].iloc[0]) if len(df) else 0
    fig.text(0.01, 0.005, f"{images} images. " + KNOCKOUT_NOTE + ".", fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plotly_ablation(df: pd.DataFrame):
    import plotly.graph_objects as go

    t1 = _table1_order(df[df.kind == "all blocks"])
    fig = go.Figure(go.Bar(x=[f"L{r.L} S{r.S} C{r.C}" for r in t1.itertuples()], y=t1["AP"],
                           text=[f"{v:.1f}" for v in t1["AP"]], textposition="outside"))
    fig.update_layout(title="AP with attentions switched off at inference (one trained model)",
                      yaxis_title="AP (%)", xaxis_title="L = scale, S = spatial, C = task")
    return fig

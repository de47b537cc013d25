"""Attention on/off at inference: COCO AP of one trained model with attentions switched off (an
analogue of the paper's Table 1), and what changes in one image's detections.

The paper's Table 1 retrains a model for every combination of scale-aware (L), spatial-aware (S) and
task-aware (C) attention. Here one trained model is evaluated with attentions switched off at test
time (`AttentionSwitches`), in all 8 combinations and one attention in one block at a time. What
replaces an attention switched off is a named variant (`dyhead.config`, `VARIANT_NOTES`):

* scale: "calibrated" (default; the dataset-mean weight per (block, level), so the block keeps the
  output magnitude the network was trained on), "calibrated-per-source" (per (block, level, source):
  a static scale attention) or "fixed-1" (every weight 1, which also rescales each block's output);
* spatial: zero offsets and masks of 1 (the cross-level aggregation of Eq. 4 stays on);
* task: "relu" (default; a plain ReLU) or "static" (the dataset-mean DyReLU coefficients, which
  removes only the input-dependent part).

Every row names its variants (columns scale_off, task_off and the setting name). These knock-outs
measure how much the trained model relies on each attention; they are not retrained ablations and
need not match Table 1 (`analysis.retrain` retrains).

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

from dataclasses import replace

from dyhead.config import SCALE_KNOCKOUTS, SPATIAL_KNOCKOUT, TASK_KNOCKOUTS, AttentionSwitches, knock_out

from .detection_diff import diff_summary, match_detections, plot_detection_pair
from .sources import dataset_images, dataset_root
from .tables import ResumableTable, TableMismatchError, read_table

__all__ = [
    "KNOCKOUT_NOTE",
    "VARIANT_NOTES",
    "variants_note",
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
#: What each knock-out variant puts in place of the attention (one sentence each, for notes and captions).
VARIANT_NOTES = {
    "scale calibrated": "scale off = one constant per (block, level), the dataset-mean weight of the level",
    "scale calibrated-per-source": "scale off = one constant per (block, level, source level), the dataset-mean "
                                   "weight of each branch (a static scale attention)",
    "scale fixed-1": "scale off = every weight 1 (a plain mean; also rescales each block's output, as the "
                     "learned weights lie in [0.5, 1])",
    f"spatial {SPATIAL_KNOCKOUT}": "spatial off = zero offsets and masks of 1, an ordinary 3x3 conv (the "
                                   "cross-level aggregation of Eq. 4 stays on)",
    "task relu": "task off = a plain ReLU (DyReLU's neutral coefficients)",
    "task static": "task off = the dataset-mean DyReLU coefficients per (block, level, channel), which removes "
                   "only the input-dependent part",
}


def variants_note(scale_offs: Sequence[str] = ("calibrated",), task_offs: Sequence[str] = ("relu",),
                  constants=None) -> str:
    """The note naming what the knock-outs of a table put in place of each attention."""
    keys = [f"scale {v}" for v in scale_offs] + [f"spatial {SPATIAL_KNOCKOUT}"] + [f"task {v}" for v in task_offs]
    text = "knock-out variants: " + "; ".join(VARIANT_NOTES[k] for k in keys)
    if constants is not None and (any(v != "fixed-1" for v in scale_offs) or "static" in task_offs):
        text += f"; constants: {constants.describe()}"
    return text


def batch_size_note(batch_size: int) -> str:
    """The note every AP table carries about the images per forward pass it was computed with."""
    return (f"batch size {batch_size} (1 = each image alone, as the official test path; larger batches pad "
            "images to a common size, which changes what the attentions pool over)")


#: The columns of `ablation_table`'s DataFrame and CSV, in order.
ABLATION_COLUMNS = ("setting", "kind", "L", "S", "C", "scale_off", "task_off", "block", "attention", *METRIC_COLUMNS,
                    "images", "delta_AP")
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
    scale_off: str = ""  # the scale variant when scale is off, else ""
    task_off: str = ""  # the task variant when task is off, else ""

    def with_constants(self, constants) -> "AblationSetting":
        """This setting with `constants` in every block's switches (for the calibrated/static variants)."""
        sw = self.switches
        if isinstance(sw, AttentionSwitches):
            sw = replace(sw, constants=constants)
        else:
            sw = tuple(replace(s, constants=constants) for s in sw)
        return replace(self, switches=sw)

    @property
    def needs_constants(self) -> bool:
        sw = self.switches if not isinstance(self.switches, AttentionSwitches) else (self.switches,)
        return any(s.needs_constants for s in sw)


def _check_variants(scale_offs: Sequence[str], task_offs: Sequence[str]) -> None:
    bad = [v for v in scale_offs if v not in SCALE_KNOCKOUTS] + [v for v in task_offs if v not in TASK_KNOCKOUTS]
    if bad or not scale_offs or not task_offs:
        raise ValueError(f"unknown or no knock-out variants {bad}: scale {SCALE_KNOCKOUTS}, task {TASK_KNOCKOUTS}")


def _variant_suffix(scale_off: str, task_off: str) -> str:
    parts = ([f"scale {scale_off}"] if scale_off else []) + ([f"task {task_off}"] if task_off else [])
    return f" [{', '.join(parts)}]" if parts else ""


def table1_settings(scale_offs: Sequence[str] = ("calibrated",), task_offs: Sequence[str] = ("relu",)
                    ) -> list[AblationSetting]:
    """The 8 on/off combinations in every block, in the paper's Table 1 order, each with every
    variant of its switched-off attentions."""
    return [s for flags in TABLE1_ORDER for s in _global_settings(*flags, scale_offs, task_offs)]


def global_settings(scale_offs: Sequence[str] = ("calibrated",), task_offs: Sequence[str] = ("relu",)
                    ) -> list[AblationSetting]:
    """The same combinations in evaluation order (`GLOBAL_ORDER`: all on first)."""
    _check_variants(scale_offs, task_offs)
    return [s for flags in GLOBAL_ORDER for s in _global_settings(*flags, scale_offs, task_offs)]


def _global_settings(scale: bool, spatial: bool, task: bool, scale_offs, task_offs) -> list[AblationSetting]:
    out = []
    for scale_off in (("",) if scale else scale_offs):
        for task_off in (("",) if task else task_offs):
            sw = AttentionSwitches(scale=scale, spatial=spatial, task=task, scale_off=scale_off or "calibrated",
                                   task_off=task_off or "relu")
            name = "L S C: " + " ".join(CHECK if v else CROSS for v in (scale, spatial, task))
            out.append(AblationSetting(name + _variant_suffix(scale_off, task_off), "all blocks", sw, scale,
                                       spatial, task, scale_off=scale_off, task_off=task_off))
    return out


def knockout_settings(num_blocks: int, scale_offs: Sequence[str] = ("calibrated",),
                      task_offs: Sequence[str] = ("relu",)) -> list[AblationSetting]:
    """One attention off in one block, all others on, with every variant of it."""
    _check_variants(scale_offs, task_offs)
    out = []
    for b in range(num_blocks):
        for attention in ("scale", "spatial", "task"):
            flags = {a: a != attention for a in ("scale", "spatial", "task")}
            variants = {"scale": scale_offs, "task": task_offs}.get(attention, ("",))
            for v in variants:
                kw = {"scale": {"scale_off": v}, "task": {"task_off": v}}.get(attention, {})
                out.append(AblationSetting(f"block {b + 1}: {attention} off" + (f" ({v})" if v else ""), "one block",
                                           knock_out(num_blocks, b, attention, **kw), block=b + 1,
                                           attention=attention, **flags, **kw))
    return out


def ablation_settings(num_blocks: int, one_block: bool = True, scale_offs: Sequence[str] = ("calibrated",),
                      task_offs: Sequence[str] = ("relu",)) -> list[AblationSetting]:
    """Evaluation order: the global combinations (`global_settings`), then, with `one_block`,
    every one-block knock-out (block 1 scale, spatial, task, block 2 ...), each attention switched
    off once per variant in `scale_offs` / `task_offs`."""
    return global_settings(scale_offs, task_offs) + (
        knockout_settings(num_blocks, scale_offs, task_offs) if one_block else [])


def ablation_table(model, data_root, split: str = "val", max_images: Optional[int] = None,
                   one_block: bool = True, batch_size: int = 1,
                   progress: Optional[Callable[[int, int], None]] = None, show_progress: bool = False,
                   settings: Optional[Sequence[AblationSetting]] = None,
                   csv_path: Optional[str | Path] = None, notes: Sequence[str] = (),
                   on_row: Optional[Callable[[dict, float], None]] = None, coarser_branch=None,
                   constants=None) -> pd.DataFrame:
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
    constants: the `dyhead.knockout.KnockoutConstants` that calibrated and static variants read
    (required when a setting to compute uses them; name their source in `notes`, `variants_note`).
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
    if any(s.needs_constants for s in todo):
        if constants is None:
            raise ValueError("calibrated or static knock-outs need constants=dyhead.knockout.load_or_calibrate(...)")
        todo = [s.with_constants(constants) for s in todo]
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
                "scale_off": s.scale_off, "task_off": s.task_off,
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
    for column in ("attention", "scale_off", "task_off"):
        df[column] = ["" if pd.isna(a) else str(a) for a in df[column]]
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
                      iou_threshold: float = 0.5, score_threshold: float = 0.3, constants=None,
                      scale_offs: Sequence[str] = ("calibrated",), task_offs: Sequence[str] = ("relu",)):
    """One image's detections with all attentions on (reference) and with each setting (default: each
    attention off in every block, once per variant in `scale_offs` / `task_offs`; `constants` for the
    calibrated and static ones). Returns (summary DataFrame with one row per setting: matched,
    added, removed, mean |score change|, mean IoU; {setting name: DetectionDiff})."""
    if settings is None:
        settings = [s for s in global_settings(scale_offs, task_offs)
                    if (s.scale, s.spatial, s.task).count(False) == 1]
    if any(s.needs_constants for s in settings):
        if constants is None:
            raise ValueError("calibrated or static knock-outs need constants=dyhead.knockout.load_or_calibrate(...)")
        settings = [s.with_constants(constants) for s in settings]
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
    """The global rows in the paper's Table 1 order (variants of one row in computed order)."""
    rank = {tuple(CHECK if v else CROSS for v in flags): i for i, flags in enumerate(TABLE1_ORDER)}
    return t1.iloc[sorted(range(len(t1)), key=lambda i: rank[(t1.L.iloc[i], t1.S.iloc[i], t1.C.iloc[i])])]


def _row_label(r, sep: str = "\n") -> str:
    """'L S C' check marks and, below, the variants of the attentions switched off."""
    variants = ", ".join(v for v in (f"L {r.scale_off}" if r.scale_off else "",
                                     f"C {r.task_off}" if r.task_off else "") if v)
    return f"{r.L} {r.S} {r.C}" + (f"{sep}{variants}" if variants else "")


def _variants_used(df: pd.DataFrame) -> str:
    keys = [f"scale {v}" for v in dict.fromkeys(df.scale_off) if v] + (
        [f"spatial {SPATIAL_KNOCKOUT}"] if (df.S == CROSS).any() else []) + [
        f"task {v}" for v in dict.fromkeys(df.task_off) if v]
    return "; ".join(VARIANT_NOTES[k] for k in keys)


def plot_ablation(df: pd.DataFrame):
    """Left: AP of the 8 on/off combinations (Table 1 order); right: AP change of each one-block
    knock-out (blocks x attention)."""
    import matplotlib.pyplot as plt

    t1 = _table1_order(df[df.kind == "all blocks"])
    ko = df[df.kind == "one block"]
    width = max(6.0, 0.4 * len(t1))  # room for the variant labels when every variant is drawn
    fig, axes = plt.subplots(1, 2 if len(ko) else 1, figsize=(width + (5 if len(ko) else 0), 3.8 if len(t1) <= 8 else 5.5),
                             squeeze=False)
    ax = axes[0, 0]
    labels = [_row_label(r) for r in t1.itertuples()]
    ax.bar(range(len(t1)), t1["AP"], color="#4c72b0")
    for x, v in enumerate(t1["AP"]):
        ax.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    full = t1[(t1.L == CHECK) & (t1.S == CHECK) & (t1.C == CHECK)]
    if len(full):
        ax.axhline(float(full["AP"].iloc[0]), color="0.4", lw=0.8, ls="--")
    ax.set_xticks(range(len(t1)))
    ax.set_xticklabels(labels, fontsize=6 if len(t1) > 8 else 8, rotation=90 if len(t1) > 8 else 0)
    ax.set_xlabel("L (scale)  S (spatial)  C (task), on in every block")
    ax.set_ylabel("AP (%)")
    ax.set_title("Attentions switched off at inference", fontsize=9)
    if len(ko):
        ax2 = axes[0, 1]
        blocks = sorted(ko.block.unique())
        variant = ko.scale_off + ko.task_off
        atts = list(dict.fromkeys(zip(ko.attention, variant)))  # (attention, variant) in computed order
        grid = np.array([[float(ko[(ko.block == b) & (ko.attention == a) & (variant == v)].delta_AP.iloc[0])
                          for b in blocks] for a, v in atts])
        lim = max(float(np.nanmax(np.abs(grid))), 1e-6)
        im = ax2.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax2.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7)
        ax2.set_xticks(range(len(blocks)))
        ax2.set_xticklabels([str(b) for b in blocks])
        ax2.set_yticks(range(len(atts)))
        ax2.set_yticklabels([f"{a} ({v})" if v else a for a, v in atts], fontsize=7)
        ax2.set_xlabel("block with the attention off")
        ax2.set_title("AP change, one attention off in one block", fontsize=9)
        fig.colorbar(im, ax=ax2, label="AP change (points)")
    images = int(df["images"].iloc[0]) if len(df) else 0
    import textwrap

    caption = textwrap.fill(f"{images} images. {KNOCKOUT_NOTE}. {_variants_used(df)}.", 190)
    fig.text(0.01, 0.005, caption, fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.04 + 0.025 * caption.count("\n"), 1, 1))
    return fig


def plotly_ablation(df: pd.DataFrame):
    import plotly.graph_objects as go

    t1 = _table1_order(df[df.kind == "all blocks"])
    fig = go.Figure(go.Bar(x=[_row_label(r, "<br>") for r in t1.itertuples()], y=t1["AP"],
                           text=[f"{v:.1f}" for v in t1["AP"]], textposition="outside"))
    fig.update_layout(title="AP with attentions switched off at inference (one trained model)",
                      yaxis_title="AP (%)", xaxis_title="L = scale, S = spatial, C = task; below: the knock-out variant")
    return fig

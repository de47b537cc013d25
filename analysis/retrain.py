"""The paper's Table 1 and Table 2 as the paper made them: one model trained per row.

Table 1 (attention modules): the ATSS head with its own conv towers (the baseline, no DyHead) and the
DyHead tower with the scale (L), spatial (S) and task (C) attentions built in every combination;
Table 2 (depth): the baseline and 1, 2, 4, 6, 8, 10 blocks with all three attentions. Every run of a
grid trains the same preset (same data, iterations, batch, schedule: `dyhead.train.TrainPreset` with
a fixed iteration count, never a time budget) from its seed, and is evaluated the same way (COCOeval
on the evaluation split, each image alone). Unlike the inference-time knock-outs of
`analysis.ablation`, a retrained row measures what a model trained without the attention reaches.

`run_grid` is resumable at two levels: each finished run is one row of the CSV
(`analysis.tables.ResumableTable`, key column ``run``), so a restarted grid skips it; a run killed in
the middle continues from its ``resume.pt`` (the trainer's exact resume: weights, optimizer, RNG and
iteration). A grid killed anywhere and started again writes the same rows as an uninterrupted one
(wall time aside).

Paper numbers: Dai et al., CVPR 2021, Tables 1 and 2 (ResNet-50, COCO val2017, 1x schedule).
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd

from .tables import ResumableTable, TableMismatchError, read_table

__all__ = [
    "RetrainRow",
    "TABLE1_ROWS",
    "TABLE2_ROWS",
    "PAPER_TABLE1",
    "PAPER_TABLE2_AP",
    "RETRAIN_COLUMNS",
    "RETRAIN_NOTE",
    "grid_rows",
    "row_preset",
    "run_name",
    "run_grid",
    "read_retrain_csv",
    "retrain_summary",
    "beside_knockouts",
    "seed_spread",
    "retrain_display",
    "markdown_table",
    "plot_table1",
    "plot_table2",
]

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
RETRAIN_COLUMNS = ("run", "grid", "row", "seed", "blocks", "L", "S", "C", *METRICS, "parameters", "GMACs",
                   "iterations", "wall_time_s")
RETRAIN_NOTE = ("retrained ablation: one model trained per row and seed (same data, iterations, schedule and "
                "evaluation), as the paper's Tables 1 and 2; not the inference-time knock-outs of one model")


@dataclass(frozen=True)
class RetrainRow:
    """One row of a grid: `blocks` DyHead blocks with the attentions built in (0 = the ATSS baseline
    with its 4-conv towers)."""

    name: str
    blocks: int
    scale: bool = True
    spatial: bool = True
    task: bool = True

    @property
    def slug(self) -> str:
        return self.name.replace("+", "").replace(" ", "_")


def _t1(name: str) -> RetrainRow:
    if name == "baseline":
        return RetrainRow("baseline", 0, False, False, False)
    parts = name.split("+")
    return RetrainRow(name, 6, "L" in parts, "S" in parts, "C" in parts)


#: Table 1's rows in the paper's order (L = scale, S = spatial, C = task; 6 blocks as the full head).
TABLE1_ROWS = tuple(_t1(n) for n in ("baseline", "L", "S", "C", "S+C", "L+C", "L+S", "L+S+C"))
#: Table 2's rows: the baseline, then the depths with every attention.
TABLE2_ROWS = (RetrainRow("baseline", 0, False, False, False),
               *(RetrainRow(f"{b} block" + ("s" if b > 1 else ""), b) for b in (1, 2, 4, 6, 8, 10)))
#: The paper's Table 1: (AP, AP50, AP75, APs, APm, APl) per row.
PAPER_TABLE1 = {
    "baseline": (39.0, 57.2, 42.4, 22.1, 43.1, 50.2),
    "L": (39.9, 57.8, 43.5, 25.4, 44.0, 52.4),
    "S": (41.4, 58.5, 45.2, 26.8, 45.2, 54.3),
    "C": (40.3, 58.3, 43.9, 24.2, 44.6, 53.7),
    "S+C": (42.0, 59.5, 45.5, 25.5, 46.1, 55.2),
    "L+C": (40.6, 58.6, 44.4, 24.6, 44.8, 53.3),
    "L+S": (41.9, 59.2, 45.6, 24.8, 46.1, 54.5),
    "L+S+C": (42.6, 60.1, 46.4, 26.1, 46.8, 56.0),
}
#: The paper's Table 2: blocks (0 = baseline) -> (AP, AP50, AP75).
PAPER_TABLE2_AP = {0: (39.0, 57.2, 42.4), 1: (36.7, 55.5, 40.0), 2: (39.5, 57.8, 43.1), 4: (42.0, 59.9, 45.9),
                   6: (42.6, 60.1, 46.4), 8: (42.5, 59.6, 46.1), 10: (42.3, 59.4, 45.9)}
GRIDS = {"table1": TABLE1_ROWS, "table2": TABLE2_ROWS}


def grid_rows(grid: str, rows: Optional[Sequence[str]] = None) -> list[RetrainRow]:
    """The rows of 'table1' or 'table2' (all, or those named in `rows`, in the grid's order)."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; expected one of {sorted(GRIDS)}")
    out = [r for r in GRIDS[grid] if rows is None or r.name in rows]
    missing = set(rows or ()) - {r.name for r in out}
    if missing:
        raise ValueError(f"grid {grid} has no row(s) {sorted(missing)}; rows: {[r.name for r in GRIDS[grid]]}")
    return out


def row_preset(preset, row: RetrainRow):
    """`preset` (a `dyhead.train.TrainPreset`) with the detector of `row`: its number of blocks and
    the attentions built; the baseline has no DyHead tower and the ATSS head's 4-conv towers."""
    det = preset.detector
    tower = replace(det.tower, num_blocks=row.blocks, use_scale_attention=row.scale,
                    use_spatial_attention=row.spatial, use_task_attention=row.task)
    return replace(preset, detector=replace(det, tower=tower, head_num_convs=4 if row.blocks == 0 else 0))


def _gmacs(model) -> float:
    """GMACs of one forward pass at the model's test size (the longer side padded to its divisor),
    counted on meta tensors as `analysis.efficiency` counts them."""
    import copy

    import torch

    from .efficiency import count_gmacs

    cfg = model.config
    div = cfg.size_divisibility
    side = -(-cfg.max_size // div) * div
    meta = copy.deepcopy(model).to("meta").eval()
    images = torch.zeros(1, 3, side, side, device="meta")
    gmacs, _ = count_gmacs(lambda: meta(images))
    return round(gmacs, 3)


def run_name(row: RetrainRow, seed: int) -> str:
    """The folder (and CSV key) of one trained configuration: named by what is trained, not by the
    grid's row label, so Table 2's baseline and 6-block rows reuse Table 1's baseline and L+S+C runs."""
    if row.blocks == 0:
        return f"baseline_seed{seed}"
    built = "".join(k for k, on in (("L", row.scale), ("S", row.spatial), ("C", row.task)) if on) or "none"
    return f"b{row.blocks}_{built}_seed{seed}"


RESULT_FILE = "result.json"


def _protocol(preset, data_root, train_split: str, eval_split: str, eval_images: Optional[int]) -> dict:
    """Everything a run's number depends on besides its seed (compared before a finished run is reused)."""
    from dataclasses import asdict

    return {"preset": json.loads(json.dumps(asdict(preset), default=str)), "data": Path(data_root).name,
            "train_split": train_split, "eval_split": eval_split, "eval_images": eval_images}


def _train_and_evaluate(preset, data_root, run_dir: Path, seed: int, protocol: dict, *, train_split: str,
                        eval_split: str, eval_images: Optional[int], device: str, progress: bool,
                        workers: Optional[int], stop_at: Optional[int], threads: int = 0) -> Optional[dict]:
    """Train one configuration from its seed (continuing from ``resume.pt``), evaluate it and write
    ``result.json``; a finished run's file is read instead. None when cut off at `stop_at`."""
    import torch

    from dyhead.evaluate import evaluate_detector
    from dyhead.train import Trainer

    result_path = run_dir / RESULT_FILE
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        if result.get("protocol") != protocol:
            raise ValueError(f"{run_dir} was trained with another protocol (preset, data or evaluation) than this "
                             "grid asks for; give the grid another --out folder or remove that run")
        return result
    if threads:
        torch.set_num_threads(threads)
    trainer = Trainer(preset, data_root, run_dir, split=train_split, seed=seed, device=device, progress=progress,
                      workers=workers)
    trainer.preset_name = protocol.get("preset_name", "custom")
    if (run_dir / "resume.pt").is_file():
        trainer.load_resume(run_dir / "resume.pt")
    trainer.train(stop_at=stop_at)
    if not trainer.finished():
        return None
    model = trainer.model.eval()
    metrics = evaluate_detector(model, data_root, eval_split, max_images=eval_images, batch_size=1, progress=False)
    result = {
        **{m: round(100.0 * metrics[m], 3) if metrics[m] >= 0 else None for m in METRICS},
        "parameters": sum(p.numel() for p in model.parameters()), "GMACs": _gmacs(model),
        "iterations": trainer.state.iteration, "wall_time_s": round(trainer.state.elapsed, 1),
        "eval_images": metrics["num_images"], "protocol": protocol,
    }
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, result_path)
    return result


def run_grid(grid: str, data_root, out_dir, *, seeds: Sequence[int] = (0, 1), rows: Optional[Sequence[str]] = None,
             preset="demo_cpu", iterations: Optional[int] = None, train_split: str = "train",
             eval_split: str = "val", eval_images: Optional[int] = None, device: str = "cpu",
             progress: bool = True, on_row: Optional[Callable[[dict], None]] = None,
             stop_at: Optional[int] = None, workers: Optional[int] = 0,
             checkpoint_period: Optional[int] = None, jobs: int = 1, threads: int = 0) -> pd.DataFrame:
    """Train and evaluate every (row, seed) of `grid` ('table1' or 'table2') into
    ``out_dir/retrain_<grid>.csv`` (columns `RETRAIN_COLUMNS`) and ``out_dir/runs/<run_name>/``.

    Runs go seed by seed (every row of the first seed, then the next seed), so a grid cut short has
    whole tables of its first seeds, and a grid asked for more seeds later appends their rows (the
    protocol in the CSV's notes does not name the seeds). preset: a `dyhead.train.TRAIN_PRESETS` name or a `TrainPreset`.
    iterations: every run's iterations (default: the preset's); checkpoint_period: iterations between
    resume files. A finished run (its ``result.json``, from either grid) is reused; a run with a
    ``resume.pt`` continues from it. jobs: runs trained at the same time, each in its own process with
    `threads` torch threads (0: torch's default); rows are still written in the grid's order.
    on_row(row) after each row. stop_at: stop every run at this iteration without finishing it (for
    tests: a run cut off in the middle, as a kill would). Returns the CSV's rows."""
    from dyhead.train import TRAIN_PRESETS

    base = TRAIN_PRESETS[preset] if isinstance(preset, str) else preset
    preset_name = preset if isinstance(preset, str) else "custom"
    if iterations is not None:
        base = replace(base, max_iter=int(iterations))
    if checkpoint_period is not None:
        base = replace(base, checkpoint_period=int(checkpoint_period))
    out_dir = Path(out_dir)
    csv = out_dir / f"retrain_{grid}.csv"
    todo = [(r, s) for s in seeds for r in grid_rows(grid, rows)]
    notes = [RETRAIN_NOTE, f"grid {grid}; preset {preset_name}, {base.max_iter} iterations at batch {base.batch_size}, "
             f"LR {base.base_lr} with {base.warmup_iters} warm-up iterations, x{base.gamma} at "
             f"{[round(x, 3) for x in base.steps]} of the iterations",
             f"trained on {Path(data_root).name}/{train_split}, evaluated with COCOeval on {eval_split} "
             f"({'all' if eval_images is None else eval_images} images, batch 1); AP in percent; GMACs at the "
             "test size, padded square; wall_time_s = training time, restored across resumes; run = the folder "
             "under runs/, shared by the rows of both grids that train the same configuration"]
    table = ResumableTable(csv, notes, RETRAIN_COLUMNS)
    try:
        done = table.open()
    except TableMismatchError as exc:
        raise ValueError(str(exc)) from None
    pending = [(r, s) for r, s in todo if run_name(r, s) not in done]

    def job(row: RetrainRow, seed: int) -> tuple:
        p = row_preset(base, row)
        protocol = {**_protocol(p, data_root, train_split, eval_split, eval_images), "preset_name": preset_name}
        return (p, data_root, out_dir / "runs" / run_name(row, seed), seed, protocol), dict(
            train_split=train_split, eval_split=eval_split, eval_images=eval_images, device=device,
            progress=progress, workers=workers, stop_at=stop_at, threads=threads)

    pool = None
    try:
        if jobs > 1 and len(pending) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
            futures = [pool.submit(_train_and_evaluate, *args, **kw) for args, kw in (job(r, s) for r, s in pending)]
            results = (f.result() for f in futures)
        else:
            results = (_train_and_evaluate(*args, **kw) for args, kw in (job(r, s) for r, s in pending))
        for (row, seed), result in zip(pending, results):
            if result is None:
                return read_retrain_csv(csv)  # cut off on purpose (stop_at): the next call resumes it
            key = run_name(row, seed)
            record = {"run": key, "grid": grid, "row": row.name, "seed": seed, "blocks": row.blocks,
                      "L": row.scale, "S": row.spatial, "C": row.task,
                      **{m: float("nan") if result[m] is None else result[m] for m in METRICS},
                      **{c: result[c] for c in ("parameters", "GMACs", "iterations", "wall_time_s")}}
            table.append([tuple(record[c] for c in RETRAIN_COLUMNS)], [key])
            if on_row is not None:
                on_row(record)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        table.close()
    return read_retrain_csv(csv)


def read_retrain_csv(path: str | Path) -> pd.DataFrame:
    """A retrain CSV as a DataFrame (notes in ``attrs["notes"]``)."""
    df = read_table(path)
    for c in ("L", "S", "C"):
        df[c] = df[c].astype(str) == "True"
    return df


def retrain_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and number of seeds of each row's AP, beside the paper's AP."""
    g = df.groupby(["grid", "row"], sort=False)
    out = g.agg(blocks=("blocks", "first"), seeds=("seed", "count"), AP_mean=("AP", "mean"), AP_std=("AP", "std"),
                AP_min=("AP", "min"), AP_max=("AP", "max"), AP50_mean=("AP50", "mean"),
                parameters=("parameters", "first"), GMACs=("GMACs", "first")).reset_index()
    out["paper_AP"] = [PAPER_TABLE1.get(r.row, (float("nan"),))[0] if r.grid == "table1"
                       else PAPER_TABLE2_AP.get(int(r.blocks), (float("nan"),))[0] for r in out.itertuples()]
    return out


def seed_spread(df: pd.DataFrame, grid: str) -> str:
    """One sentence on how far apart the seeds of `grid`'s rows are (the noise any difference
    between rows has to beat)."""
    s = retrain_summary(df[df.grid == grid])
    s = s[s.seeds > 1].reset_index(drop=True)
    if not len(s):
        return f"{grid}: one seed per row so far, no spread between seeds to state"
    width = s.AP_max - s.AP_min
    widest = int(width.idxmax())
    return (f"{grid}: between seeds, a row's AP differs by {width.min():.1f} to {width.max():.1f} points "
            f"(widest: {s.row[widest]}); standard deviation {s.AP_std.min():.1f} to {s.AP_std.max():.1f} "
            f"over {int(s.seeds.min())}{'' if s.seeds.min() == s.seeds.max() else f'-{int(s.seeds.max())}'} seeds")


def retrain_display(df: pd.DataFrame, grid: str) -> pd.DataFrame:
    """`grid`'s rows for reading: mean +- standard deviation, each seed's AP, the paper's AP."""
    sub = df[df.grid == grid]
    s = retrain_summary(sub)
    out = pd.DataFrame({"row": s.row, "blocks": s.blocks, "seeds": s.seeds})
    out["AP (mean ± std)"] = [f"{m:.1f} ± {d:.1f}" if d == d else f"{m:.1f}" for m, d in zip(s.AP_mean, s.AP_std)]
    out["AP per seed"] = [", ".join(f"{v:.1f}" for v in sub[sub.row == r].sort_values("seed").AP) for r in s.row]
    out["AP50 (mean)"] = s.AP50_mean.round(1)
    out["paper AP"] = s.paper_AP
    out["parameters"] = s.parameters
    out["GMACs"] = s.GMACs
    return out


def markdown_table(df: pd.DataFrame, grid: str) -> str:
    """`retrain_display(df, grid)` as a Markdown table (the README's and docs' copy of the results)."""
    t = retrain_display(df, grid).drop(columns=["parameters"])
    t["GMACs"] = t["GMACs"].map(lambda v: f"{v:.2f}")
    t["AP50 (mean)"] = t["AP50 (mean)"].map(lambda v: f"{v:.1f}")
    lines = ["| " + " | ".join(t.columns) + " |", "|" + " --- |" * len(t.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in t.itertuples(index=False)]
    return "\n".join(lines)


def beside_knockouts(retrained: pd.DataFrame, knockouts: pd.DataFrame) -> pd.DataFrame:
    """Table 1's rows with, side by side, the retrained mean AP (and spread), the knock-out AP of the
    same attentions switched off in one trained model (`analysis.ablation` global rows, one column
    per variant found) and the paper's AP. The baseline row is set against the all-off knock-out,
    which is not the same network (the retrained baseline has the ATSS conv towers, no DyHead)."""
    check = "\u2713"
    s = retrain_summary(retrained[retrained.grid == "table1"]).set_index("row")
    ko = knockouts[knockouts.kind == "all blocks"]
    rows = []
    for r in TABLE1_ROWS:
        flags = tuple(check if v else "\u2717" for v in (r.scale, r.spatial, r.task))
        match = ko[(ko.L == flags[0]) & (ko.S == flags[1]) & (ko.C == flags[2])]
        row = {"row": r.name, "L S C": " ".join(flags)}
        if r.name in s.index:
            row.update(retrained_AP=s.loc[r.name, "AP_mean"], retrained_std=s.loc[r.name, "AP_std"],
                       seeds=int(s.loc[r.name, "seeds"]))
        for m in match.itertuples():
            variant = ", ".join(v for v in (f"L {m.scale_off}" if m.scale_off else "",
                                            f"C {m.task_off}" if m.task_off else "") if v)
            row[f"knockout_AP ({variant})" if variant else "knockout_AP"] = m.AP
        row["paper_AP"] = PAPER_TABLE1[r.name][0]
        rows.append(row)
    return pd.DataFrame(rows)


def _protocol_note(df: pd.DataFrame) -> str:
    """The CSV's protocol lines (preset, iterations, data, evaluation), for a figure's footnote."""
    notes = [n for n in df.attrs.get("notes", []) if n.startswith(("grid ", "trained on "))]
    return " ".join(dict.fromkeys(n.split("; AP in percent")[0] + "." for n in notes))


def plot_table1(df: pd.DataFrame):
    """Mean AP per Table 1 row (bars) with each seed's AP (dots), beside the paper's AP."""
    import matplotlib.pyplot as plt

    s = retrain_summary(df[df.grid == "table1"])
    order = [r.name for r in TABLE1_ROWS if r.name in set(s.row)]
    s = s.set_index("row").loc[order].reset_index()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    x = range(len(s))
    ax.bar([i - 0.2 for i in x], s.AP_mean, width=0.4, color="#4c72b0", label="retrained here (this data; mean over seeds)")
    for i, r in enumerate(s.itertuples()):
        seeds = df[(df.grid == "table1") & (df.row == r.row)].AP
        ax.scatter([i - 0.2] * len(seeds), seeds, color="black", s=8, zorder=3)
    ax.bar([i + 0.2 for i in x], s.paper_AP, width=0.4, color="#dd8452", label="paper (COCO, R50 1x)")
    ax.set_xticks(list(x))
    ax.set_xticklabels(s.row)
    ax.set_ylabel("AP (%)")
    ax.set_title("Table 1 retrained: attentions built in (L scale, S spatial, C task)", fontsize=9)
    ax.legend(fontsize=7)
    fig.text(0.01, 0.005, textwrap.fill(f"dots: each seed. {RETRAIN_NOTE}. {_protocol_note(df)}", 150),
             fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def plot_table2(df: pd.DataFrame):
    """AP against the number of blocks (mean over seeds, each seed as a dot), beside the paper's."""
    import matplotlib.pyplot as plt

    s = retrain_summary(df[df.grid == "table2"]).sort_values("blocks")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(s.blocks, s.AP_mean, "o-", color="#4c72b0", label="retrained here (this data; mean over seeds)")
    sub = df[df.grid == "table2"]
    ax.scatter(sub.blocks, sub.AP, color="black", s=8, zorder=3)
    paper = sorted(PAPER_TABLE2_AP.items())
    ax2 = ax.twinx()
    ax2.plot([b for b, _ in paper], [v[0] for _, v in paper], "s--", color="#dd8452", label="paper (COCO)")
    ax.set_xlabel("DyHead blocks (0 = ATSS baseline with its conv towers)")
    ax.set_ylabel("AP (%), retrained here")
    ax2.set_ylabel("AP (%), paper")
    ax.set_title("Table 2 retrained: AP vs number of blocks", fontsize=9)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="center right")
    fig.text(0.01, 0.005, textwrap.fill(f"dots: each seed. {RETRAIN_NOTE}. {_protocol_note(df)}", 120),
             fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig

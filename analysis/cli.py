"""Command line: ``python -m analysis <command> --out DIR [options]``.

Every command runs on the bundled demo model and the demo data (generated on first use) when given
nothing but ``--out``; ``--checkpoint`` (this project's, the official detectron2 or an mmdetection
file) and ``--data`` (any COCO-format root, e.g. COCO 2017 with ``--split val2017``) point elsewhere.
Each writes CSV tables, a PNG (and a PDF for the paper figures) and prints what it wrote.

    python -m analysis scale-ratios  --out runs/analysis            # Fig. 3
    python -m analysis feature-maps  --out runs/analysis --image x.jpg --reduction pca   # Fig. 4
    python -m analysis ablation      --out runs/analysis --per-block                    # Table 1 analogue
    python -m analysis efficiency    --out runs/analysis --no-latency                   # Table 2
    python -m analysis coarser-modes --out runs/analysis
    python -m analysis internals     --out runs/analysis            # attention values per block, level, object size
    python -m analysis compare       --out runs/analysis --checkpoint-b other.pt   # two models side by side

Several GPUs: ``torchrun --nproc-per-node 8 -m analysis scale-ratios --out DIR`` shards the images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from .levels import LEVEL_NOTE
from .tables import write_table

__all__ = ["main", "build_parser"]


class _Report:
    """Prints each file a command wrote, with what it holds."""

    @staticmethod
    def wrote(path: Path, what: str) -> None:
        print(f"  {path}  ({what})")


def _save_figure(fig, out: Path, stem: str, report: _Report, what: str, pdf: bool = True) -> None:
    import matplotlib.pyplot as plt

    png = out / f"{stem}.png"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    report.wrote(png, what)
    if pdf:
        path = out / f"{stem}.pdf"
        fig.savefig(path, bbox_inches="tight")
        report.wrote(path, what + ", vector")
    plt.close(fig)


def _model(args):
    from .sources import load_model

    model, info = load_model(args.checkpoint, device=args.device)
    print(f"model: {info.path} ({info.kind}), {model.config.tower.num_blocks} DyHead blocks, "
          f"on {next(model.parameters()).device}")
    return model


def _image(args):
    """--image, or a bundled sample (demo data) / the first image of --data."""
    from dyhead.preprocess import load_image

    from .sources import default_image

    path = Path(args.image) if args.image else default_image(args.data, args.split)
    print(f"image: {path}")
    return load_image(path), path


# ------------------------------------------------------------------------------------------------
# Commands


def cmd_scale_ratios(args, report: _Report) -> None:
    from .scale_ratios import (
        RATIO_DEFINITION,
        collect_scale_weights,
        compute_ratios,
        plot_scale_ratios,
        ratio_summary,
        read_table,
        saturation_note,
        write_ratios_csv,
    )

    rank, world = _init_distributed(args)
    if rank == 0:
        from .sources import resolve_dataset

        resolve_dataset(args.data, args.split)  # generates the demo data once, before the other ranks read it
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    model = _model(args)
    run = collect_scale_weights(model, args.data, args.out / "scale_weights.csv", split=args.split,
                                max_images=args.max_images, batch_size=args.batch_size, rank=rank,
                                world_size=world, show_progress=not args.quiet)
    for path, reason in run.skipped:
        print(f"skipped unreadable image {path}: {reason}", file=sys.stderr)
    if not run.merged:
        print(f"rank {rank}: wrote shard {run.shard_csv} ({run.images} images); rank 0 merges")
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        return
    print(f"{run.computed} images computed now, {run.images - run.computed} resumed from an earlier run")
    print("ratio: " + RATIO_DEFINITION)
    print("note: " + LEVEL_NOTE)
    report.wrote(run.weights_csv, "raw scale weights, long format")
    weights = read_table(run.weights_csv)
    ratios = compute_ratios(weights)
    report.wrote(write_ratios_csv(ratios, args.out / "scale_ratios.csv"), "ratio per image, block, level")
    summary = ratio_summary(ratios)
    saturation = saturation_note(weights, ratios)
    report.wrote(write_table(summary, args.out / "scale_ratio_summary.csv", [RATIO_DEFINITION, LEVEL_NOTE, saturation]),
                 "median, shares above / below / equal to 1 and with both weights at the 0.5 floor, per block and level")
    _save_figure(plot_scale_ratios(ratios), args.out, "scale_ratios", report, "Fig. 3 histograms")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    last = summary[summary.block == summary.block.max()]
    print(f"last block, median scale ratio per level ({ratios.image_id.nunique()} images):")
    for row in last.itertuples():
        print(f"  {row.pair}: median {row.median:.4f}, share > 1: {row.share_above_1:.2f}, = 1: "
              f"{row.share_equal_1:.2f} (both weights at the 0.5 floor: {row.share_both_at_floor:.2f})")
    print(saturation)
    print(saturation_note(weights, ratios, int(summary.block.max())))


def cmd_feature_maps(args, report: _Report) -> None:
    from .feature_maps import (color_scale_note, feature_stages, paper_stages, plot_feature_grid, reduce_stages,
                               with_geometry)
    from .levels import level_name

    model = _model(args)
    image, path = _image(args)
    stages = with_geometry(feature_stages(model, image), model=model)  # cells drawn where they lie
    rows = args.stages.split(";") if args.stages else paper_stages(stages.num_blocks)
    rows = [r.strip() for r in rows]
    reduced = reduce_stages(stages, args.reduction, args.color_scale, which=rows)
    table = []
    for stage in rows:
        for level, m in enumerate(reduced.maps[stage]):
            lo, hi = reduced.ranges[(stage, level)]
            table.append({"stage": stage, "level": level, "level_name": level_name(level),
                          "height": m.shape[0], "width": m.shape[1], "map_min": float(m.min()),
                          "map_max": float(m.max()), "map_mean": float(m.mean()),
                          "color_min": float(min(lo) if hasattr(lo, "__len__") else lo),
                          "color_max": float(max(hi) if hasattr(hi, "__len__") else hi)})
    notes = [f"image {path}; reduction {args.reduction}; {color_scale_note(args.color_scale)}", LEVEL_NOTE]
    report.wrote(write_table(pd.DataFrame(table), args.out / "feature_maps.csv", notes), "reduced-map statistics")
    fig = plot_feature_grid(stages, args.reduction, args.color_scale, rows, args.opacity)
    _save_figure(fig, args.out, "feature_maps", report, "Fig. 4 grid")
    print(f"stages available: {', '.join(stages.stages)}")


def _variants(args) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The knock-out variants an `ablation` run asks for (--scale-off, --task-off, --all-variants)."""
    from dyhead.config import SCALE_KNOCKOUTS, TASK_KNOCKOUTS

    if args.all_variants:
        return SCALE_KNOCKOUTS, TASK_KNOCKOUTS
    return (tuple(v.strip() for v in args.scale_off.split(",") if v.strip()),
            tuple(v.strip() for v in args.task_off.split(",") if v.strip()))


def _setting_slug(name: str) -> str:
    """A file-name part for a global setting: 'L S C: \u2713 \u2713 \u2717 [task relu]' -> 'task_off_task-relu'."""
    marks, _, variant = name.removeprefix("L S C: ").partition(" [")
    off = [a for a, m in zip(("scale", "spatial", "task"), marks.split()) if m == "\u2717"]
    slug = "_".join(off) + "_off" if off else "all_on"
    return slug + ("_" + variant.rstrip("]").replace(", ", "_").replace(" ", "-") if variant else "")


def _constants(args, model, checkpoint=None):
    """The checkpoint's calibrated knock-out constants: saved beside it, or computed once on
    --calibration-data (default: --data) split --calibration-split (default train) and saved."""
    from .sources import knockout_constants

    data = getattr(args, "calibration_data", None) or args.data
    constants = knockout_constants(model, checkpoint or args.checkpoint, data,
                                   getattr(args, "calibration_split", "train"), progress=not args.quiet)
    print(f"knock-out constants: {constants.describe()}")
    return constants


def cmd_calibrate(args, report: _Report) -> None:
    from dyhead.knockout import SOURCE_SLOTS, constants_path

    from .sources import DEFAULT_CHECKPOINT, dataset_root, knockout_constants

    model = _model(args)
    checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    constants = knockout_constants(model, checkpoint, dataset_root(args.data, args.split), args.split, recalibrate=True,
                                   progress=not args.quiet, max_images=args.max_images,
                                   batch_size=args.batch_size)
    report.wrote(constants_path(checkpoint), "knock-out constants (dyhead.knockout.KnockoutConstants)")
    rows = []
    for b in range(constants.num_blocks):
        for level in range(constants.scale.shape[1]):
            w = constants.scale[b, level]
            rows.append({"block": b + 1, "level": level, **{f"w_{s}": float(w[i]) for i, s in enumerate(SOURCE_SLOTS)},
                         "w_level": float(w[~w.isnan()].mean()),
                         **{k: float(getattr(constants, k)[b, level].mean()) for k in ("a1", "b1", "a2", "b2")}})
    table = pd.DataFrame(rows)
    report.wrote(write_table(table, args.out / "knockout_constants.csv",
                             [f"dataset means for the calibrated/static knock-outs: {constants.describe()}",
                              "w_<source>: mean scale weight per source branch (calibrated-per-source); w_level: "
                              "their mean (calibrated); a1..b2: DyReLU coefficients averaged over channels (static)"]),
                 "scale weights and DyReLU coefficient means per block and level")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def cmd_retrain(args, report: _Report) -> None:
    from dyhead.progress import progress_write

    from .retrain import plot_table1, plot_table2, retrain_summary, run_grid
    from .sources import dataset_root

    if args.data is None:
        dataset_root(None, args.train_split)  # the demo train split is not generated on demand: say how
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [r.strip() for r in args.rows.split(";")] if args.rows else None

    def row_done(record: dict) -> None:
        progress_write(f"  {record['row']:<10} seed {record['seed']}  AP {record['AP']:5.1f}  "
                       f"{record['iterations']} it  {record['wall_time_s'] / 60:.1f} min")

    df = run_grid(args.grid, args.data, args.out, seeds=seeds, rows=rows, preset=args.preset,
                  iterations=args.iterations, train_split=args.train_split, eval_split=args.split,
                  eval_images=args.max_images, device=args.device, progress=not args.quiet, on_row=row_done,
                  jobs=args.jobs, threads=args.threads)
    report.wrote(args.out / f"retrain_{args.grid}.csv", f"one row per trained run ({len(df)} done)")
    if len(df):
        summary = retrain_summary(df)
        report.wrote(write_table(summary, args.out / f"retrain_{args.grid}_summary.csv", df.attrs.get("notes", [])),
                     "mean and spread per row beside the paper's AP")
        plot = plot_table1 if args.grid == "table1" else plot_table2
        _save_figure(plot(df), args.out, f"retrain_{args.grid}", report, f"{args.grid} retrained")
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.1f}"))


def cmd_ablation(args, report: _Report) -> None:
    from dyhead.progress import progress_write

    from .ablation import (
        KNOCKOUT_NOTE,
        ablation_settings,
        ablation_table,
        batch_size_note,
        detection_changes,
        plot_ablation,
        plot_detection_changes,
        variants_note,
    )
    from .sources import DEFAULT_CHECKPOINT, dataset_images, resolve_dataset

    model = _model(args)
    print("note: " + KNOCKOUT_NOTE)
    csv = args.out / "ablation.csv"
    scale_offs, task_offs = _variants(args)
    settings = ablation_settings(model.config.tower.num_blocks, args.per_block, scale_offs, task_offs)
    constants = _constants(args, model) if any(s.needs_constants for s in settings) else None
    images = len(dataset_images(args.data, args.split, args.max_images))
    checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    annotations = resolve_dataset(args.data, args.split).annotation_file
    notes = [KNOCKOUT_NOTE, "AP in percent (COCOeval)",
             f"model {checkpoint.name} (sha256 {_sha256(checkpoint)[:16]}) on {next(model.parameters()).device}",
             f"data {annotations.name} (sha256 {_sha256(annotations)[:16]}), split {args.split}, {images} images",
             batch_size_note(args.batch_size), variants_note(scale_offs, task_offs, constants)]
    print(notes[-1])
    print(f"{len(settings)} settings x {images} images"
          + ("" if args.per_block else " (the 8 global combinations, each attention off once per variant; "
                                       "--per-block adds one attention off in one block)")
          + f"; each row is appended to {csv} when it is done, and a rerun continues from there")
    if csv.is_file():
        print(f"{csv} exists: its rows are kept (if it was written with the same model, data and batch size) "
              "and only the missing settings are computed")

    def row_done(row: dict, seconds: float) -> None:
        progress_write(f"  {row['setting']:<48} AP {row['AP']:5.1f}  ({row['delta_AP']:+.1f} vs all on)  "
                       f"{seconds:.0f} s")

    df = ablation_table(model, args.data, args.split, max_images=args.max_images, one_block=args.per_block,
                        batch_size=args.batch_size, show_progress=not args.quiet, csv_path=csv, notes=notes,
                        on_row=row_done, settings=settings, constants=constants)
    report.wrote(csv, f"AP per on/off setting, {len(df)} rows")
    _save_figure(plot_ablation(df), args.out, "ablation", report, "Table 1 analogue")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(df[df.kind == "all blocks"][["L", "S", "C", "scale_off", "task_off", "AP", "AP50", "AP75", "APs", "APm", "APl"]]
              .to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    image, path = _image(args)
    summary, diffs = detection_changes(model, image, score_threshold=args.score_threshold, constants=constants,
                                       scale_offs=scale_offs, task_offs=task_offs)
    report.wrote(write_table(summary, args.out / "detection_changes.csv", [f"image {path}", summary.attrs["note"]]),
                 "matched / added / removed per setting")
    for name, fig in plot_detection_changes(image, diffs, model.config.class_names).items():
        _save_figure(fig, args.out, "detections_" + _setting_slug(name), report, f"detections, {name}", pdf=False)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def cmd_efficiency(args, report: _Report) -> None:
    from .efficiency import PAPER_FLOPS_NOTE, efficiency_table, plot_efficiency

    blocks = [int(b) for b in args.blocks.split(",")]
    if not args.no_latency:
        import torch

        if args.device in ("auto", "cpu") and not torch.cuda.is_available() or args.device == "cpu":
            print(f"measuring latency on the CPU at {args.channels} channels, 800x1344: this takes minutes "
                  "(--no-latency counts only, in seconds)")
    df = efficiency_table(blocks=blocks, channels=args.channels, latency=not args.no_latency,
                          latency_repeats=args.latency_repeats, device=_device_or_none(args.device))
    notes = [df.attrs["convention"], f"latency device: {df.attrs['latency_device']}",
             "paper_delta: Table 2 of the paper (GFLOPs vs a 254.39 baseline; this count's baseline detector: "
             "detector_gmacs at 0 blocks)", PAPER_FLOPS_NOTE]
    report.wrote(write_table(df, args.out / "efficiency.csv", notes), "params, GMACs, latency per depth")
    _save_figure(plot_efficiency(df), args.out, "efficiency", report, "Table 2 cost vs depth")
    print("convention: " + df.attrs["convention"])
    cols = ["blocks", "params", "gmacs", "delta_gmacs", "paper_delta", "detector_gmacs", "latency_ms"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def cmd_coarser_modes(args, report: _Report) -> None:
    from .coarser_modes import compare_coarser_modes, plot_coarser_modes

    model = _model(args)
    image, path = _image(args)
    cmp = compare_coarser_modes(model, image, score_threshold=args.score_threshold)
    note = [f"image {path}; differences against the official coarser-branch reading (microsoft/DynamicHead issue 25)"]
    report.wrote(write_table(cmp.features, args.out / "coarser_modes_features.csv", note), "block outputs vs official")
    report.wrote(write_table(cmp.scale_weights, args.out / "coarser_modes_scale_weights.csv", note), "scale weights")
    report.wrote(write_table(cmp.detections, args.out / "coarser_modes_detections.csv", note), "detections changed")
    _save_figure(plot_coarser_modes(cmp), args.out, "coarser_modes", report, "differences per block and level")
    summary = cmp.features.groupby("mode", sort=False)[["max_abs_diff", "mean_abs_diff", "rel_mean_diff"]].max()
    print(summary.to_string(float_format=lambda v: f"{v:.4g}"))
    print(cmp.detections.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def cmd_internals(args, report: _Report) -> None:
    from .internals import INTERNALS_NOTE, collect_internals, internals_summary, plot_internals

    model = _model(args)
    rank, world = _init_distributed(args)
    csv = args.out / "internals.csv"
    run = collect_internals(model, args.data, csv, split=args.split, max_images=args.max_images,
                            show_progress=not args.quiet, coarser_branch=args.coarser)
    print(f"{run.images} images on this rank: {run.computed} computed now, {run.images - run.computed} resumed "
          f"from an earlier run ({run.seconds:.1f} s)")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    if run.csv is None:
        return
    report.wrote(run.csv, "per image, block, level and assigned object, long format")
    from .tables import read_table

    summary = internals_summary(read_table(run.csv))
    report.wrote(write_table(summary, args.out / "internals_summary.csv",
                             [INTERNALS_NOTE, "means per breakdown (all / size / class), block (1-based) and level; "
                              "n = rows averaged (images for 'all', objects otherwise)", LEVEL_NOTE]),
                 "means per block and level, by object size and class")
    _save_figure(plot_internals(summary), args.out, "internals", report, "internals per block and level", pdf=False)
    last = summary[(summary.breakdown == "all") & (summary.block == summary.block.max())]
    print(last[["level_name", "n", "w_finer", "w_same", "w_coarser", "offset_mean_abs", "mask_mean", "a1"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def cmd_compare(args, report: _Report) -> None:
    from dyhead.config import AttentionSwitches

    from .compare import (Side, compare_ap, compare_detections, compare_feature_maps, compare_scale_ratios,
                          plot_compare_maps, run_side)
    from .detection_diff import match_detections, plot_detection_pair
    from .sources import dataset_images, load_model

    model_a = _model(args)
    if args.checkpoint_b:
        model_b, info_b = load_model(args.checkpoint_b, device=args.device)
        print(f"model B: {info_b.path} ({info_b.kind})")
    else:
        model_b = model_a
    off = {a.strip() for a in (args.off_b or "").split(",") if a.strip()}
    unknown = off - {"scale", "spatial", "task"}
    if unknown:
        raise ValueError(f"--off-b takes scale, spatial, task; got {sorted(unknown)}")
    switches_b = AttentionSwitches(**{a: a not in off for a in ("scale", "spatial", "task")}) if off else None
    if switches_b is not None and switches_b.needs_constants:  # scale off = the calibrated constants
        from dataclasses import replace

        switches_b = replace(switches_b, constants=_constants(args, model_b, args.checkpoint_b))
    coarser_b = args.coarser_b
    if coarser_b is None and not args.checkpoint_b and not off:
        coarser_b = "upsample_first"  # the demo against itself needs something to differ
    label_a = f"A: {Path(args.checkpoint).name if args.checkpoint else 'demo model'}" + \
        (f", coarser {args.coarser}" if args.coarser else "")
    label_b = f"B: {Path(args.checkpoint_b).name if args.checkpoint_b else 'same model'}" + \
        (f", coarser {coarser_b}" if coarser_b else "") + (f", {switches_b.description}" if off else "")
    a = Side(model_a, label_a, None, args.coarser)
    b = Side(model_b, label_b, switches_b, coarser_b)
    print(f"{label_a}\n{label_b}")
    records = dataset_images(args.data, args.split, args.max_images)
    pa, pb = run_side(a, records), run_side(b, records)
    names = model_a.config.class_names
    note = [f"{label_a}; {label_b}; {len(records)} images of split {args.split}"]
    dets = compare_detections(pa, pb, records, names, args.score_threshold)
    report.wrote(write_table(dets, args.out / "compare_detections.csv",
                             note + [f"boxes matched within a class by IoU >= 0.5, from score {args.score_threshold} up; "
                                     "original-image pixels"]), "matched / only A / only B boxes")
    ap = compare_ap([a, b], [pa, pb], args.data, args.split)
    report.wrote(write_table(ap, args.out / "compare_ap.csv", note + ["AP in percent (COCOeval)"]), "AP of each model")
    ratios = compare_scale_ratios([a, b], [pa, pb])
    if len(ratios):
        report.wrote(write_table(ratios, args.out / "compare_scale_ratios.csv", note + [LEVEL_NOTE]),
                     "scale-ratio summary of each model")
    image, path = _image(args)
    pair = compare_feature_maps(a, b, image)
    report.wrote(write_table(pair.table, args.out / "compare_feature_maps.csv",
                             [f"image {path}; mean |x| over channels; one colour range per stage and level for both "
                              "models (color_min, color_max)", LEVEL_NOTE]), "feature maps of both, one scale")
    _save_figure(plot_compare_maps(pair, "A", "B"), args.out, "compare_feature_maps", report,
                 "feature maps, one colour scale", pdf=False)
    ia = a.model.infer([image], switches=a.switches, coarser_branch=a.coarser).detections[0]
    ib = b.model.infer([image], switches=b.switches, coarser_branch=b.coarser).detections[0]
    diff = match_detections(ia, ib, 0.5, args.score_threshold, names)
    _save_figure(plot_detection_pair(image, diff, "A", "B", names), args.out, "compare_detections", report,
                 "detections of A and B on one image", pdf=False)
    counts = dets.status.value_counts()
    print(f"boxes: {int(counts.get('matched', 0))} matched, {int(counts.get('only A', 0))} only A, "
          f"{int(counts.get('only B', 0))} only B")
    print(ap.to_string(index=False, float_format=lambda v: f"{v:.1f}"))


# ------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _device_or_none(device: str) -> Optional[str]:
    if device == "auto":
        return None
    from dyhead.device import resolve_device

    return str(resolve_device(device))


def _init_distributed(args) -> tuple[int, int]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (`dyhead.distributed`), one GPU per rank."""
    from dyhead.distributed import join_process_group

    info, device = join_process_group(args.device)
    if info.world_size > 1:
        args.device = str(device)
    return info.rank, info.world_size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="DyHead paper figures from any model and dataset.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, data: bool = True, model: bool = True) -> None:
        p.add_argument("--out", required=True, type=Path, help="output folder")
        p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:<i>")
        if model:
            p.add_argument("--checkpoint", default=None,
                           help="model file (default: the bundled demo model checkpoints/demo_dyhead.pt)")
        if data:
            p.add_argument("--data", default=None,
                           help="COCO-format root (default: the demo data under data/demo, generated if missing)")
            p.add_argument("--split", default="val", help="split name: val, val2017, ... (default val)")
            p.add_argument("--max-images", type=int, default=None, help="use the first N images (by image id)")
        p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
        p.add_argument("--quiet", action="store_true",
                       help="no progress output (otherwise a bar on a terminal, a line every 5%% in a log)")

    p = sub.add_parser("scale-ratios", help="learned scale ratios per level (paper Fig. 3)")
    common(p)
    p.add_argument("--batch-size", type=int, default=1,
                   help="images per forward pass (1 = each image's own weights; larger pads images together)")
    p.set_defaults(func=cmd_scale_ratios)

    p = sub.add_parser("feature-maps", help="feature maps before the head and after each block (paper Fig. 4)")
    common(p)
    p.add_argument("--image", default=None, help="image file (default: a bundled sample, or the first image of --data)")
    p.add_argument("--reduction", default="mean_abs", help="mean_abs, l2, max, channel:<k> or pca")
    p.add_argument("--color-scale", default="per_map", choices=("per_map", "per_stage", "per_level", "global"),
                   help="per_map: each map its own range (default); per_stage: one range per row; per_level: "
                        "shared across rows, one range per level (the FPN row, ~10x larger, then dominates); "
                        "global: one range for all maps")
    p.add_argument("--opacity", type=float, default=0.6, help="map opacity over the image, 0..1")
    p.add_argument("--stages", default=None,
                   help="rows separated by ';', e.g. 'before head;block 1, spatial+scale;block 1' (names as the "
                        "command prints them); default: before head and every second block")
    p.set_defaults(func=cmd_feature_maps)

    p = sub.add_parser("ablation", help="attentions switched off at inference: COCO AP (Table 1 analogue)")
    common(p)
    p.add_argument("--per-block", action="store_true",
                   help="also each attention off in one block (3 x blocks more settings; without it only the 8 "
                        "global combinations). Rows already in OUT/ablation.csv are kept, so this extends an "
                        "earlier global-only run")
    p.add_argument("--no-one-block", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (1 = the official test path)")
    p.add_argument("--image", default=None, help="image for the detection comparison (default: a bundled sample, or the first image of --data)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="detections compared from this score up")
    p.add_argument("--scale-off", default="calibrated",
                   help="what replaces scale attention when off, one or more of calibrated (dataset-mean weight per "
                        "block and level), calibrated-per-source, fixed-1 (every weight 1), comma-separated")
    p.add_argument("--task-off", default="relu",
                   help="what replaces task attention when off: relu (plain ReLU), static (dataset-mean DyReLU "
                        "coefficients), or both comma-separated")
    p.add_argument("--all-variants", action="store_true", help="every scale and task variant")
    p.add_argument("--calibration-data", default=None,
                   help="dataset root for the calibration pass when the checkpoint has no constants saved beside it "
                        "(default: --data)")
    p.add_argument("--calibration-split", default="train", help="split of the calibration pass (default: train)")
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("retrain", help="the paper's Table 1 or Table 2 retrained: one model per row and seed")
    common(p)
    p.add_argument("--grid", required=True, choices=("table1", "table2"),
                   help="table1: baseline, L, S, C, S+C, L+C, L+S, L+S+C (6 blocks); table2: baseline and 1, 2, 4, "
                        "6, 8, 10 blocks with all attentions")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default 0,1)")
    p.add_argument("--rows", default=None, help="only these rows, ';'-separated (e.g. 'baseline;L+S+C')")
    p.add_argument("--preset", default="demo_retrain",
                   help="dyhead.train preset of every run (default demo_retrain: the demo recipe, 500 iterations)")
    p.add_argument("--iterations", type=int, default=None, help="iterations of every run (default: the preset's)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at the same time, one process each with --threads threads (default 1)")
    p.add_argument("--train-split", default="train", help="training split of --data (default train)")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("calibrate", help="knock-out constants: dataset-mean scale weights and DyReLU coefficients")
    common(p)
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (1 = the official test path)")
    p.set_defaults(func=cmd_calibrate, split="train")

    p = sub.add_parser("efficiency", help="parameters, GMACs and latency against depth (Table 2)")
    common(p, data=False, model=False)
    p.add_argument("--blocks", default="0,1,2,4,6,8,10", help="depths (0 = the ATSS baseline towers)")
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--no-latency", action="store_true", help="count only (meta tensors, a few seconds)")
    p.add_argument("--latency-repeats", type=int, default=3, help="timed runs per depth (median)")
    p.set_defaults(func=cmd_efficiency)

    p = sub.add_parser("coarser-modes", help="the three coarser-branch offset readings compared on one image")
    common(p)
    p.add_argument("--image", default=None, help="image file (default: a bundled sample, or the first image of --data)")
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.set_defaults(func=cmd_coarser_modes)

    p = sub.add_parser("internals", help="scale weights, offsets, masks and DyReLU per block and level over a "
                                         "dataset, by assigned object size and class")
    common(p)
    p.add_argument("--coarser", default=None, choices=("official", "crop", "upsample_first"),
                   help="coarser-branch mode (default: the model's own)")
    p.set_defaults(func=cmd_internals)

    p = sub.add_parser("compare", help="two models side by side: detections, feature maps, scale ratios, AP")
    common(p)
    p.add_argument("--checkpoint-b", default=None, help="model B (default: model A again, run differently)")
    p.add_argument("--coarser", default=None, choices=("official", "crop", "upsample_first"),
                   help="model A's coarser-branch mode (default: its own)")
    p.add_argument("--coarser-b", default=None, choices=("official", "crop", "upsample_first"),
                   help="model B's coarser-branch mode (default: upsample_first when B is A with no --off-b, "
                        "else its own)")
    p.add_argument("--off-b", default=None, help="attentions off in every block of B, e.g. 'scale' or 'spatial,task'")
    p.add_argument("--image", default=None, help="image for the feature maps and the detection figure "
                                                  "(default: a bundled sample, or the first image of --data)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="boxes compared from this score up")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dyhead.checkpoint import CheckpointError
    from dyhead.data.coco import DatasetError
    from dyhead.device import DeviceError
    from dyhead.preprocess import ImageLoadError

    from .sources import SourceError

    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report = _Report()
    print(f"{args.command}: writing to {args.out}")
    try:
        args.func(args, report)
    except (SourceError, DatasetError, CheckpointError, DeviceError, ImageLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

"""COCO box evaluation of a detector with pycocotools' COCOeval (never a home-made AP).

    python -m dyhead.evaluate --checkpoint checkpoints/demo_dyhead.pt --data data/demo --split val
    python -m dyhead.evaluate --checkpoint model.pth --data /datasets/coco --split val2017 --out results.json

`evaluate_detector` is the function behind the command; analysis code calls it with attention
switches (`switches=AttentionSwitches(scale=False)`) to measure what each attention contributes.
Reported: AP (IoU 0.50:0.95), AP50, AP75, APs, APm, APl (COCO's `stats[0:6]`) as fractions in
[0, 1], and per-class AP (IoU 0.50:0.95, all areas, 100 detections), computed from COCOeval's
precision array the same way COCOeval's summary computes AP.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from dyhead.coco_results import detections_to_coco, write_coco_results
from dyhead.config import SCALE_KNOCKOUTS, TASK_KNOCKOUTS, AttentionSwitches, SwitchesArg
from dyhead.data.coco import DatasetError, load_coco, resolve_split
from dyhead.data.loader import image_loader
from dyhead.device import PRECISIONS

__all__ = ["METRICS", "evaluate_detector", "detections_to_coco", "coco_evaluate", "format_table", "main"]

#: Names of COCOeval's first six summary numbers, in order.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_evaluate(coco_gt, results: list[dict], image_ids: list[int]) -> dict:
    """COCOeval bbox on `image_ids` -> {"AP", ..., "APl", "per_class": {name: AP}} (fractions; -1 =
    no ground truth of that kind, as COCOeval reports it)."""
    from pycocotools.cocoeval import COCOeval

    cat_ids = sorted(coco_gt.getCatIds())
    names = {c["id"]: c["name"] for c in coco_gt.loadCats(cat_ids)}
    if not results:  # loadRes refuses an empty list; no detections means AP 0 wherever there is GT
        stats = [0.0] * 6
        per_class = {names[c]: 0.0 for c in cat_ids}
        return {**dict(zip(METRICS, stats)), "per_class": per_class, "summary": "no detections"}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        evaluator.summarize()
    # precision: [T IoU thresholds, R recall points, K categories, A area ranges, M max-dets settings]
    precision = evaluator.eval["precision"]
    per_class = {}
    for k, cid in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]  # all areas, 100 detections
        p = p[p > -1]
        per_class[names[cid]] = float(p.mean()) if p.size else -1.0
    return {**{m: float(v) for m, v in zip(METRICS, evaluator.stats[:6])}, "per_class": per_class,
            "summary": buf.getvalue()}


def evaluate_detector(model, data_root, split: str = "val", switches: SwitchesArg = None,
                      max_images: Optional[int] = None, batch_size: int = 4, progress: bool = True,
                      results_path: Optional[str | Path] = None, bar=None, coarser_branch=None,
                      workers: int = 0, precision: str = "auto") -> dict:
    """Run `model.predict` over a COCO split and evaluate with COCOeval (`coarser_branch`: the
    coarser-branch mode of every call, None = the model's own).

    Images are taken in increasing image-id order (the first `max_images` when given). Unreadable
    images are skipped, listed under "skipped" and left out of the evaluated image ids.
    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class", "num_images", "num_detections",
    "skipped", "split", "data_root", "switches", "seconds"}; with `results_path` the raw COCO-format
    detections are written there as JSON. `bar`: an open `dyhead.progress` bar to advance by one per
    image instead of opening one (a caller evaluating several settings shows one bar for all).
    `workers`: processes that decode the images ahead of the model (`dyhead.data.loader.image_loader`).
    `precision`: the network's arithmetic (`dyhead.device.PRECISIONS`; "auto" = float16 autocast on
    CUDA, float32 otherwise), also in the result.
    """
    from .progress import progress_bar

    mode = {} if coarser_branch is None else {"coarser_branch": coarser_branch}
    paths = resolve_split(data_root, split)
    coco_gt = load_coco(paths.annotation_file)
    gt_cat_ids = set(coco_gt.getCatIds())
    category_ids = tuple(model.config.category_ids)
    missing = [c for c in category_ids if c not in gt_cat_ids]
    if missing:
        raise DatasetError(
            f"the model predicts category ids {missing} that {paths.annotation_file} does not define "
            f"(model classes: {list(model.config.class_names)})"
        )
    image_ids = sorted(coco_gt.getImgIds())
    if max_images is not None:
        image_ids = image_ids[:max_images]
    was_training = model.training
    model.eval()
    results: list[dict] = []
    evaluated: list[int] = []
    skipped: list[tuple[str, str]] = []
    start = time.perf_counter()
    own_bar = bar is None
    if own_bar:
        bar = progress_bar(len(image_ids), desc=f"eval {paths.split}", unit="img", enabled=progress)
    try:
        files = [paths.image_dir / coco_gt.imgs[image_id]["file_name"] for image_id in image_ids]
        for chunk in image_loader(files, batch_size, workers):
            chunk_ids, images = [], []
            for i, image, reason in chunk:
                if image is None:
                    skipped.append((str(files[i]), reason))
                else:
                    images.append(image)
                    chunk_ids.append(image_ids[i])
            if images:
                detections = model.infer(images, switches=switches, precision=precision, **mode).detections
                for image_id, dets in zip(chunk_ids, detections):
                    results.extend(detections_to_coco(dets, category_ids, image_id=image_id))
                evaluated.extend(chunk_ids)
            bar.update(len(chunk))
    finally:
        if own_bar:
            bar.close()
        model.train(was_training)
    if not evaluated:
        raise DatasetError(f"no readable image in {paths.image_dir} to evaluate ({len(skipped)} skipped)")
    metrics = coco_evaluate(coco_gt, results, evaluated)
    if results_path is not None:
        write_coco_results(results_path, results)
    label = switches.label if isinstance(switches, AttentionSwitches) else ("all" if switches is None else "per-block")
    knockout = switches.description if isinstance(switches, AttentionSwitches) else (
        "all on" if switches is None else "; ".join(f"block {b + 1}: {s.description}"
                                                    for b, s in enumerate(switches) if s.description != "all on"))
    return {
        **metrics,
        "num_images": len(evaluated),
        "num_detections": len(results),
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
        "split": paths.split,
        "data_root": str(data_root),
        "switches": label,
        "knockout": knockout,
        "precision": precision,
        "seconds": round(time.perf_counter() - start, 1),
    }


def format_table(result: dict) -> str:
    """A plain-text table of the six COCO numbers and the per-class AP (in percent)."""
    lines = ["metric        value"]
    lines += [f"{m:<12} {100 * result[m]:6.1f}" for m in METRICS]
    lines.append("per-class AP")
    lines += [f"  {name:<10} {100 * ap:6.1f}" for name, ap in result["per_class"].items()]
    lines.append(f"({result['num_images']} images, {result['num_detections']} detections, "
                 f"split {result['split']}, attentions: {result['switches']}; {result.get('knockout', '')}; "
                 f"precision {result.get('precision', 'auto')})")
    return "\n".join(lines)


def _parse_switches(text: Optional[str], **variants) -> Optional[AttentionSwitches]:
    if not text:
        return None
    off = {part.strip() for part in text.split(",") if part.strip()}
    unknown = off - {"scale", "spatial", "task"}
    if unknown:
        raise SystemExit(f"--attention-off: unknown attention(s) {sorted(unknown)}; use scale, spatial, task")
    return AttentionSwitches(**{name: False for name in off}, **variants)


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description="COCO bbox evaluation (pycocotools COCOeval) of a detector checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file (this project's format or the official release)")
    parser.add_argument("--data", required=True, help="dataset root (ROOT/val + ROOT/annotations/instances_val.json, or val2017)")
    parser.add_argument("--split", default="val", help="val | val2017 | train ...")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0, help="processes decoding images ahead of the model")
    parser.add_argument("--out", default=None, help="write the metrics as JSON here")
    parser.add_argument("--detections-out", default=None, help="write the raw COCO-format detections here")
    parser.add_argument("--attention-off", default=None, metavar="LIST",
                        help="switch attentions off at inference, e.g. 'scale' or 'spatial,task'")
    parser.add_argument("--scale-off", default="calibrated", choices=SCALE_KNOCKOUTS,
                        help="what replaces the scale weights: dataset means per (block, level) (default), "
                             "per (block, level, source), or 1")
    parser.add_argument("--task-off", default="relu", choices=TASK_KNOCKOUTS,
                        help="what replaces DyReLU: a plain ReLU (default) or the dataset-mean coefficients")
    parser.add_argument("--calibration-split", default="train",
                        help="split of --data the calibrated constants are computed on when the checkpoint "
                             "has none saved beside it (dyhead.knockout.load_or_calibrate)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: float16 autocast on CUDA, float32 on the CPU; bfloat16 is faster on CPUs "
                             "with bfloat16 kernels but changes the numbers (benchmarks/RESULTS.md)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from dyhead.checkpoint import load_detector
    from dyhead.device import resolve_device

    model, info = load_detector(args.checkpoint, device=resolve_device(args.device))
    switches = _parse_switches(args.attention_off, scale_off=args.scale_off, task_off=args.task_off)
    if switches is not None and switches.needs_constants:
        from dyhead.knockout import load_or_calibrate

        constants = load_or_calibrate(model, args.checkpoint, args.data, args.calibration_split,
                                      progress=not args.no_progress)
        switches = replace(switches, constants=constants)
    result = evaluate_detector(model, args.data, args.split, switches=switches,
                               max_images=args.max_images, batch_size=args.batch_size,
                               progress=not args.no_progress, results_path=args.detections_out,
                               workers=args.workers, precision=args.precision)
    result["checkpoint"] = str(args.checkpoint)
    print(format_table(result))
    for item in result["skipped"]:
        print(f"skipped {item['file']}: {item['reason']}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=2))
    return result


def cli() -> int:
    """The ``dyhead-evaluate`` console script: `main`, exit status 0 when it finished."""
    main()
    return 0


if __name__ == "__main__":
    main()

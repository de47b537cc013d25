"""Run a detector on image files and write COCO-format results.

    python -m dyhead.predict --checkpoint FILE [--device auto|cpu|cuda] [--score-thresh T]
                             [--min-size S --max-size S] [--annotations COCO.json] [--out FILE.json]
                             [--threads N] IMAGE...

The checkpoint may be this project's own file or an official detectron2 DyHead release (detected
automatically). Results: a JSON list of {"file_name", "image_id" (when --annotations names the image),
"category_id", "bbox": [x, y, w, h], "score"} in original-image pixels. Images that cannot be read are
reported and skipped; the exit status is then 1. Checkpoint or device errors exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from .checkpoint import CheckpointError, load_detector
from .coco_results import detections_to_coco, write_coco_results
from .device import PRECISIONS, DeviceError, resolve_device
from .preprocess import ImageLoadError, load_image

__all__ = ["main", "detections_to_coco"]


def _image_ids(annotations: Optional[Path]) -> dict[str, int]:
    if annotations is None:
        return {}
    try:
        data = json.loads(annotations.read_text())
        return {Path(img["file_name"]).name: int(img["id"]) for img in data["images"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: cannot read image ids from {annotations}: {exc}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dyhead.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    parser.add_argument("--checkpoint", required=True, type=Path, help="own or official detectron2 checkpoint")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--score-thresh", type=float, default=None,
                        help="candidate threshold on the class probability (default: the model's, 0.05)")
    parser.add_argument("--min-size", type=int, default=None, help="test-time short side (default: the model's)")
    parser.add_argument("--max-size", type=int, default=None, help="test-time long-side cap (default: the model's)")
    parser.add_argument("--annotations", type=Path, default=None, help="COCO json to look up image ids by file name")
    parser.add_argument("--out", type=Path, default=None, help="write COCO results JSON here")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: float16 autocast on CUDA, float32 on the CPU (default); bfloat16: autocast, "
                             "faster on CPUs with bfloat16 instructions but approximate (see benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)

    overrides = {k: v for k, v in (("score_thresh", args.score_thresh), ("min_size", args.min_size),
                                   ("max_size", args.max_size)) if v is not None}
    try:
        device = resolve_device(args.device)
        model, info = load_detector(args.checkpoint, device=device, **overrides)
    except (CheckpointError, DeviceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = model.config
    ids = _image_ids(args.annotations)
    print(f"model: {info.kind} checkpoint {args.checkpoint} ({cfg.num_classes} classes, "
          f"{cfg.tower.num_blocks} DyHead blocks) on {device}")
    for note in info.notes:
        print(f"note: {note}")

    results, failed = [], []
    start = time.perf_counter()
    for path in args.images:
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            failed.append(str(path))
            continue
        dets = model.infer([image], precision=args.precision).detections[0].to("cpu")
        rows = detections_to_coco(dets, cfg.category_ids, image_id=ids.get(path.name), file_name=path.name)
        results.extend(rows)
        best = ""
        if len(dets):
            i = int(torch.argmax(dets.scores))
            best = f", best {cfg.class_names[int(dets.labels[i])]} {float(dets.scores[i]):.3f}"
        print(f"{path}: {image.shape[1]}x{image.shape[0]}, {len(dets)} detections{best}")
    elapsed = time.perf_counter() - start
    done = len(args.images) - len(failed)
    print(f"{done} image(s), {len(results)} detections in {elapsed:.2f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_coco_results(args.out, results)
        print(f"wrote {args.out}")
    if failed:
        print(f"error: {len(failed)} image(s) could not be read: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

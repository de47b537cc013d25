"""python -m dyhead.conformance FILE [--dtype float64|float32] [--coarser-branch MODE] [--verbose]

Exits 0 only when every compared tensor is within tolerance.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import torch

from ..config import CoarserBranchMode
from .tower import compare_tower, is_tower_golden, summarize


def load_golden(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"error: golden file not found: {path}")
    try:
        golden = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise SystemExit(f"error: {path} is not a weights-only torch file of tensors: {exc}") from None
    if not isinstance(golden, dict) or not all(isinstance(v, torch.Tensor) for v in golden.values()):
        raise SystemExit(f"error: {path} is not a flat dict of tensors")
    return golden


def run_tower(golden: dict, args) -> bool:
    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    rows = compare_tower(golden, dtype=dtype, mode=CoarserBranchMode(args.coarser_branch))
    print(f"DyHead tower conformance ({args.dtype}, coarser branch: {args.coarser_branch}), "
          f"tolerance max abs diff <= {rows[0].atol:g}")
    listing = [(r.name, r.max_abs_diff, r.ok) for r in rows] if args.verbose else summarize(rows)
    width = max(len(name) for name, _, _ in listing)
    for name, diff, ok in listing:
        print(f"  {name:<{width}}  {diff:.3e}  {'ok' if ok else 'FAIL'}")
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows)} tensors compared, {len(failed)} outside tolerance; "
          f"worst {max(r.max_abs_diff for r in rows):.3e}")
    return not failed


def run_detector(golden: dict, path: Path, args) -> bool:
    from .detector import run_detector_conformance

    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if "state_dict.head.cls_score.weight" in golden or "state_dict.roi_heads.box_predictor.cls_score.weight" in golden:
        from .kinds import run_kind_conformance  # RetinaNet / Faster R-CNN (README sections 10, 11)

        return run_kind_conformance(golden, meta, golden_dir=path.parent)
    return run_detector_conformance(golden, meta, golden_dir=path.parent)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dyhead.conformance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="golden .pt file (tower or end-to-end detector layout)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="compute dtype for a tower golden (default float64)")
    parser.add_argument("--coarser-branch", choices=[m.value for m in CoarserBranchMode],
                        default=CoarserBranchMode.OFFICIAL.value,
                        help="coarser-branch offset reading; goldens are made with 'official'")
    parser.add_argument("--verbose", action="store_true", help="list every compared tensor")
    args = parser.parse_args(argv)

    golden = load_golden(args.file)
    if "input.resized" in golden:
        ok = run_detector(golden, args.file, args)
    elif is_tower_golden(golden):
        ok = run_tower(golden, args)
    else:
        raise SystemExit(f"error: {args.file} is neither a tower golden (state_dict.dyhead_tower.*, "
                         "inputs.*) nor a detector golden (input.resized, state_dict.*)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

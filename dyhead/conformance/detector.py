"""Parity of the whole ATSS + DyHead detector with the official end-to-end golden.

Golden layout: `conformance/official_atss_e2e_golden.pt` (README section 9): `state_dict.<official
key>`, `input.*`, `res3..5`, `p3..p7`, `dyhead.block<i>.p<l>`, `head.{cls_logits,bbox_pred,
centerness}.p<l>`, `anchors.p<l>`, `prenms.*`, `det_resized.*`, `det.*`, `stress*.det*`.

The Swin-T golden (`official_swint_atss_e2e_golden.pt`, section 12) has the same layout with
`stage3..5` (after the output norms) for `res3..5`, the pre-norm `swin.stage2` / `swin.stage5`, and
RGB `input.original_rgb` / `input.resized`.

The detector is built through the official checkpoint import (widths read from the shapes) and fed
the stored uint8 `input.resized`. Decode/resize is checked separately: our Pillow resize of
`input.original_bgr` (or `_rgb`) must reproduce `input.resized` bit for bit. Post-processing is checked twice:
from our own head outputs, and from the stored head outputs (exact inputs, where the official
post-processing must be reproduced bit for bit), including the two stress sets.

Tolerances (README 9.5): features atol 1e-4 + rtol 1e-4, logits atol 2e-4, anchors and inputs exact,
detections: same count, classes and order, final boxes within 1e-3 px (unclipped boxes of our network
1e-2 px, as README 9.5), scores within 1e-5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ..checkpoint import detector_from_official_state_dict
from ..postprocess import postprocess_image, rescale_detections
from ..preprocess import load_image, resize_image, resized_size, to_model_input

__all__ = ["Check", "compare_detector", "run_detector_conformance", "is_detector_golden"]

LEVELS = ("p3", "p4", "p5", "p6", "p7")
FEATURE_ATOL, FEATURE_RTOL = 1e-4, 1e-4
LOGIT_ATOL = 2e-4
BOX_ATOL = 1e-3
SCORE_ATOL = 1e-5
#: Unclipped boxes computed by our network (pre-NMS candidates, `det_resized`) may be ~1000 px wide;
#: float32 noise of ~3e-5 in the deltas then moves them by ~3e-3 px, so they get README 9.5's 1e-2.
UNCLIPPED_BOX_ATOL = 1e-2
STRESS_DEFAULTS = {"stress": (4.0, (1.0, 1.0, 16.0, 16.0)), "stress2": (6.0, (1.0, 1.0, 1.0, 1.0))}


@dataclass(frozen=True)
class Check:
    section: str  # "input", "backbone", "fpn", "dyhead", "head", "anchors", "prenms", "det", ...
    name: str
    max_abs_diff: float  # nan where the check is not numeric
    limit: str  # the tolerance, as text
    ok: bool
    detail: str = ""


def is_detector_golden(golden: dict) -> bool:
    return "input.resized" in golden and any(k.startswith("state_dict.") for k in golden)


def _max_diff(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return float((a.double() - b.double()).abs().max())


def _close(name: str, section: str, ours: Tensor, ref: Tensor, atol: float, rtol: float = 0.0) -> Check:
    if ours.shape != ref.shape:
        return Check(section, name, float("inf"), f"atol {atol:g}", False, f"shape {list(ours.shape)} vs {list(ref.shape)}")
    diff = _max_diff(ours, ref)
    ok = bool(torch.all((ours.double() - ref.double()).abs() <= atol + rtol * ref.double().abs()))
    limit = f"atol {atol:g}" + (f" rtol {rtol:g}" if rtol else "")
    return Check(section, name, diff, limit, ok)


def _exact(name: str, section: str, ours: Tensor, ref: Tensor) -> Check:
    ok = ours.shape == ref.shape and bool(torch.equal(ours, ref))
    detail = "" if ours.shape == ref.shape else f"shape {list(ours.shape)} vs {list(ref.shape)}"
    return Check(section, name, _max_diff(ours, ref), "exact", ok, detail)


def _compare_dets(
    name: str, section: str, boxes: Tensor, scores: Tensor, labels: Tensor, golden: dict, prefix: str,
    box_atol: float = BOX_ATOL,
) -> Check:
    ref_boxes, ref_scores, ref_labels = golden[f"{prefix}.boxes"], golden[f"{prefix}.scores"], golden[f"{prefix}.classes"]
    limit = f"count/classes/order exact, boxes {box_atol:g} px, scores {SCORE_ATOL:g}"
    if len(scores) != len(ref_scores):
        return Check(section, name, float("inf"), limit, False, f"{len(scores)} detections vs {len(ref_scores)}")
    if not torch.equal(labels.long(), ref_labels):
        return Check(section, name, float("inf"), limit, False, "classes or order differ")
    box_diff = _max_diff(boxes, ref_boxes)
    score_diff = _max_diff(scores, ref_scores)
    ok = box_diff <= box_atol and score_diff <= SCORE_ATOL
    return Check(section, name, max(box_diff, score_diff), limit, ok,
                 f"{len(scores)} dets, boxes {box_diff:.2e} px, scores {score_diff:.2e}")


def _compare_prenms(cands, golden: dict) -> Check:
    """Candidates compared as sets, in the canonical order (level, location, class)."""
    limit = f"set exact, boxes {UNCLIPPED_BOX_ATOL:g} px, scores {SCORE_ATOL:g}"

    def canonical(level, location, cls):
        key = (level.long() * 10**9 + location.long()) * 10**4 + cls.long()
        return torch.argsort(key)

    ours = canonical(cands.levels, cands.locations, cands.labels)
    ref = canonical(golden["prenms.level"], golden["prenms.location"], golden["prenms.classes"])
    same_set = (
        len(ours) == len(ref)
        and torch.equal(cands.levels[ours], golden["prenms.level"][ref])
        and torch.equal(cands.locations[ours], golden["prenms.location"][ref])
        and torch.equal(cands.labels[ours], golden["prenms.classes"][ref])
    )
    if not same_set:
        return Check("prenms", "candidates", float("inf"), limit, False, f"{len(ours)} candidates vs {len(ref)}, sets differ")
    box_diff = _max_diff(cands.boxes[ours], golden["prenms.boxes"][ref])
    score_diff = _max_diff(cands.scores[ours], golden["prenms.scores"][ref])
    per_level = torch.bincount(cands.levels, minlength=len(LEVELS)).tolist()
    return Check("prenms", "candidates", max(box_diff, score_diff), limit, box_diff <= UNCLIPPED_BOX_ATOL and score_diff <= SCORE_ATOL,
                 f"{len(ours)} candidates {per_level}, boxes {box_diff:.2e} px, scores {score_diff:.2e}")


def _input_sizes(golden: dict, meta: Optional[dict]) -> tuple[int, int]:
    """(min_size, max_size) of the golden's test resize (JSON config deltas, else from the sizes)."""
    if meta:
        deltas = {d["key"]: d["golden"] for d in meta.get("config_deltas", [])}
        if "INPUT.MIN_SIZE_TEST" in deltas and "INPUT.MAX_SIZE_TEST" in deltas:
            return int(deltas["INPUT.MIN_SIZE_TEST"]), int(deltas["INPUT.MAX_SIZE_TEST"])
    h, w = (int(v) for v in golden["input.resized_size"])
    return min(h, w), max(max(h, w), round(min(h, w) * 1333 / 800))


def golden_threads(meta: Optional[dict], default: int = 2) -> int:
    """The torch thread count the golden was computed with, as its JSON's ``inference_path`` records
    it (``torch.set_num_threads(N)``: 2 for the R50 ATSS golden, 1 for Swin-T). Float32 sums are split
    differently with another count, which moves the unclipped boxes by up to ~1e-3 px."""
    match = re.search(r"set_num_threads\((\d+)\)", str((meta or {}).get("inference_path", "")))
    return int(match.group(1)) if match else default


def _postprocess(model, cls, box, ctr, anchors, rsize, osize, with_candidates=False):
    cfg = model.config
    dets, cands = postprocess_image(cls, box, ctr, anchors, model.box_coder, cfg.score_thresh, cfg.pre_nms_top_n,
                                    cfg.nms_thresh, cfg.max_detections, return_candidates=True)
    final = rescale_detections(dets, rsize, osize)
    return (dets, final, cands) if with_candidates else (dets, final)


def _channel_order(golden: dict) -> str:
    """The channel order of the golden's stored images: "RGB" (Swin-T) or "BGR" (the R50 goldens)."""
    return "RGB" if "input.original_rgb" in golden else "BGR"


def _reorder(hwc, order: str):
    """An HxWx3 array from RGB to `order` or back (a channel flip for BGR), as a contiguous copy."""
    return hwc[:, :, ::-1].copy() if order == "BGR" else hwc.copy()


def _photo_check(golden: dict, meta: Optional[dict], golden_dir: Optional[Path]) -> Optional[Check]:
    """Our decode of the golden's photo (when the file lies beside the golden) vs input.original_bgr/_rgb."""
    name = ((meta or {}).get("input") or {}).get("photo")
    order = _channel_order(golden)
    key = f"input.original_{order.lower()}"
    if not name or golden_dir is None or key not in golden:
        return None
    path = Path(golden_dir) / name
    if not path.is_file():
        return None
    ours = torch.from_numpy(_reorder(load_image(path), order))
    return _exact(f"decode of {name} vs {key}", "input", ours, golden[key])


def compare_detector(
    golden: dict[str, Tensor],
    meta: Optional[dict] = None,
    threads: Optional[int] = 2,
    golden_dir: Optional[Path] = None,
) -> list[Check]:
    """Every check of the end-to-end golden, in order. Computes in float32 on the CPU.
    golden_dir: where to look for the photo named in the JSON, to check our decode too."""
    checks: list[Check] = []
    state = {k[len("state_dict."):]: v for k, v in golden.items() if k.startswith("state_dict.")}
    min_size, max_size = _input_sizes(golden, meta)
    model, _ = detector_from_official_state_dict(state, "golden state_dict", min_size=min_size, max_size=max_size)
    model = model.float().eval()
    cfg, bb = model.config, model.config.backbone

    # Input: decode/resize from the stored original, then normalise + pad.
    order = _channel_order(golden)
    original_key = f"input.original_{order.lower()}"
    resized_stored = golden["input.resized"]  # [3, h, w] uint8, in the golden's channel order
    photo = _photo_check(golden, meta, golden_dir)
    if photo is not None:
        checks.append(photo)
    if original_key in golden:
        original_rgb = _reorder(golden[original_key].numpy(), order)
        h0, w0 = original_rgb.shape[:2]
        size_ok = resized_size(h0, w0, min_size, max_size) == tuple(int(v) for v in golden["input.resized_size"])
        checks.append(Check("input", "resized size (int(x+0.5) rounding)", 0.0 if size_ok else float("inf"), "exact", size_ok))
        ours = torch.from_numpy(_reorder(resize_image(original_rgb, min_size, max_size), order)).permute(2, 0, 1)
        checks.append(_exact(f"Pillow resize of {original_key} vs input.resized", "input", ours, resized_stored))
    resized_rgb = _reorder(resized_stored.permute(1, 2, 0).numpy(), order)
    batch, sizes = to_model_input([resized_rgb], bb.pixel_format, bb.pixel_mean, bb.pixel_std, cfg.size_divisibility)
    if "input.padded_normalized" in golden:
        checks.append(_exact("normalise + pad (input.padded_normalized)", "input", batch, golden["input.padded_normalized"]))

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            out = model(batch, return_trace=True)
            # Swin: every stage before its output norm (the golden keeps swin.stage2 and swin.stage5).
            raw_stages = model.backbone.body.forward_stages(batch)[0] if bb.kind == "swin" else []
    finally:
        torch.set_num_threads(previous)

    for i, ours in enumerate(raw_stages):
        if f"swin.stage{i + 2}" in golden:
            checks.append(_close(f"swin.stage{i + 2}", "backbone", ours, golden[f"swin.stage{i + 2}"], FEATURE_ATOL, FEATURE_RTOL))
    bottom_up_names = ("stage3", "stage4", "stage5") if bb.kind == "swin" else ("res3", "res4", "res5")
    for name, ours in zip(bottom_up_names, out.bottom_up):
        if name in golden:
            checks.append(_close(name, "backbone", ours, golden[name], FEATURE_ATOL, FEATURE_RTOL))
    for name, ours in zip(LEVELS, out.pyramid):
        if name in golden:
            checks.append(_close(name, "fpn", ours, golden[name], FEATURE_ATOL, FEATURE_RTOL))
    for b, block in enumerate(out.trace.blocks if out.trace is not None else []):
        for name, level in zip(LEVELS, block.levels):
            key = f"dyhead.block{b}.{name}"
            if key in golden:
                checks.append(_close(key, "dyhead", level.output, golden[key], FEATURE_ATOL, FEATURE_RTOL))
    for part, values in (("cls_logits", out.cls_logits), ("bbox_pred", out.bbox_deltas), ("centerness", out.centerness)):
        for name, ours in zip(LEVELS, values):
            key = f"head.{part}.{name}"
            if key in golden:
                checks.append(_close(key, "head", ours, golden[key], LOGIT_ATOL))
    anchors = model.anchors(batch)
    for name, ours in zip(LEVELS, anchors):
        if f"anchors.{name}" in golden:
            checks.append(_exact(f"anchors.{name}", "anchors", ours, golden[f"anchors.{name}"]))

    rsize = tuple(int(v) for v in golden["input.resized_size"])
    osize = tuple(int(v) for v in golden["input.original_size"])

    # Post-processing of our own head outputs.
    dets, final, cands = _postprocess(
        model, [c[0] for c in out.cls_logits], [b[0] for b in out.bbox_deltas], [c[0] for c in out.centerness],
        anchors, rsize, osize, with_candidates=True,
    )
    if "prenms.level" in golden:
        checks.append(_compare_prenms(cands, golden))
    checks.append(_compare_dets("det_resized (our network)", "det", dets.boxes, dets.scores, dets.labels, golden, "det_resized",
                                  box_atol=UNCLIPPED_BOX_ATOL))
    checks.append(_compare_dets("det (our network)", "det", final.boxes, final.scores, final.labels, golden, "det"))

    # Post-processing alone, from the stored head outputs and anchors (exact inputs).
    stored = {
        part: [golden[f"head.{part}.{n}"][0] for n in LEVELS] for part in ("cls_logits", "bbox_pred", "centerness")
    }
    stored_anchors = [golden[f"anchors.{n}"] for n in LEVELS]
    runs = [("stored", 0.0, (1.0, 1.0, 1.0, 1.0))]
    for prefix, default in STRESS_DEFAULTS.items():
        if f"{prefix}.det.boxes" in golden:
            params = (meta or {}).get(prefix, {}).get("params", {})
            shift = float(params.get("cls_logit_shift", default[0]))
            scale = tuple(float(v) for v in params.get("bbox_pred_scale_per_channel", default[1]))
            runs.append((prefix, shift, scale))
    for prefix, shift, scale in runs:
        cls = [c + shift for c in stored["cls_logits"]] if shift else stored["cls_logits"]
        factor = torch.tensor(scale, dtype=torch.float32).view(4, 1, 1)
        box = [b * factor for b in stored["bbox_pred"]] if scale != (1.0, 1.0, 1.0, 1.0) else stored["bbox_pred"]
        d_res, d_fin = _postprocess(model, cls, box, stored["centerness"], stored_anchors, rsize, osize)
        golden_prefix = "" if prefix == "stored" else prefix + "."
        label = "stored head outputs" if prefix == "stored" else f"{prefix} (shift {shift:g}, scale {list(scale)})"
        checks.append(_compare_dets(f"{golden_prefix}det_resized from {label}", "postprocess", d_res.boxes, d_res.scores,
                                    d_res.labels, golden, f"{golden_prefix}det_resized"))
        checks.append(_compare_dets(f"{golden_prefix}det from {label}", "postprocess", d_fin.boxes, d_fin.scores,
                                    d_fin.labels, golden, f"{golden_prefix}det"))
    return checks


def run_detector_conformance(
    golden: dict[str, Tensor], meta: Optional[dict] = None, golden_dir: Optional[Path] = None
) -> bool:
    """Print a table of every check; True when all pass."""
    checks = compare_detector(golden, meta, threads=golden_threads(meta), golden_dir=golden_dir)
    print("ATSS + DyHead end-to-end conformance (float32, CPU; official checkpoint import, stored input.resized)")
    width = max(len(c.name) for c in checks)
    section = None
    for c in checks:
        if c.section != section:
            section = c.section
            print(f"[{section}]")
        diff = "-" if c.max_abs_diff != c.max_abs_diff else f"{c.max_abs_diff:.3e}"
        print(f"  {c.name:<{width}}  {diff:>10}  {'ok' if c.ok else 'FAIL':<4}  {c.limit}{'  ' + c.detail if c.detail else ''}")
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks)} checks, {len(failed)} failed")
    return not failed

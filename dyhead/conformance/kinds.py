"""Parity of the RetinaNet and Faster R-CNN + DyHead detectors with their official end-to-end goldens.

* `official_retinanet_e2e_golden.pt` (conformance README section 10): `res3..5`, `p3..p7`,
  `dyhead.block<i>.p<l>`, `head.{cls_subnet,bbox_subnet,cls_score,bbox_pred}.p<l>`, `anchors.p<l>`,
  `prenms.*` (a set over (level, anchor, class)), `det_resized.*`, `det.*`, `stress*.det*`.
* `official_fasterrcnn_e2e_golden.pt` (section 11): `res2..5`, `p2..p6`, `dyhead.block<i>.p<l>`,
  `rpn.{objectness_logits,anchor_deltas}.p<l>`, `anchors.p<l>`, `proposals.*`, `roi.*`,
  `det_resized.*`, `det.*`, `rpn_release.*` (the release's 1000/1000 RPN on the stored head
  outputs), `stress.*`.

As for ATSS (`dyhead.conformance.detector`), the model is built through the official checkpoint
import and fed the stored `input.resized`; post-processing is also run on the stored head outputs
(exact inputs: the official results are expected bit for bit). The Faster R-CNN box branch is also
run alone on the stored proposals and DyHead features. The RPN top-k of the golden (50 / 100, README
11.1) is read from its JSON.

Tolerances (README 10.5, 11.5): features, subnet and RPN outputs, pooled features atol 1e-4 + rtol
1e-4; logits and deltas atol 2e-4; inputs and anchors exact; proposals: the same (level, anchor) set,
boxes 1e-2 px; detections: same count, classes and order, boxes 1e-3 px (RetinaNet's unclipped
`det_resized` and candidates 1e-2 px), scores 1e-5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ..postprocess import rescale_detections
from ..preprocess import resize_image, resized_size, to_model_input
from ..retinanet import retinanet_postprocess_image
from ..roi_heads import fast_rcnn_inference
from ..rpn import find_top_proposals
from ..weights.official import detector_from_official_state_dict, official_detector_kind
from .detector import (FEATURE_ATOL, FEATURE_RTOL, LOGIT_ATOL, SCORE_ATOL, UNCLIPPED_BOX_ATOL, Check,
                       _close, _compare_dets, _exact, _input_sizes, _max_diff, _photo_check)

__all__ = ["golden_kind", "compare_retinanet", "compare_faster_rcnn", "run_kind_conformance"]

TITLES = {"retinanet": "RetinaNet + DyHead", "faster_rcnn": "Faster R-CNN + DyHead"}


def golden_kind(golden: dict) -> str:
    """The detector kind of an end-to-end golden, from its state-dict keys."""
    state = {k[len("state_dict."):]: None for k in golden if k.startswith("state_dict.")}
    return official_detector_kind(state, "golden")


def _deltas(meta: Optional[dict]) -> dict:
    return {d["key"]: d["golden"] for d in (meta or {}).get("config_deltas", [])}


def _build(golden: dict, meta: Optional[dict], **overrides):
    state = {k[len("state_dict."):]: v for k, v in golden.items() if k.startswith("state_dict.")}
    min_size, max_size = _input_sizes(golden, meta)
    model, _ = detector_from_official_state_dict(state, "golden state_dict", min_size=min_size, max_size=max_size,
                                                 **overrides)
    return model.float().eval()


def _inputs(model, golden: dict, meta: Optional[dict], golden_dir: Optional[Path]) -> tuple[list[Check], Tensor]:
    """Decode/resize of `input.original_bgr`, normalise + pad of `input.resized` -> (checks, batch)."""
    checks: list[Check] = []
    cfg, bb = model.config, model.config.backbone
    photo = _photo_check(golden, meta, golden_dir)
    if photo is not None:
        checks.append(photo)
    resized_bgr = golden["input.resized"]  # [3, h, w] uint8, BGR
    if "input.original_bgr" in golden:
        original_rgb = golden["input.original_bgr"].numpy()[:, :, ::-1].copy()
        h0, w0 = original_rgb.shape[:2]
        size_ok = resized_size(h0, w0, cfg.min_size, cfg.max_size) == tuple(int(v) for v in golden["input.resized_size"])
        checks.append(Check("input", "resized size (int(x+0.5) rounding)", 0.0 if size_ok else float("inf"), "exact", size_ok))
        ours = torch.from_numpy(resize_image(original_rgb, cfg.min_size, cfg.max_size)[:, :, ::-1].copy()).permute(2, 0, 1)
        checks.append(_exact("Pillow resize of input.original_bgr vs input.resized", "input", ours, resized_bgr))
    resized_rgb = resized_bgr.permute(1, 2, 0).flip(-1).numpy().copy()
    batch, _ = to_model_input([resized_rgb], bb.pixel_format, bb.pixel_mean, bb.pixel_std, cfg.size_divisibility)
    if "input.padded_normalized" in golden:
        checks.append(_exact("normalise + pad (input.padded_normalized)", "input", batch, golden["input.padded_normalized"]))
    return checks, batch


def _run(model, batch: Tensor, threads: Optional[int]):
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            return model(batch, return_trace=True)
    finally:
        torch.set_num_threads(previous)


def _network_checks(model, out, golden: dict, bottom_up_names, levels) -> list[Check]:
    checks = []
    for name, ours in zip(bottom_up_names, out.bottom_up):
        if name in golden:
            checks.append(_close(name, "backbone", ours, golden[name], FEATURE_ATOL, FEATURE_RTOL))
    for name, ours in zip(levels, out.pyramid):
        if name in golden:
            checks.append(_close(name, "fpn", ours, golden[name], FEATURE_ATOL, FEATURE_RTOL))
    for b, block in enumerate(out.trace.blocks if out.trace is not None else []):
        for name, level in zip(levels, block.levels):
            key = f"dyhead.block{b}.{name}"
            if key in golden:
                checks.append(_close(key, "dyhead", level.output, golden[key], FEATURE_ATOL, FEATURE_RTOL))
    return checks


def _sizes(golden: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    return (tuple(int(v) for v in golden["input.resized_size"]), tuple(int(v) for v in golden["input.original_size"]))


# ----------------------------------------------------------------------------------------------------
# RetinaNet (README section 10)

RETINANET_LEVELS = ("p3", "p4", "p5", "p6", "p7")
RETINANET_STRESS = {"stress": (4.0, (1.0, 1.0, 16.0, 16.0)), "stress2": (6.0, (1.0, 1.0, 1.0, 1.0))}


def _retinanet_prenms(cands, golden: dict) -> Check:
    limit = f"set exact, boxes {UNCLIPPED_BOX_ATOL:g} px, scores {SCORE_ATOL:g}"

    def order(level, anchor, cls):
        return torch.argsort((level.long() * 10**9 + anchor.long()) * 10**4 + cls.long())

    ours = order(cands.levels, cands.locations, cands.labels)
    ref = order(golden["prenms.level"], golden["prenms.anchor"], golden["prenms.classes"])
    same = (len(ours) == len(ref) and torch.equal(cands.levels[ours], golden["prenms.level"][ref])
            and torch.equal(cands.locations[ours], golden["prenms.anchor"][ref])
            and torch.equal(cands.labels[ours], golden["prenms.classes"][ref]))
    if not same:
        return Check("prenms", "candidates", float("inf"), limit, False, f"{len(ours)} candidates vs {len(ref)}, sets differ")
    box_diff = _max_diff(cands.boxes[ours], golden["prenms.boxes"][ref])
    score_diff = _max_diff(cands.scores[ours], golden["prenms.scores"][ref])
    per_level = torch.bincount(cands.levels, minlength=5).tolist()
    return Check("prenms", "candidates", max(box_diff, score_diff), limit,
                 box_diff <= UNCLIPPED_BOX_ATOL and score_diff <= SCORE_ATOL,
                 f"{len(ours)} candidates {per_level}, boxes {box_diff:.2e} px, scores {score_diff:.2e}")


def compare_retinanet(golden: dict[str, Tensor], meta: Optional[dict] = None, threads: Optional[int] = 1,
                      golden_dir: Optional[Path] = None) -> list[Check]:
    """Every check of the RetinaNet golden, in order (float32, CPU; the golden used one thread)."""
    model = _build(golden, meta)
    cfg = model.config
    checks, batch = _inputs(model, golden, meta, golden_dir)
    out = _run(model, batch, threads)
    levels = RETINANET_LEVELS
    checks += _network_checks(model, out, golden, ("res3", "res4", "res5"), levels)
    for part in ("cls_subnet", "bbox_subnet"):
        for name, ours in zip(levels, out.extras[part]):
            checks.append(_close(f"head.{part}.{name}", "head", ours, golden[f"head.{part}.{name}"], FEATURE_ATOL, FEATURE_RTOL))
    for part, values in (("cls_score", out.cls_logits), ("bbox_pred", out.bbox_deltas)):
        for name, ours in zip(levels, values):
            checks.append(_close(f"head.{part}.{name}", "head", ours, golden[f"head.{part}.{name}"], LOGIT_ATOL))
    anchors = model.anchors(batch)
    for name, ours in zip(levels, anchors):
        checks.append(_exact(f"anchors.{name}", "anchors", ours, golden[f"anchors.{name}"]))
    rsize, osize = _sizes(golden)

    def post(cls, box, anchor_list, with_candidates=False):
        dets, cands = retinanet_postprocess_image(cls, box, anchor_list, model.box_coder, cfg.score_thresh,
                                                  cfg.pre_nms_top_n, cfg.nms_thresh, cfg.max_detections,
                                                  return_candidates=True)
        return dets, rescale_detections(dets, rsize, osize), cands

    dets, final, cands = post([c[0] for c in out.cls_logits], [b[0] for b in out.bbox_deltas], anchors)
    checks.append(_retinanet_prenms(cands, golden))
    checks.append(_compare_dets("det_resized (our network)", "det", dets.boxes, dets.scores, dets.labels, golden,
                                "det_resized", box_atol=UNCLIPPED_BOX_ATOL))
    checks.append(_compare_dets("det (our network)", "det", final.boxes, final.scores, final.labels, golden, "det"))

    stored_cls = [golden[f"head.cls_score.{n}"][0] for n in levels]
    stored_box = [golden[f"head.bbox_pred.{n}"][0] for n in levels]
    stored_anchors = [golden[f"anchors.{n}"] for n in levels]
    runs = [("stored", 0.0, (1.0, 1.0, 1.0, 1.0))]
    for prefix, default in RETINANET_STRESS.items():
        if f"{prefix}.det.boxes" in golden:
            params = (meta or {}).get(prefix, {}).get("params", {})
            runs.append((prefix, float(params.get("cls_logit_shift", default[0])),
                         tuple(float(v) for v in params.get("bbox_pred_scale_per_channel", default[1]))))
    for prefix, shift, scale in runs:
        cls = [c + shift for c in stored_cls] if shift else stored_cls
        factor = torch.tensor(scale, dtype=torch.float32).repeat(cfg.num_anchors).view(-1, 1, 1)  # a*4 + j
        box = [b * factor for b in stored_box] if scale != (1.0, 1.0, 1.0, 1.0) else stored_box
        d_res, d_fin, _ = post(cls, box, stored_anchors)
        gp = "" if prefix == "stored" else prefix + "."
        label = "stored head outputs" if prefix == "stored" else f"{prefix} (shift {shift:g}, scale {list(scale)})"
        checks.append(_compare_dets(f"{gp}det_resized from {label}", "postprocess", d_res.boxes, d_res.scores,
                                    d_res.labels, golden, f"{gp}det_resized"))
        checks.append(_compare_dets(f"{gp}det from {label}", "postprocess", d_fin.boxes, d_fin.scores, d_fin.labels,
                                    golden, f"{gp}det"))
    return checks


# ----------------------------------------------------------------------------------------------------
# Faster R-CNN (README section 11)

RCNN_LEVELS = ("p2", "p3", "p4", "p5", "p6")


def _rpn_topk(golden: dict, meta: Optional[dict]) -> tuple[int, int]:
    """(pre-NMS top-k per level, post-NMS top-k) the golden was made with: its JSON, else its shapes."""
    deltas = _deltas(meta)
    if "MODEL.RPN.PRE_NMS_TOPK_TEST" in deltas and "MODEL.RPN.POST_NMS_TOPK_TEST" in deltas:
        return int(deltas["MODEL.RPN.PRE_NMS_TOPK_TEST"]), int(deltas["MODEL.RPN.POST_NMS_TOPK_TEST"])
    return len(golden["rpn.prenms.level"]) // len(RCNN_LEVELS), len(golden["proposals.level"])


def _compare_proposals(name: str, section: str, props, golden: dict, prefix: str, box_atol: float,
                       logit_atol: float, with_anchor: bool = True) -> tuple[Check, Optional[Tensor]]:
    """Proposals: same count and (level, anchor) set; boxes and logits matched row by row.
    -> (check, for each golden row the index of our matching row, or None)."""
    limit = f"same (level, anchor) set, boxes {box_atol:g} px, logits {logit_atol:g}"
    ref_level = golden[f"{prefix}.level"]
    n = len(ref_level)
    if len(props.levels) != n:
        return Check(section, name, float("inf"), limit, False, f"{len(props.levels)} proposals vs {n}"), None
    if with_anchor:
        key_ours = props.levels * 10**9 + props.anchors
        key_ref = ref_level * 10**9 + golden[f"{prefix}.anchor"]
        so, sr = torch.argsort(key_ours), torch.argsort(key_ref)
        if not torch.equal(key_ours[so], key_ref[sr]):
            return Check(section, name, float("inf"), limit, False, "the (level, anchor) sets differ"), None
        match = torch.empty_like(sr)
        match[sr] = so  # golden row sr[i] <- our row so[i]
    else:
        match = torch.arange(n)
        if not torch.equal(props.levels, ref_level):
            return Check(section, name, float("inf"), limit, False, "levels differ row by row"), None
    box_diff = _max_diff(props.boxes[match], golden[f"{prefix}.boxes"])
    logit_diff = _max_diff(props.objectness_logits[match], golden[f"{prefix}.objectness_logits"])
    same_order = bool(torch.equal(match, torch.arange(n)))
    per_level = torch.bincount(props.levels, minlength=5).tolist()
    return (Check(section, name, max(box_diff, logit_diff), limit, box_diff <= box_atol and logit_diff <= logit_atol,
                  f"{n} proposals {per_level}, {'same' if same_order else 'different'} order, boxes {box_diff:.2e} px, "
                  f"logits {logit_diff:.2e}"), match)


def compare_faster_rcnn(golden: dict[str, Tensor], meta: Optional[dict] = None, threads: Optional[int] = 1,
                        golden_dir: Optional[Path] = None) -> list[Check]:
    """Every check of the Faster R-CNN golden, in order (float32, CPU; the golden used one thread)."""
    pre, post_k = _rpn_topk(golden, meta)
    model = _build(golden, meta, rpn_pre_nms_top_n=pre, rpn_post_nms_top_n=post_k)
    cfg = model.config
    checks, batch = _inputs(model, golden, meta, golden_dir)
    out = _run(model, batch, threads)
    levels = RCNN_LEVELS
    checks += _network_checks(model, out, golden, ("res2", "res3", "res4", "res5"), levels)
    for part, values in (("objectness_logits", out.cls_logits), ("anchor_deltas", out.bbox_deltas)):
        for name, ours in zip(levels, values):
            checks.append(_close(f"rpn.{part}.{name}", "rpn", ours, golden[f"rpn.{part}.{name}"], FEATURE_ATOL, FEATURE_RTOL))
    anchors = model.anchors(batch)
    for name, ours in zip(levels, anchors):
        checks.append(_exact(f"anchors.{name}", "anchors", ours, golden[f"anchors.{name}"]))
    rsize, osize = _sizes(golden)

    # Our network, end to end.
    with torch.no_grad():
        props = model.proposals(out, anchors, 0, rsize)
        check, match = _compare_proposals(f"proposals (our network, top-k {pre}/{post_k})", "rpn", props, golden,
                                          "proposals", UNCLIPPED_BOX_ATOL, FEATURE_ATOL)
        checks.append(check)
        roi = model.box_branch(out, 0, props.boxes)
        if match is not None:
            checks.append(_exact("roi.level (our network)", "roi", roi.levels[match], golden["roi.level"]))
            checks.append(_close("roi.pooled (our network)", "roi", roi.pooled[match], golden["roi.pooled"], FEATURE_ATOL, FEATURE_RTOL))
            checks.append(_close("roi.box_head (our network)", "roi", roi.box_features[match], golden["roi.box_head"], FEATURE_ATOL, FEATURE_RTOL))
            checks.append(_close("roi.cls_logits (our network)", "roi", roi.cls_logits[match], golden["roi.cls_logits"], LOGIT_ATOL))
            checks.append(_close("roi.bbox_deltas (our network)", "roi", roi.bbox_deltas[match], golden["roi.bbox_deltas"], LOGIT_ATOL))
        dets, _, kept = fast_rcnn_inference(roi.cls_logits, roi.bbox_deltas, props.boxes, rsize, model.box_coder,
                                            cfg.score_thresh, cfg.nms_thresh, cfg.max_detections, return_candidates=True)
        final = rescale_detections(dets, rsize, osize)
        checks.append(_compare_dets("det_resized (our network)", "det", dets.boxes, dets.scores, dets.labels, golden,
                                    "det_resized"))
        if match is not None and len(kept) == len(golden["det_resized.proposal"]):
            ours_to_golden = torch.empty_like(match)
            ours_to_golden[match] = torch.arange(len(match))
            checks.append(_exact("det_resized.proposal (our network)", "det", ours_to_golden[kept], golden["det_resized.proposal"]))
        checks.append(_compare_dets("det (our network)", "det", final.boxes, final.scores, final.labels, golden, "det"))

        # The RPN post-processing alone, on the stored head outputs and anchors (exact inputs).
        stored_obj = [golden[f"rpn.objectness_logits.{n}"][0] for n in levels]
        stored_deltas = [golden[f"rpn.anchor_deltas.{n}"][0] for n in levels]
        stored_anchors = [golden[f"anchors.{n}"] for n in levels]
        for prefix, (k1, k2) in (("proposals", (pre, post_k)), ("rpn_release.proposals", (1000, 1000))):
            if f"{prefix}.boxes" not in golden:
                continue
            p = find_top_proposals(stored_obj, stored_deltas, stored_anchors, rsize, model.rpn_box_coder, k1, k2,
                                   cfg.rpn_nms_thresh)
            check, _ = _compare_proposals(f"{prefix} from stored RPN outputs (top-k {k1}/{k2})", "postprocess", p,
                                          golden, prefix, 0.0, 0.0, with_anchor=prefix == "proposals")
            checks.append(check)

        # The box branch alone, on the stored proposals and DyHead output (README 11.5).
        last = max(int(k.split(".")[1][len("block"):]) for k in golden if k.startswith("dyhead.block"))
        stored_features = [golden[f"dyhead.block{last}.{n}"] for n in levels[:-1]]
        stored_props = golden["proposals.boxes"]
        roi_s = model.head.roi_heads(stored_features, cfg.strides[:-1], stored_props)
        checks.append(_exact("roi.level from stored proposals", "roi", roi_s.levels, golden["roi.level"]))
        checks.append(_close("roi.pooled from stored proposals and features", "roi", roi_s.pooled, golden["roi.pooled"], FEATURE_ATOL, FEATURE_RTOL))
        checks.append(_close("roi.cls_logits from stored proposals and features", "roi", roi_s.cls_logits, golden["roi.cls_logits"], LOGIT_ATOL))

        # The ROI post-processing alone, on the stored predictor outputs (exact inputs), and the stress set.
        runs = [("stored", 0.0, (1.0, 1.0, 1.0, 1.0))]
        if "stress.det.boxes" in golden:
            params = (meta or {}).get("stress", {}).get("params", {})
            runs.append(("stress", float(params.get("stress_bg_shift", -4.0)),
                         tuple(float(v) for v in params.get("bbox_delta_scale_per_channel", (1.0, 1.0, 32.0, 32.0)))))
        for prefix, bg_shift, scale in runs:
            logits = golden["roi.cls_logits"].clone()
            logits[:, -1] += bg_shift
            deltas = golden["roi.bbox_deltas"] * torch.tensor(scale).repeat(cfg.num_classes)
            d_res, _, kept = fast_rcnn_inference(logits, deltas, stored_props, rsize, model.box_coder, cfg.score_thresh,
                                                 cfg.nms_thresh, cfg.max_detections, return_candidates=True)
            d_fin = rescale_detections(d_res, rsize, osize)
            gp = "" if prefix == "stored" else prefix + "."
            label = ("stored predictor outputs" if prefix == "stored"
                     else f"{prefix} (background {bg_shift:+g}, deltas x {list(scale)})")
            checks.append(_compare_dets(f"{gp}det_resized from {label}", "postprocess", d_res.boxes, d_res.scores,
                                        d_res.labels, golden, f"{gp}det_resized"))
            checks.append(_exact(f"{gp}det_resized.proposal from {label}", "postprocess", kept, golden[f"{gp}det_resized.proposal"]))
            checks.append(_compare_dets(f"{gp}det from {label}", "postprocess", d_fin.boxes, d_fin.scores, d_fin.labels,
                                        golden, f"{gp}det"))
    return checks


def run_kind_conformance(golden: dict[str, Tensor], meta: Optional[dict] = None,
                         golden_dir: Optional[Path] = None) -> bool:
    """Print a table of every check of a RetinaNet or Faster R-CNN golden; True when all pass."""
    kind = golden_kind(golden)
    compare = compare_retinanet if kind == "retinanet" else compare_faster_rcnn
    checks = compare(golden, meta, golden_dir=golden_dir)
    print(f"{TITLES[kind]} end-to-end conformance (float32, CPU, 1 thread; official checkpoint import, "
          "stored input.resized)")
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

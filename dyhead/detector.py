"""DyHead detectors: backbone with FPN -> DyHead tower -> a detector kind's head -> official
post-processing. One class for the three official DyHead R50 detector kinds (`DetectorConfig.kind`):

* ``"atss"`` — ATSS + DyHead (``configs/dyhead_r50_atss_fpn_1x.yaml``, preset ``"atss_r50_dyhead6"``):
  FPN P3..P7, 1x1 ATSS predictors (conformance README section 9);
* ``"retinanet"`` — RetinaNet + DyHead (``dyhead_r50_retina_fpn_1x.yaml``, preset
  ``"retinanet_r50_dyhead6"``): FPN P3..P7, RetinaNet's 4+4 conv subnets, 9 anchors (section 10);
* ``"faster_rcnn"`` — Faster R-CNN + DyHead (``dyhead_r50_rcnn_fpn_1x.yaml``, preset
  ``"faster_rcnn_r50_dyhead6"``): FPN P2..P6, RPN, ROIAlign box head on P2..P5 (section 11).

Every kind runs the same tower, so switches, traces and coarser-branch modes work for all. Switches
and traces are passed per call and never stored on the module.

Shape legend: N batch, 3 x Hp x Wp padded input, F fpn channels, K classes, L levels (index 0 = the
finest, P3 or P2), H_l x W_l the size of level l, A anchors per location, A_l = H_l * W_l * A anchors,
M detections.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .anchors import level_anchors
from .backbone import BackboneConfig, BackboneWithFPN, build_backbone
from .box_coding import BoxCoder
from .coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from .config import CoarserBranchMode, DyHeadConfig, SwitchesArg
from .device import inference_autocast, synchronize
from .head import ATSSHead
from .postprocess import Candidates, Detections, postprocess_image, rescale_detections
from .preprocess import resize_image, to_model_input
from .retinanet import RetinaNetHead, retinanet_postprocess_image
from .roi_heads import ROIBoxHeads, fast_rcnn_inference
from .rpn import RPNHead, find_top_proposals
from .trace import TraceSpec

__all__ = [
    "Candidates",
    "DetectorConfig",
    "Detections",
    "DyHeadDetector",
    "DETECTOR_KINDS",
    "HeadOutputs",
    "Inference",
    "PRESETS",
    "TraceSpec",
    "build_detector",
    "feature_sizes",
]


#: The detector kinds and the pyramid levels each one's FPN produces (strides).
DETECTOR_KINDS = {"atss": (8, 16, 32, 64, 128), "retinanet": (8, 16, 32, 64, 128),
                  "faster_rcnn": (4, 8, 16, 32, 64)}
_RATIOS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class DetectorConfig:
    backbone: BackboneConfig
    fpn_channels: int
    tower: DyHeadConfig
    num_classes: int
    class_names: tuple[str, ...]
    #: dataset category id of each contiguous class (COCO ids for the official model).
    category_ids: tuple[int, ...]
    #: "atss" | "retinanet" | "faster_rcnn" (`DETECTOR_KINDS`).
    kind: str = "atss"
    #: Anchors: side anchor_scale * stride, centre offset anchor_offset (official 8, 0.5).
    anchor_scale: float = 8.0
    anchor_offset: float = 0.5
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    box_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    #: Inference (official ATSS: INFERENCE_TH, PRE_NMS_TOP_N, NMS_TH, DETECTIONS_PER_IMAGE).
    score_thresh: float = 0.05
    pre_nms_top_n: int = 1000
    nms_thresh: float = 0.6
    max_detections: int = 100
    #: Test-time resize (shortest edge, capped long edge) and padding (the stride of P7).
    min_size: int = 800
    max_size: int = 1333
    size_divisibility: int = 128
    #: 0 = the official DyHead head (1x1 predictors); 4 = the original ATSS conv towers (baseline);
    #: RetinaNet: the convs of each subnet (official 4).
    head_num_convs: int = 0
    #: Anchor sides per level and aspect ratios h/w (RetinaNet, RPN); empty = ATSS's single square
    #: anchor of side anchor_scale * stride.
    anchor_sizes: tuple[tuple[float, ...], ...] = ()
    anchor_ratios: tuple[float, ...] = (1.0,)
    #: Faster R-CNN: RPN test-time top-k per level before NMS, per image after NMS, NMS IoU, box
    #: weights (official 1000, 1000, 0.7, (1, 1, 1, 1)); width of the two FC layers of the box head.
    rpn_pre_nms_top_n: int = 1000
    rpn_post_nms_top_n: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_box_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    box_fc_dim: int = 1024

    def __post_init__(self) -> None:
        for name in ("class_names", "category_ids", "strides", "box_weights", "anchor_ratios", "rpn_box_weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "anchor_sizes", tuple(tuple(float(v) for v in a) for a in self.anchor_sizes))
        if self.kind not in DETECTOR_KINDS:
            raise ValueError(f"unknown detector kind {self.kind!r}; expected one of {sorted(DETECTOR_KINDS)}")
        if not (self.num_classes == len(self.class_names) == len(self.category_ids)):
            raise ValueError(
                f"num_classes ({self.num_classes}), class_names ({len(self.class_names)}) and "
                f"category_ids ({len(self.category_ids)}) must agree"
            )
        if self.tower.channels != self.fpn_channels:
            raise ValueError(f"tower channels ({self.tower.channels}) must equal fpn_channels ({self.fpn_channels})")
        if self.tower.num_levels != len(self.strides):
            raise ValueError(f"tower levels ({self.tower.num_levels}) must equal the number of strides {self.strides}")
        expected = DETECTOR_KINDS[self.kind]
        if tuple(self.strides) != expected:
            first = self.first_level_of(expected)
            raise ValueError(f"a {self.kind} backbone produces P{first}..P{first + 4} (strides {expected}), "
                             f"got strides {self.strides}")
        if self.kind != "atss" and len(self.anchor_sizes) != len(self.strides):
            raise ValueError(f"a {self.kind} detector needs anchor sizes for each of its {len(self.strides)} levels")

    @staticmethod
    def first_level_of(strides) -> int:
        return int(round(math.log2(strides[0])))

    @property
    def first_level(self) -> int:
        """The pyramid index of level 0: 3 (P3..P7) or 2 (P2..P6, Faster R-CNN)."""
        return self.first_level_of(self.strides)

    @property
    def num_anchors(self) -> int:
        """Anchors per location."""
        return len(self.anchor_sizes[0]) * len(self.anchor_ratios) if self.anchor_sizes else 1

    def to_dict(self) -> dict:
        return {
            "backbone": self.backbone.to_dict(),
            "fpn_channels": self.fpn_channels,
            "tower": self.tower.to_dict(),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "category_ids": list(self.category_ids),
            "anchor_scale": self.anchor_scale,
            "anchor_offset": self.anchor_offset,
            "strides": list(self.strides),
            "box_weights": list(self.box_weights),
            "score_thresh": self.score_thresh,
            "pre_nms_top_n": self.pre_nms_top_n,
            "nms_thresh": self.nms_thresh,
            "max_detections": self.max_detections,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "size_divisibility": self.size_divisibility,
            "head_num_convs": self.head_num_convs,
            "kind": self.kind,
            "anchor_sizes": [list(a) for a in self.anchor_sizes],
            "anchor_ratios": list(self.anchor_ratios),
            "rpn_pre_nms_top_n": self.rpn_pre_nms_top_n,
            "rpn_post_nms_top_n": self.rpn_post_nms_top_n,
            "rpn_nms_thresh": self.rpn_nms_thresh,
            "rpn_box_weights": list(self.rpn_box_weights),
            "box_fc_dim": self.box_fc_dim,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorConfig":
        d = dict(d)
        d["backbone"] = BackboneConfig.from_dict(d["backbone"])
        d["tower"] = DyHeadConfig.from_dict(d["tower"])
        return cls(**d)

    def replace(self, **changes) -> "DetectorConfig":
        return replace(self, **changes)


def kind_settings(kind: str) -> dict:
    """The `DetectorConfig` fields that the official configs of a detector kind set (besides widths)."""
    if kind == "retinanet":
        # detectron2 RetinaNet defaults + dyhead_r50_retina_fpn_1x.yaml (README 10.1): sizes
        # x * 2**(1/3) steps evaluated in double, offset 0.0, box weights 1, NMS 0.5.
        sizes = tuple(tuple(x * 2 ** (i / 3) for i in range(3)) for x in (32, 64, 128, 256, 512))
        return dict(kind=kind, strides=DETECTOR_KINDS[kind], anchor_sizes=sizes, anchor_ratios=_RATIOS,
                    anchor_offset=0.0, box_weights=(1.0, 1.0, 1.0, 1.0), nms_thresh=0.5, head_num_convs=4,
                    size_divisibility=128)
    if kind == "faster_rcnn":
        # README 11.1: RPN anchors 32 * 2^(l-2) x ratios {0.5, 1, 2} on P2..P6, offset 0.0; ROI box
        # weights (10, 10, 5, 5), NMS 0.5; padding to 64 (the stride of P6).
        sizes = tuple((float(x),) for x in (32, 64, 128, 256, 512))
        return dict(kind=kind, strides=DETECTOR_KINDS[kind], anchor_sizes=sizes, anchor_ratios=_RATIOS,
                    anchor_offset=0.0, box_weights=(10.0, 10.0, 5.0, 5.0), nms_thresh=0.5, size_divisibility=64)
    return dict(kind="atss")


def _official_r50(num_blocks: int, head_num_convs: int = 0, kind: str = "atss") -> DetectorConfig:
    fields = dict(
        backbone=BackboneConfig(kind="resnet_msra", depth=50, stem_out=64, base_width=64, res2_out=256),
        fpn_channels=256,
        tower=DyHeadConfig(num_blocks=num_blocks, channels=256),
        num_classes=80,
        class_names=COCO_CLASS_NAMES,
        category_ids=COCO_CATEGORY_IDS,
        head_num_convs=head_num_convs,
    )
    fields.update(kind_settings(kind))
    return DetectorConfig(**fields)


PRESETS: dict[str, DetectorConfig] = {
    # The official release: dyhead_r50_atss_fpn_1x (R50 MSRA, 256 channels, 6 blocks, COCO).
    "atss_r50_dyhead6": _official_r50(num_blocks=6),
    # ATSS without DyHead: the original 4-conv towers on the FPN (paper Table 2 baseline).
    "atss_r50_baseline": _official_r50(num_blocks=0, head_num_convs=4),
    # dyhead_r50_retina_fpn_1x (39.9 AP): RetinaNet's 4+4 subnets on the 6 DyHead blocks.
    "retinanet_r50_dyhead6": _official_r50(num_blocks=6, kind="retinanet"),
    # dyhead_r50_rcnn_fpn_1x (40.3 AP): FPN P2..P6, RPN, 2-FC box head; no mask head.
    "faster_rcnn_r50_dyhead6": _official_r50(num_blocks=6, kind="faster_rcnn"),
    # The bundled demo model's architecture (checkpoints/demo_dyhead.pt): a small from-scratch backbone,
    # FPN and DyHead at 32 channels, 6 blocks, the six shapes of the demo data at their native size.
    "demo": DetectorConfig(
        backbone=BackboneConfig(kind="small", small_widths=(16, 24, 32, 64, 128)),
        fpn_channels=32,
        tower=DyHeadConfig(num_blocks=6, channels=32),
        num_classes=6,
        class_names=("circle", "square", "triangle", "star", "ring", "cross"),
        category_ids=(1, 2, 3, 4, 5, 6),
        min_size=320,
        max_size=384,
    ),
}


def feature_sizes(height: int, width: int, num_levels: int = 5, first_stride: int = 8) -> list[tuple[int, int]]:
    """Sizes of P3..P7 for a padded input: every stride-2 conv halves by ceil."""
    sizes = []
    h, w, s = height, width, 1
    while s < first_stride:
        h, w, s = -(-h // 2), -(-w // 2), s * 2
    for _ in range(num_levels):
        sizes.append((h, w))
        h, w = -(-h // 2), -(-w // 2)
    return sizes


@dataclass
class HeadOutputs:
    """Everything one forward pass computed, per level (index 0 = the finest level).

    The dense head outputs depend on the kind: ATSS class logits [N, K, H_l, W_l], deltas after the
    level's Scale [N, 4, H_l, W_l] and centerness [N, 1, H_l, W_l]; RetinaNet class logits
    [N, A*K, H_l, W_l] and deltas [N, A*4, H_l, W_l] (no centerness); Faster R-CNN the RPN's
    objectness logits [N, A, H_l, W_l] and anchor deltas [N, A*4, H_l, W_l] (the box branch runs in
    post-processing, on the proposals)."""

    cls_logits: list[Tensor]
    bbox_deltas: list[Tensor]  # (dx, dy, dw, dh)
    centerness: list[Tensor]
    pyramid: list[Tensor]  # [N, F, H_l, W_l], FPN outputs = tower input
    features: list[Tensor]  # [N, F, H_l, W_l], tower outputs = head input
    trace: Optional[object] = None  # dyhead.tower.TowerTrace when asked for
    bottom_up: list[Tensor] = field(default_factory=list)  # C3, C4, C5 (C2 first for Faster R-CNN)
    #: RetinaNet: the subnet outputs per level ("cls_subnet", "bbox_subnet").
    extras: dict = field(default_factory=dict)


class DyHeadDetector(nn.Module):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        from .tower import DyHeadTower

        self.config = config
        self.backbone: BackboneWithFPN = build_backbone(config.backbone, config.fpn_channels, config.first_level)
        self.tower = DyHeadTower(config.tower)
        self.head = build_head(config)
        self.box_coder = BoxCoder(config.box_weights)
        self.rpn_box_coder = BoxCoder(config.rpn_box_weights)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, images: Tensor, switches: SwitchesArg = None, return_trace: bool = False, *,
                trace: Optional[TraceSpec] = None, coarser_branch: Optional[CoarserBranchMode] = None,
                head: bool = True) -> HeadOutputs:
        """images [N, 3, Hp, Wp], normalised and padded (see `preprocess`) -> `HeadOutputs`.

        trace: what to record inside the tower (``return_trace=True`` = everything); coarser_branch:
        this call's coarser-branch mode (None = the config's); head=False stops after the tower
        (the head's fields are then empty lists)."""
        bottom_up, pyramid = self.backbone.forward_features(images)  # P3..P7, [N, F, H_l, W_l]
        if trace is None and return_trace:
            trace = TraceSpec.everything()
        if trace is not None:
            features, record = self.tower(pyramid, switches=switches, trace=trace, coarser_branch=coarser_branch)
        else:
            features, record = self.tower(pyramid, switches=switches, coarser_branch=coarser_branch), None
        if not head:
            return HeadOutputs([], [], [], pyramid, features, record, bottom_up)
        kind = self.config.kind
        if kind == "atss":
            cls_logits, bbox_deltas, centerness = self.head(features)
            return HeadOutputs(cls_logits, bbox_deltas, centerness, pyramid, features, record, bottom_up)
        if kind == "retinanet":
            cls_logits, bbox_deltas, cls_feats, box_feats = self.head(features)
            return HeadOutputs(cls_logits, bbox_deltas, [], pyramid, features, record, bottom_up,
                               {"cls_subnet": cls_feats, "bbox_subnet": box_feats})
        objectness, anchor_deltas = self.head.proposal_generator.rpn_head(features)
        return HeadOutputs(objectness, anchor_deltas, [], pyramid, features, record, bottom_up)

    def anchors(self, images: Tensor) -> list[Tensor]:
        """Anchors [A_l, 4] of each level for a padded batch [N, 3, Hp, Wp] (shared by all images)."""
        cfg = self.config
        sizes = feature_sizes(images.shape[-2], images.shape[-1], len(cfg.strides), cfg.strides[0])
        return level_anchors(sizes, cfg.strides, cfg.anchor_scale, cfg.anchor_offset, images.device,
                             cfg.anchor_sizes, cfg.anchor_ratios)

    def preprocess(
        self, images: Sequence[np.ndarray]
    ) -> tuple[Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
        """HxWx3 uint8 RGB arrays -> (padded normalised batch on the model's device, resized sizes,
        original sizes)."""
        cfg = self.config
        original_sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
        resized = [resize_image(im, cfg.min_size, cfg.max_size) for im in images]
        bb = cfg.backbone
        batch, resized_sizes = to_model_input(resized, bb.pixel_format, bb.pixel_mean, bb.pixel_std, cfg.size_divisibility)
        return batch.to(self.device), resized_sizes, original_sizes

    def postprocess(
        self,
        outputs: HeadOutputs,
        anchors: Sequence[Tensor],
        resized_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
        return_candidates: bool = False,
    ):
        """Head outputs -> one `Detections` per image in original-image pixels.
        With `return_candidates`: a list of (final, resized-image detections, `Candidates`) instead
        (Faster R-CNN: the candidates of the final NMS)."""
        cfg = self.config
        results = []
        for i, (rsize, osize) in enumerate(zip(resized_sizes, original_sizes)):
            if cfg.kind == "retinanet":
                dets_resized, cands = retinanet_postprocess_image(
                    [c[i].float() for c in outputs.cls_logits], [b[i].float() for b in outputs.bbox_deltas],
                    anchors, self.box_coder, cfg.score_thresh, cfg.pre_nms_top_n, cfg.nms_thresh,
                    cfg.max_detections, return_candidates=True)
                final = rescale_detections(dets_resized, rsize, osize)
                results.append((final, dets_resized, cands) if return_candidates else final)
                continue
            if cfg.kind == "faster_rcnn":
                dets_resized, cands = self.detect_from_proposals(outputs, anchors, i, rsize)
                final = rescale_detections(dets_resized, rsize, osize)
                results.append((final, dets_resized, cands) if return_candidates else final)
                continue
            dets_resized, cands = postprocess_image(
                [c[i].float() for c in outputs.cls_logits],
                [b[i].float() for b in outputs.bbox_deltas],
                [c[i].float() for c in outputs.centerness],
                anchors,
                self.box_coder,
                cfg.score_thresh,
                cfg.pre_nms_top_n,
                cfg.nms_thresh,
                cfg.max_detections,
                return_candidates=True,
            )
            final = rescale_detections(dets_resized, rsize, osize)
            results.append((final, dets_resized, cands) if return_candidates else final)
        return results

    def proposals(self, outputs: HeadOutputs, anchors: Sequence[Tensor], image: int, resized_size):
        """Faster R-CNN: the RPN proposals of image `image` (`dyhead.rpn.Proposals`)."""
        cfg = self.config
        return find_top_proposals(
            [o[image].float() for o in outputs.cls_logits], [d[image].float() for d in outputs.bbox_deltas],
            anchors, resized_size, self.rpn_box_coder, cfg.rpn_pre_nms_top_n, cfg.rpn_post_nms_top_n,
            cfg.rpn_nms_thresh)

    def box_branch(self, outputs: HeadOutputs, image: int, proposal_boxes: Tensor):
        """Faster R-CNN: the box branch on P2..P5 of the tower output for one image's proposals
        (`dyhead.roi_heads.ROIOutputs`)."""
        pooled_levels = [f[image : image + 1].float() for f in outputs.features[:-1]]  # P2..P5
        return self.head.roi_heads(pooled_levels, self.config.strides[:-1], proposal_boxes)

    def detect_from_proposals(self, outputs: HeadOutputs, anchors: Sequence[Tensor], image: int, resized_size):
        """Faster R-CNN, one image: RPN proposals -> box branch -> (resized-image `Detections`,
        final-NMS `Candidates`)."""
        cfg = self.config
        proposals = self.proposals(outputs, anchors, image, resized_size)
        roi = self.box_branch(outputs, image, proposals.boxes)
        dets, cands, _ = fast_rcnn_inference(roi.cls_logits, roi.bbox_deltas, proposals.boxes, resized_size,
                                             self.box_coder, cfg.score_thresh, cfg.nms_thresh, cfg.max_detections,
                                             return_candidates=True)
        return dets, cands

    @torch.inference_mode()
    def infer(
        self,
        images: Sequence[np.ndarray],
        *,
        switches: SwitchesArg = None,
        coarser_branch: Optional[CoarserBranchMode] = None,
        trace: Optional[TraceSpec] = None,
        detections: bool = True,
        keep_head_outputs: bool = False,
        precision: str = "auto",
    ) -> "Inference":
        """The public inference API: one pass of preprocess -> backbone -> tower -> (head ->
        post-processing) over HxWx3 uint8 RGB images, returning exactly what was asked for.

        switches: `AttentionSwitches` for every block or one per block (None = all on).
        coarser_branch: this call's coarser-branch mode (None = the model's own, e.g. official).
        trace: a `TraceSpec` naming the tower intermediates to keep (None = none). With
            ``crop=True`` its feature maps are cut to the cells that cover the images (the largest
            image of the batch) before `reduce` sees them.
        detections: False stops after the tower (no head, no post-processing).
        keep_head_outputs: also return the raw `HeadOutputs` (logits, pyramid, tower outputs).
        precision: "auto" (float16 autocast on CUDA, float32 on the CPU), "float32", "bfloat16"
            or "float16" (`dyhead.device.inference_autocast`, the one autocast policy).
        """
        if self.training:
            raise RuntimeError("infer() needs the model in eval mode: call model.eval() first")
        if len(images) == 0:
            raise ValueError("infer() needs at least one image")
        device = self.device
        synchronize(device)
        start = time.perf_counter()
        batch, resized_sizes, original_sizes = self.preprocess(images)
        if trace is not None and trace.crop:
            trace = self._cropping(trace, resized_sizes)
        with inference_autocast(device, precision):
            outputs = self(batch, switches=switches, trace=trace, coarser_branch=coarser_branch, head=detections)
        dets = None
        if detections:
            dets = self.postprocess(outputs, self.anchors(batch), resized_sizes, original_sizes)
        synchronize(device)
        seconds = time.perf_counter() - start
        return Inference(
            detections=dets,
            trace=outputs.trace,
            head_outputs=outputs if keep_head_outputs else None,
            resized_sizes=[tuple(s) for s in resized_sizes],
            original_sizes=[tuple(s) for s in original_sizes],
            input_size=(int(batch.shape[-2]), int(batch.shape[-1])),
            seconds=seconds,
            device=str(device),
            precision=precision,
        )

    def _cropping(self, spec: TraceSpec, resized_sizes) -> TraceSpec:
        """`spec` with its feature maps cut to the cells covering the images, then reduced."""
        rh = max(h for h, _ in resized_sizes)
        rw = max(w for _, w in resized_sizes)
        cells = [(-(-rh // s), -(-rw // s)) for s in self.config.strides]
        inner = spec.reduce

        def crop_then_reduce(x: Tensor, level: int):
            h, w = cells[level]
            x = x[:, :, :h, :w]
            return inner(x, level) if inner is not None else x.clone()

        return replace(spec, reduce=crop_then_reduce, crop=False)

    @torch.inference_mode()
    def predict(
        self,
        images: Sequence[np.ndarray],
        switches: SwitchesArg = None,
        return_trace: bool = False,
        autocast: bool = True,
        coarser_branch: Optional[CoarserBranchMode] = None,
    ):
        """HxWx3 uint8 RGB images -> list of `Detections` (original-image pixels, labels 0..K-1).
        With `return_trace`, returns ``(detections, HeadOutputs)`` with the full tower trace inside.
        On CUDA the network runs under float16 autocast unless `autocast` is False. A thin wrapper
        of `infer`."""
        result = self.infer(
            images, switches=switches, coarser_branch=coarser_branch,
            trace=TraceSpec.everything() if return_trace else None, keep_head_outputs=return_trace,
            precision="auto" if autocast else "float32",
        )
        return (result.detections, result.head_outputs) if return_trace else result.detections


@dataclass
class Inference:
    """What one `DyHeadDetector.infer` call returns.

    detections: one `Detections` per image in original-image pixels (None when not asked for).
    trace: the `TowerTrace` holding what the call's `TraceSpec` asked for (None without a spec).
    head_outputs: the raw `HeadOutputs` when `keep_head_outputs` (its `trace` is the same trace).
    resized_sizes / original_sizes: (H, W) per image after the test-time resize / as given.
    input_size: (Hp, Wp) of the padded batch. seconds: wall time of the whole call.
    """

    detections: Optional[list]
    trace: Optional[object]
    head_outputs: Optional[HeadOutputs]
    resized_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    input_size: tuple[int, int]
    seconds: float
    device: str
    precision: str = "auto"

    def level_cells(self, image: int, strides: Sequence[int]) -> list[tuple[int, int]]:
        """(rows, cols) of each level's map that cover image `image` (the rest is padding)."""
        rh, rw = self.resized_sizes[image]
        return [(-(-rh // s), -(-rw // s)) for s in strides]


class FasterRCNNHead(nn.Module):
    """The RPN and the box branch, under detectron2's names (``proposal_generator.rpn_head``,
    ``roi_heads.box_head``, ``roi_heads.box_predictor``)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.proposal_generator = nn.Module()
        self.proposal_generator.rpn_head = RPNHead(cfg.fpn_channels, cfg.num_anchors)
        self.roi_heads = ROIBoxHeads(cfg.fpn_channels, cfg.num_classes, cfg.box_fc_dim)


def build_head(cfg: DetectorConfig) -> nn.Module:
    """The head of a detector kind, reading the DyHead tower's output."""
    if cfg.kind == "retinanet":
        return RetinaNetHead(cfg.fpn_channels, cfg.num_classes, cfg.num_anchors, cfg.head_num_convs)
    if cfg.kind == "faster_rcnn":
        return FasterRCNNHead(cfg)
    return ATSSHead(cfg.fpn_channels, cfg.num_classes, len(cfg.strides), cfg.head_num_convs)


def build_detector(cfg: DetectorConfig) -> DyHeadDetector:
    return DyHeadDetector(cfg)

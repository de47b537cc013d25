"""One DyHead block, computed as the official `DyConv` computes it.

Paper: Dai et al., CVPR 2021, Sec. 3.2, Eq. (2): W(F) = pi_C(pi_S(pi_L(F) . F) . F) . F.
The official block fuses the scale-aware (pi_L) and spatial-aware (pi_S) steps: for each output level l
it runs a modulated deformable conv on level l (stride 1), on the finer level l-1 (stride 2) and on the
coarser level l+1 (at its own size, then bilinearly upsampled), weights each result by a scale-attention
scalar, averages, and applies the task-aware DyReLU (pi_C). Every output level is computed from the
block *input*. See the conformance README, sections 2-4, for every detail reproduced here.

Shape legend: N batch, C channels, L levels (index 0 = finest, P3), H_l x W_l the size of level l.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import (
    DeformConvNorm,
    DyReLUCoefficients,
    KERNEL_TAPS,
    OFFSET_CHANNELS,
    ScaleAttention,
    SpatialOffsets,
    TaskAttention,
    hard_sigmoid,
)
from .config import AttentionSwitches, CoarserBranchMode, DyHeadConfig
from .ops.deform_conv import resolve_impl
from .ops.workspace import workspace
from .trace import TraceSpec


@dataclass
class LevelTrace:
    """What one block computed at one output level l (tensors detached). A field is None (or empty)
    when the call's `TraceSpec` did not ask for it; feature maps are whatever `TraceSpec.reduce`
    returned when the spec reduces them."""

    offset: Optional[Tensor] = None  # [N, 18, H_l, W_l], channel 2k = dy, 2k+1 = dx of tap k
    mask: Optional[Tensor] = None  # [N, 9, H_l, W_l]
    #: source level index -> [N]; sources in the official order: same, finer (l-1), coarser (l+1).
    scale_weights: dict[int, Tensor] = field(default_factory=dict)
    #: source level index -> [N], the hard sigmoid's input (after the ReLU).
    scale_logits: dict[int, Tensor] = field(default_factory=dict)
    #: source level index -> [N, C, H_l, W_l], branch after deformable conv + GroupNorm (+ upsample).
    branches: dict[int, Any] = field(default_factory=dict)
    #: [N, C, H_l, W_l], the scale-weighted mean of the branches: the DyReLU input.
    after_spatial_scale: Any = None
    dyrelu: Optional[DyReLUCoefficients] = None
    output: Any = None  # [N, C, H_l, W_l], after the task-aware step


@dataclass
class BlockTrace:
    levels: list[LevelTrace]


def _coarser_offsets(
    offset: Tensor, mask: Tensor, size: tuple[int, int], mode: CoarserBranchMode
) -> tuple[Tensor, Tensor]:
    """Offsets and masks for the coarser branch's conv, whose output has level l+1's `size`.

    OFFICIAL reproduces the official CUDA kernel, which indexes the start of each image's offset
    buffer with the output's strides (microsoft/DynamicHead issue 25; conformance README section 3):
    it uses the first 18*H'*W' values of the flattened [18, H_l, W_l] map as an [18, H', W'] map.
    CROP is mmdetection's reading: the top-left H' x W' corner.
    """
    n = offset.shape[0]
    h, w = size
    if mode is CoarserBranchMode.CROP:
        return offset[:, :, :h, :w], mask[:, :, :h, :w]
    if mode is CoarserBranchMode.OFFICIAL:
        as_read_offset = offset.reshape(n, -1)[:, : OFFSET_CHANNELS * h * w]
        as_read_mask = mask.reshape(n, -1)[:, : KERNEL_TAPS * h * w]
        return (
            as_read_offset.reshape(n, OFFSET_CHANNELS, h, w),  # [N, 18, H', W']
            as_read_mask.reshape(n, KERNEL_TAPS, h, w),  # [N, 9, H', W']
        )
    raise ValueError(f"no offset reinterpretation for coarser-branch mode {mode}")


def _resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    # The official F.upsample_bilinear is interpolate(bilinear, align_corners=True) (verified bit-exact).
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class DyHeadBlock(nn.Module):
    """Scale-, spatial- and task-aware attention over all pyramid levels, in one block.

    Three deformable convs, one per role, shared by every output level: `same_level` (official
    `DyConv[1]`), `from_finer` (stride 2, `DyConv[2]`) and `from_coarser` (`DyConv[0]`).
    """

    def __init__(self, config: DyHeadConfig) -> None:
        super().__init__()
        self.config = config
        c, groups = config.channels, config.norm_groups
        self.spatial_offsets = SpatialOffsets(c) if config.use_spatial_attention else None
        self.from_coarser = DeformConvNorm(c, stride=1, norm_groups=groups)
        self.same_level = DeformConvNorm(c, stride=1, norm_groups=groups)
        self.from_finer = DeformConvNorm(c, stride=2, norm_groups=groups)
        self.scale_attention = ScaleAttention(c) if config.use_scale_attention else None
        self.task_attention = (
            TaskAttention(c, reduction=config.dyrelu_reduction) if config.use_task_attention else None
        )

    def forward(
        self,
        features: list[Tensor],
        switches: AttentionSwitches = AttentionSwitches(),
        return_trace: bool = False,
        *,
        spec: Optional[TraceSpec] = None,
        index: int = 0,
        coarser_branch: Optional[CoarserBranchMode] = None,
    ) -> tuple[list[Tensor], Optional[BlockTrace]]:
        """One block over all levels. `return_trace` records everything; `spec` (with this block's
        0-based `index`) records only what it asks for. `coarser_branch` overrides the config's mode
        for this call only."""
        with workspace():  # deformable weights reordered once, conv outputs into reused buffers
            return self._forward(features, switches, return_trace, spec, index, coarser_branch)

    def _forward(self, features, switches, return_trace, spec, index, coarser_branch):
        if spec is None and return_trace:
            spec = TraceSpec.everything()
        record = spec is not None and spec.wants_block(index)
        mode = CoarserBranchMode(coarser_branch) if coarser_branch is not None else self.config.coarser_branch
        use_spatial = switches.spatial and self.spatial_offsets is not None
        use_scale = switches.scale and self.scale_attention is not None
        use_task = switches.task and self.task_attention is not None
        # What replaces a built attention switched off (dyhead.config SCALE_KNOCKOUTS, TASK_KNOCKOUTS).
        scale_constants = not use_scale and self.scale_attention is not None and switches.scale_off != "fixed-1"
        task_constants = not use_task and self.task_attention is not None and switches.task_off == "static"
        constants = switches.constants
        if scale_constants or task_constants:
            if constants is None:
                raise ValueError(
                    f"{switches.description} needs the calibrated knock-out constants: pass "
                    "AttentionSwitches(..., constants=dyhead.knockout.load_or_calibrate(...)), or choose "
                    "scale_off='fixed-1' / task_off='relu'")
            constants.check(index, len(features), self.config.channels)

        # With the fast deformable conv, each level is the gather table of up to three deformable convs
        # (this level's same-level conv, the stride-2 conv of the level above, the coarser-branch conv of
        # the level below), which read it channels-last. The fast conv writes channels-last too, so from
        # the second block on this is no copy at all; the first block lays out each level once instead
        # of once per conv. torchvision's kernel (CUDA, or asked for) reads and writes NCHW: no copies.
        fast = use_spatial and resolve_impl("auto", features[0].device) == "fast"
        tables = [f.contiguous(memory_format=torch.channels_last) for f in features] if fast else features
        outputs: list[Tensor] = []
        traces: list[LevelTrace] = []
        for level, x in enumerate(features):
            size = (x.shape[-2], x.shape[-1])
            if use_spatial:
                offset, mask = self.spatial_offsets(tables[level])  # channels-last: oneDNN's faster layout
            else:
                offset = mask = None

            # Branches keyed by source level, in the official stacking order: same, finer, coarser.
            branches = {level: self.same_level(tables[level], offset, mask)}
            if level > 0:
                _check_ceil_halving(features[level - 1], x, level)
                branches[level - 1] = self.from_finer(tables[level - 1], offset, mask)
            if level < len(features) - 1:
                coarser = features[level + 1] if mode is CoarserBranchMode.UPSAMPLE_FIRST else tables[level + 1]
                branches[level + 1] = self._coarser_branch(coarser, size, offset, mask, mode)

            logits: dict[int, Tensor] = {}
            weights: dict[int, Tensor] = {}
            if use_scale:
                logits = {src: self.scale_attention.logits(b) for src, b in branches.items()}
                weights = {src: hard_sigmoid(v) for src, v in logits.items()}
            elif scale_constants:  # the dataset-mean weights, the same for every image
                fixed = constants.scale_weights(index, level, branches, like=x,
                                                per_source=switches.scale_off == "calibrated-per-source")
                weights = {src: v.expand(x.shape[0]) for src, v in fixed.items()}  # [N] each, for the trace
            # (no weights: scale attention off at 1, every weight 1: a plain mean)
            keep_branches = record and spec.wants("branches", index)
            mean = _weighted_mean(branches, weights, reuse_first=not keep_branches)  # [N, C, H_l, W_l]

            keep_mean = record and spec.wants("mid", index)
            # Without autograd and with no trace keeping them, DyReLU writes into a branch that is
            # no longer needed and into the mean itself instead of two fresh maps.
            spare = None if keep_branches or torch.is_grad_enabled() else _spare_map(branches, level, mean)
            if use_task:
                coeffs = self.task_attention.coefficients(mean)
                out = TaskAttention.apply(mean, coeffs, reuse_input=not keep_mean, out=spare)
            elif task_constants:  # the dataset-mean coefficients: a fixed activation per channel
                coeffs = constants.dyrelu(index, level, x.shape[0], like=x)
                out = TaskAttention.apply(mean, coeffs, reuse_input=not keep_mean, out=spare)
            else:
                coeffs = None
                out = F.relu(mean)
            outputs.append(out)

            if record:
                traces.append(
                    _level_trace(spec, index, level, x, offset, mask, branches, logits, weights, mean, coeffs, out)
                )
        return outputs, (BlockTrace(levels=traces) if spec is not None else None)

    def _coarser_branch(
        self, coarser: Tensor, size: tuple[int, int], offset: Optional[Tensor], mask: Optional[Tensor],
        mode: CoarserBranchMode,
    ) -> Tensor:
        if mode is CoarserBranchMode.UPSAMPLE_FIRST:
            return self.from_coarser(_resize_to(coarser, size), offset, mask)
        if offset is not None:
            offset, mask = _coarser_offsets(offset, mask, tuple(coarser.shape[-2:]), mode)
        return _resize_to(self.from_coarser(coarser, offset, mask), size)


def _level_trace(spec: TraceSpec, block: int, level: int, x, offset, mask, branches, logits, weights, mean,
                 coeffs, out) -> LevelTrace:
    """The values of one level that `spec` asks for in `block`; switched-off attentions are recorded
    with the values that replaced them (zero offsets, masks of 1; the calibrated weights or 1; the
    static coefficients or a plain ReLU's)."""
    n, c, h, w = x.shape
    t = LevelTrace()
    if spec.wants("spatial", block):
        if offset is None:
            offset, mask = x.new_zeros(n, OFFSET_CHANNELS, h, w), x.new_ones(n, KERNEL_TAPS, h, w)
        t.offset, t.mask = offset.detach(), mask.detach()
    if spec.wants("scale", block):
        if not weights:  # scale attention off with "fixed-1" (or not built): every weight is 1
            weights = {src: x.new_ones(n) for src in branches}
        t.scale_weights = {src: v.detach() for src, v in weights.items()}
        t.scale_logits = {src: v.detach() for src, v in logits.items()}
    if spec.wants("branches", block):
        t.branches = {src: spec.keep_map(b, level) for src, b in branches.items()}
    if spec.wants("mid", block):
        t.after_spatial_scale = spec.keep_map(mean, level)
    if spec.wants("dyrelu", block):
        if coeffs is None:
            coeffs = DyReLUCoefficients.neutral(n, c, like=x)
        t.dyrelu = DyReLUCoefficients(**{k: v.detach() for k, v in coeffs.as_dict().items()})
    if spec.wants("outputs", block):
        t.output = spec.keep_map(out, level)
    return t


def _weighted_mean(branches: dict[int, Tensor], weights: dict[int, Tensor], *, reuse_first: bool = False) -> Tensor:
    """(sum over sources of weight * branch) / number of branches; weights [N] per source, or none
    (every weight 1). The same operations in the same order with or without autograd; without it the
    sum accumulates into the first product in place, and when `reuse_first` (no trace keeps the
    branches) every branch is scaled in place too, instead of allocating a map per step (at full size
    a fresh map costs several times the arithmetic: its pages are new to the process)."""
    terms = [(b, weights[src][:, None, None, None] if weights else None) for src, b in branches.items()]
    if torch.is_grad_enabled():
        weighted = [b * w if w is not None else b for b, w in terms]
        return sum(weighted[1:], weighted[0]) / len(weighted)
    b, w = terms[0]
    if reuse_first:
        total = b.mul_(w) if w is not None else b
    else:
        total = b * w if w is not None else b.clone()
    for b, w in terms[1:]:
        if w is not None:
            b = b.mul_(w) if reuse_first else b * w
        total.add_(b)
    return total.div_(len(terms))


def _spare_map(branches: dict[int, Tensor], level: int, like: Tensor) -> Optional[Tensor]:
    """A branch other than the same-level one (which holds the mean) with `like`'s shape and
    strides, to be overwritten once the weighted mean has been formed; None if there is none."""
    for src, b in branches.items():
        if src != level and b.shape == like.shape and b.stride() == like.stride() and b.dtype == like.dtype:
            return b
    return None


def _check_ceil_halving(finer: Tensor, x: Tensor, level: int) -> None:
    """The stride-2 branch must land on level l's grid (conformance README, section 8.5)."""
    (hf, wf), (h, w) = finer.shape[-2:], x.shape[-2:]
    if ((hf + 1) // 2, (wf + 1) // 2) != (h, w):
        raise ValueError(
            f"level {level - 1} ({hf}x{wf}) does not halve by ceil to level {level} ({h}x{w}): "
            "DyHead needs H_l = ceil(H_(l-1) / 2); pad the image to a multiple of the coarsest stride"
        )

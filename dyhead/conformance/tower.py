"""Parity of our DyHead tower with golden data produced by the official implementation.

A golden file (layout of `conformance/dyhead_tower_golden.pt`) is a flat dict of tensors:
`state_dict.dyhead_tower.<B>.<official param>`, `inputs.<level>`, and per block B and level:
`block<B>.<level>` (output), `.offset`, `.mask`, `.branch.from_<src>`, `.scale_attn.from_<src>`,
`.scale_attn_in.from_<src>`, `.mean_fea`, `.dyrelu.{a1,b1,a2,b2}`. The tower's depth, width and levels
are inferred from the keys and shapes, so goldens made with another seed, size, level count or depth
are checked the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..block import _coarser_offsets
from ..config import CoarserBranchMode, DyHeadConfig
from ..tower import DyHeadTower
from ..weights.official import official_tower_key_map

TOWER_PREFIX = "state_dict.dyhead_tower."

#: Max abs difference accepted per dtype. The float64 self-check of the golden was exact and our
#: float64 run agrees to ~1e-14; float32 round-off measured by the golden's makers is ~1e-5.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}


@dataclass(frozen=True)
class Comparison:
    name: str  # e.g. "block1.p4 output"
    max_abs_diff: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol


def is_tower_golden(golden: dict) -> bool:
    return any(k.startswith(TOWER_PREFIX) for k in golden) and any(k.startswith("inputs.") for k in golden)


def level_names(golden: dict[str, Tensor]) -> list[str]:
    """Levels in finest-first order, e.g. ['p3', 'p4', 'p5', 'p6', 'p7'] (sorted by size)."""
    names = [k[len("inputs."):] for k in golden if k.startswith("inputs.")]
    return sorted(names, key=lambda n: -golden[f"inputs.{n}"].shape[-1] * golden[f"inputs.{n}"].shape[-2])


def tower_config(golden: dict[str, Tensor], mode: CoarserBranchMode) -> DyHeadConfig:
    blocks = {int(m.group(1)) for k in golden if (m := re.match(re.escape(TOWER_PREFIX) + r"(\d+)\.", k))}
    channels = golden[f"{TOWER_PREFIX}0.DyConv.1.conv.weight"].shape[0]
    hidden = golden[f"{TOWER_PREFIX}0.relu.fc.0.weight"].shape[0]
    return DyHeadConfig(
        num_blocks=len(blocks),
        channels=channels,
        num_levels=len(level_names(golden)),
        dyrelu_reduction=channels // hidden,
        coarser_branch=mode,
    )


def build_tower(golden: dict[str, Tensor], dtype: torch.dtype, mode: CoarserBranchMode) -> DyHeadTower:
    config = tower_config(golden, mode)
    tower = DyHeadTower(config).to(dtype)  # before loading, so float64 weights are not rounded
    key_map = official_tower_key_map(config.num_blocks)
    tower.load_state_dict({ours: golden[TOWER_PREFIX + theirs] for ours, theirs in key_map.items()})
    return tower.eval()


def compare_tower(
    golden: dict[str, Tensor],
    dtype: torch.dtype = torch.float64,
    mode: CoarserBranchMode = CoarserBranchMode.OFFICIAL,
    atol: Optional[float] = None,
) -> list[Comparison]:
    """Run our tower on the golden inputs and compare every recorded intermediate."""
    atol = TOLERANCE[dtype] if atol is None else atol
    names = level_names(golden)
    tower = build_tower(golden, dtype, mode)
    inputs = [golden[f"inputs.{n}"].to(dtype) for n in names]
    with torch.inference_mode():
        _, trace = tower(inputs, return_trace=True)

    rows: list[Comparison] = []

    def compare(label: str, ours: Tensor, key: str) -> None:
        if key not in golden:
            return
        diff = (ours.double() - golden[key].double()).abs().max().item()
        rows.append(Comparison(label, diff, atol))

    for b, block in enumerate(trace.blocks):
        for l, name in enumerate(names):
            t = block.levels[l]
            prefix = f"block{b}.{name}"
            compare(f"{prefix} output", t.output, prefix)
            compare(f"{prefix} offset", t.offset, f"{prefix}.offset")
            compare(f"{prefix} mask", t.mask, f"{prefix}.mask")
            for src, weight in t.scale_weights.items():
                compare(f"{prefix} scale weight from {names[src]}", weight, f"{prefix}.scale_attn.from_{names[src]}")
                compare(f"{prefix} scale logit from {names[src]}", t.scale_logits[src], f"{prefix}.scale_attn_in.from_{names[src]}")
                compare(f"{prefix} branch from {names[src]}", t.branches[src], f"{prefix}.branch.from_{names[src]}")
            if mode is not CoarserBranchMode.UPSAMPLE_FIRST and l + 1 < len(names):
                # How the official kernel reads level l's offsets for the coarser conv (README s.3).
                src = names[l + 1]
                as_read = _coarser_offsets(t.offset, t.mask, tuple(inputs[l + 1].shape[-2:]), mode)
                compare(f"{prefix} offsets as read from {src}", as_read[0], f"{prefix}.offset_as_read.from_{src}")
                compare(f"{prefix} masks as read from {src}", as_read[1], f"{prefix}.mask_as_read.from_{src}")
            compare(f"{prefix} scale-weighted mean", t.after_spatial_scale, f"{prefix}.mean_fea")
            for coeff, value in t.dyrelu.as_dict().items():
                compare(f"{prefix} dyrelu {coeff}", value, f"{prefix}.dyrelu.{coeff}")
    return rows


def summarize(rows: list[Comparison]) -> list[tuple[str, float, bool]]:
    """Worst difference per (block, level) for outputs and scale weights, for a compact table."""
    worst: dict[str, float] = {}
    atol = rows[0].atol if rows else 0.0
    for r in rows:
        kind = "scale weights" if "scale weight" in r.name else r.name.split(" ", 1)[1]
        if kind not in ("output", "scale weights"):
            kind = "other intermediates"
        key = f"{r.name.split(' ', 1)[0]}  {kind}"
        worst[key] = max(worst.get(key, 0.0), r.max_abs_diff)
    return [(k, v, v <= atol) for k, v in worst.items()]

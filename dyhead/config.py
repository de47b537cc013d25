"""What a DyHead tower is built with, and what a single call switches off.

Two kinds of settings, kept apart on purpose (a model loaded once may serve many callers):

* `DyHeadConfig` — frozen, fixed at build time: depth, width, which attentions exist at all
  (for training ablations), and how the coarser branch reads its offsets.
* `AttentionSwitches` — frozen, passed to every `forward` call: which of the built attentions are
  switched off for that call only, globally or per block. Nothing of it is stored on a module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union


class CoarserBranchMode(str, enum.Enum):
    """How the coarser-neighbour branch uses level l's offsets and masks.

    The official block runs the coarser branch's deformable conv at level l+1's size but hands it
    the offset/mask maps predicted at level l (about 4x as many positions).
    See microsoft/DynamicHead issue 25 and section 3 of the conformance README.
    """

    #: The official CUDA kernel: it reads the first 18*H'*W' values of each image's flattened offset
    #: buffer (9*H'*W' of the mask) as if they had the conv output's shape [18, H', W'].
    OFFICIAL = "official"
    #: mmdetection's port: the top-left H'xW' corner of the offset and mask maps.
    CROP = "crop"
    #: The natural order: upsample level l+1 to level l's size first, then run the deformable conv
    #: at level l with level l's own offsets and masks (no mismatch at all).
    UPSAMPLE_FIRST = "upsample_first"


@dataclass(frozen=True)
class DyHeadConfig:
    num_blocks: int = 6
    channels: int = 256
    num_levels: int = 5
    #: GroupNorm after every deformable conv (official: 16 groups).
    norm_groups: int = 16
    #: DyReLU squeeze ratio: hidden width is channels // reduction (official: 4).
    dyrelu_reduction: int = 4
    #: Build-time ablations: an attention left out here has no parameters and never runs.
    use_scale_attention: bool = True
    use_spatial_attention: bool = True
    use_task_attention: bool = True
    coarser_branch: CoarserBranchMode = CoarserBranchMode.OFFICIAL

    def __post_init__(self) -> None:
        if self.num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {self.num_blocks}")
        if self.num_levels < 2:
            raise ValueError(f"DyHead needs at least 2 pyramid levels, got {self.num_levels}")
        if self.channels <= 0 or self.channels % self.norm_groups:
            raise ValueError(
                f"channels ({self.channels}) must be a positive multiple of norm_groups ({self.norm_groups})"
            )
        if self.channels % self.dyrelu_reduction:
            raise ValueError(
                f"channels ({self.channels}) must be divisible by dyrelu_reduction ({self.dyrelu_reduction})"
            )
        # Accept the plain string too ("crop"), e.g. from a checkpoint's saved config.
        object.__setattr__(self, "coarser_branch", CoarserBranchMode(self.coarser_branch))

    def to_dict(self) -> dict:
        return {
            "num_blocks": self.num_blocks,
            "channels": self.channels,
            "num_levels": self.num_levels,
            "norm_groups": self.norm_groups,
            "dyrelu_reduction": self.dyrelu_reduction,
            "use_scale_attention": self.use_scale_attention,
            "use_spatial_attention": self.use_spatial_attention,
            "use_task_attention": self.use_task_attention,
            "coarser_branch": self.coarser_branch.value,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DyHeadConfig":
        return cls(**d)


#: What "scale attention off" puts in place of the dynamic weights (`AttentionSwitches.scale_off`):
#: * "calibrated" (default): one constant per (block, level), the dataset mean of that level's weights
#:   over all its source branches (`dyhead.knockout.KnockoutConstants`), so the block's output keeps
#:   the magnitude the rest of the network was trained on;
#: * "calibrated-per-source": one constant per (block, level, source level), the dataset mean of each
#:   branch's weight: a static (input-independent) scale attention;
#: * "fixed-1": every weight 1, a plain mean of the branches. Official weights lie in [0.5, 1] and sit
#:   near 0.5, so this also rescales every block's output by up to 2x.
SCALE_KNOCKOUTS = ("calibrated", "calibrated-per-source", "fixed-1")
#: What "task attention off" puts in place of the dynamic DyReLU (`AttentionSwitches.task_off`):
#: * "relu" (default): DyReLU's neutral coefficients a1=1, b1=a2=b2=0, a plain ReLU;
#: * "static": the dataset-mean coefficients per (block, level, channel), a fixed piecewise-linear
#:   activation, which isolates the input-dependent part of the attention.
TASK_KNOCKOUTS = ("relu", "static")
#: Spatial attention off has one reading: zero offsets and masks of 1, an ordinary 3x3 conv in each
#: branch. The cross-level aggregation (the paper's Eq. 4 sums over levels too) stays on.
SPATIAL_KNOCKOUT = "zero-offsets"


@dataclass(frozen=True)
class AttentionSwitches:
    """Which attentions run in one block for one call, and what replaces an attention switched off:

    * scale off   -> `scale_off` (`SCALE_KNOCKOUTS`): calibrated constants (default), per-source
      calibrated constants, or every weight 1 ("fixed-1");
    * spatial off -> zero offsets and masks of 1: each deformable conv acts as an ordinary 3x3 conv
      (the branches from the neighbouring levels are still computed and averaged);
    * task off    -> `task_off` (`TASK_KNOCKOUTS`): a plain ReLU (default) or the dataset-mean
      DyReLU coefficients ("static").

    The calibrated and static variants read their values from `constants`
    (`dyhead.knockout.KnockoutConstants`, from `dyhead.knockout.calibrate`), a per-call value like
    the switches themselves: a call that needs them and has none raises ValueError.
    """

    scale: bool = True
    spatial: bool = True
    task: bool = True
    scale_off: str = "calibrated"
    task_off: str = "relu"
    #: dyhead.knockout.KnockoutConstants (compared and hashed by identity), or None
    constants: Optional[Any] = None

    def __post_init__(self) -> None:
        if self.scale_off not in SCALE_KNOCKOUTS:
            raise ValueError(f"scale_off must be one of {SCALE_KNOCKOUTS}, got {self.scale_off!r}")
        if self.task_off not in TASK_KNOCKOUTS:
            raise ValueError(f"task_off must be one of {TASK_KNOCKOUTS}, got {self.task_off!r}")

    @classmethod
    def all_off(cls, **variants) -> "AttentionSwitches":
        return cls(scale=False, spatial=False, task=False, **variants)

    @property
    def needs_constants(self) -> bool:
        """Whether this value's knock-outs read calibrated constants."""
        return (not self.scale and self.scale_off != "fixed-1") or (not self.task and self.task_off == "static")

    @property
    def label(self) -> str:
        on = [name for name in ("scale", "spatial", "task") if getattr(self, name)]
        return "+".join(on) if on else "none"

    @property
    def description(self) -> str:
        """What this value switches off and with which variant, e.g. 'scale off (calibrated), task off (relu)'."""
        parts = []
        if not self.scale:
            parts.append(f"scale off ({self.scale_off})")
        if not self.spatial:
            parts.append(f"spatial off ({SPATIAL_KNOCKOUT})")
        if not self.task:
            parts.append(f"task off ({self.task_off})")
        return ", ".join(parts) if parts else "all on"


#: A forward call takes one value for every block, or one per block.
SwitchesArg = Union[AttentionSwitches, Sequence[AttentionSwitches], None]


def switches_per_block(switches: SwitchesArg, num_blocks: int) -> tuple[AttentionSwitches, ...]:
    """Expand a forward call's `switches` argument into one `AttentionSwitches` per block."""
    if switches is None:
        return (AttentionSwitches(),) * num_blocks
    if isinstance(switches, AttentionSwitches):
        return (switches,) * num_blocks
    per_block = tuple(switches)
    if len(per_block) != num_blocks or not all(isinstance(s, AttentionSwitches) for s in per_block):
        raise ValueError(
            f"switches must be one AttentionSwitches or a sequence of {num_blocks} (one per block), "
            f"got {switches!r}"
        )
    return per_block


def knock_out(num_blocks: int, block: int, attention: str, **variants) -> tuple[AttentionSwitches, ...]:
    """Switches with one attention ('scale', 'spatial' or 'task') off in one block only; `variants`
    are `AttentionSwitches` fields (scale_off, task_off, constants) of the block switched off."""
    if attention not in ("scale", "spatial", "task"):
        raise ValueError(f"unknown attention {attention!r}; expected scale, spatial or task")
    if not 0 <= block < num_blocks:
        raise ValueError(f"block {block} out of range for a tower of {num_blocks} blocks")
    off = AttentionSwitches(**{attention: False}, **variants)
    return tuple(off if i == block else AttentionSwitches() for i in range(num_blocks))

"""What a forward call records from inside the DyHead tower: `TraceSpec`.

A trace of everything (offsets, masks, the three branches, their mean and the output of every level
of every block) is hundreds of MB per image at 256 channels. A `TraceSpec` names exactly what one
call keeps, per kind of value and per block, so that a caller that wants the scale weights pays for
[N] scalars, not for feature maps:

    TraceSpec(scale=True)                          # scale weights and logits of every block
    TraceSpec(scale=True, spatial=(5,))            # + offsets and masks of block 6 (0-based index 5)
    TraceSpec(outputs=True, mid=True, pyramid=True, reduce=fn)   # feature maps, reduced on the fly
    TraceSpec.everything()                         # all of it (what ``return_trace=True`` records)

Feature maps (``pyramid``, ``branches``, ``mid``, ``outputs``) pass through ``reduce(x, level)`` as
soon as they are computed when ``reduce`` is given: x is [N, C, H_l, W_l] (detached) and whatever
the function returns is stored instead, so a reduced trace never holds the full maps of more than
one level at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from torch import Tensor

__all__ = ["TraceSpec", "BlockSelection", "FeatureReducer"]

#: True = every block, False = none, a tuple = those blocks (0-based).
BlockSelection = Union[bool, tuple[int, ...]]
#: reduce(x [N, C, H_l, W_l], level) -> what the trace stores for that map.
FeatureReducer = Callable[[Tensor, int], Any]


def _normalise(value: BlockSelection, name: str) -> BlockSelection:
    if isinstance(value, bool):
        return value
    try:
        blocks = tuple(sorted({int(b) for b in value}))
    except TypeError:
        raise TypeError(f"TraceSpec.{name} must be a bool or a sequence of block indices, got {value!r}") from None
    if any(b < 0 for b in blocks):
        raise ValueError(f"TraceSpec.{name}: block indices are 0-based and non-negative, got {blocks}")
    return blocks


@dataclass(frozen=True)
class TraceSpec:
    """Which intermediates one forward call records (see the module docstring).

    scale:    the scale-attention weights and the hard sigmoid's inputs, [N] per (level, source);
    spatial:  the offsets [N, 18, H_l, W_l] and masks [N, 9, H_l, W_l] of each level;
    dyrelu:   the DyReLU coefficients a1, b1, a2, b2, [N, C] each;
    branches: each source level's branch after deformable conv + GroupNorm (+ upsample);
    mid:      the scale-weighted mean of the branches (the DyReLU input, "spatial+scale");
    outputs:  the block output of each level;
    pyramid:  the tower input (the FPN output) of each level.
    """

    scale: BlockSelection = False
    spatial: BlockSelection = False
    dyrelu: BlockSelection = False
    branches: BlockSelection = False
    mid: BlockSelection = False
    outputs: BlockSelection = False
    pyramid: bool = False
    reduce: Optional[FeatureReducer] = None
    #: cut feature maps to the cells that cover the image before `reduce` (applied by the detector's
    #: `infer`, which knows the image size; the bare tower ignores it)
    crop: bool = False

    def __post_init__(self) -> None:
        for name in ("scale", "spatial", "dyrelu", "branches", "mid", "outputs"):
            object.__setattr__(self, name, _normalise(getattr(self, name), name))
        if self.reduce is not None and not callable(self.reduce):
            raise TypeError(f"TraceSpec.reduce must be callable(x, level), got {self.reduce!r}")

    @classmethod
    def everything(cls) -> "TraceSpec":
        """Every value of every block, unreduced (the ``return_trace=True`` trace)."""
        return cls(scale=True, spatial=True, dyrelu=True, branches=True, mid=True, outputs=True, pyramid=True)

    def wants(self, what: str, block: int) -> bool:
        """Whether `what` ('scale', 'spatial', ...) is recorded for `block` (0-based)."""
        value = getattr(self, what)
        return value if isinstance(value, bool) else block in value

    def wants_block(self, block: int) -> bool:
        return any(self.wants(w, block) for w in ("scale", "spatial", "dyrelu", "branches", "mid", "outputs"))

    @property
    def empty(self) -> bool:
        return not self.pyramid and all(
            getattr(self, w) in (False, ()) for w in ("scale", "spatial", "dyrelu", "branches", "mid", "outputs")
        )

    def keep_map(self, x: Tensor, level: int) -> Any:
        """A feature map as the trace stores it: detached, then reduced when `reduce` is set."""
        x = x.detach()
        return self.reduce(x, level) if self.reduce is not None else x

"""The DyHead tower: DyHead blocks applied one after another (no residual connection).

Switches and traces are per call: `tower(features, switches=..., return_trace=True)`. Nothing about
a call is stored on the module, so one loaded tower can serve concurrent callers.

Shape legend: N batch, C channels, L levels (index 0 = finest), H_l x W_l the size of level l.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from torch import Tensor, nn

from .block import BlockTrace, DyHeadBlock, LevelTrace
from .config import CoarserBranchMode, DyHeadConfig, SwitchesArg, switches_per_block
from .ops.workspace import workspace
from .trace import TraceSpec

__all__ = ["DyHeadTower", "TowerTrace", "BlockTrace", "LevelTrace"]


@dataclass
class TowerTrace:
    #: the tower input per level, [N, C, H_l, W_l] (or as `TraceSpec.reduce` made it); empty when not asked for
    inputs: list
    #: one per block; a block the spec asked nothing of has no levels
    blocks: list[BlockTrace]


class DyHeadTower(nn.Module):
    def __init__(self, config: DyHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(DyHeadBlock(config) for _ in range(config.num_blocks))

    def forward(
        self,
        features: Sequence[Tensor],
        switches: SwitchesArg = None,
        return_trace: bool = False,
        *,
        trace: Optional[TraceSpec] = None,
        coarser_branch: Optional[CoarserBranchMode] = None,
    ) -> Union[list[Tensor], tuple[list[Tensor], TowerTrace]]:
        """features: L tensors [N, C, H_l, W_l], finest first, each level ceil-halving the previous.

        switches: one `AttentionSwitches` for every block, or one per block; None = all on.
        trace: a `TraceSpec` naming what to record (``return_trace=True`` = `TraceSpec.everything()`).
        coarser_branch: the coarser-branch mode of this call (None = the config's).
        Returns the L output levels, and a `TowerTrace` when `return_trace` or `trace` is given.
        """
        self._check_inputs(features)
        per_block = switches_per_block(switches, len(self.blocks))
        if trace is None and return_trace:
            trace = TraceSpec.everything()
        features = list(features)
        record = None
        if trace is not None:
            inputs = [trace.keep_map(f, level) for level, f in enumerate(features)] if trace.pyramid else []
            record = TowerTrace(inputs=inputs, blocks=[])
        with workspace():  # one for all blocks: each conv-output buffer serves every block
            for index, (block, block_switches) in enumerate(zip(self.blocks, per_block)):
                features, block_trace = block(features, block_switches, spec=trace, index=index,
                                              coarser_branch=coarser_branch)
                if record is not None:
                    record.blocks.append(block_trace)
        return (features, record) if record is not None else features

    def _check_inputs(self, features: Sequence[Tensor]) -> None:
        cfg = self.config
        if len(features) != cfg.num_levels:
            raise ValueError(f"the tower was built for {cfg.num_levels} levels, got {len(features)}")
        n = features[0].shape[0]
        for level, f in enumerate(features):
            if f.dim() != 4 or f.shape[0] != n or f.shape[1] != cfg.channels:
                raise ValueError(
                    f"level {level}: expected [{n}, {cfg.channels}, H, W], got {list(f.shape)}"
                )

"""Overrides of a loaded file's configuration, applied before the model is built (every format)."""

from __future__ import annotations

from typing import Optional

from ..config import CoarserBranchMode, DyHeadConfig
from .errors import UnknownLayoutError

__all__ = ["apply_overrides", "replace_tower"]


def replace_tower(tower: DyHeadConfig, **changes) -> DyHeadConfig:
    d = tower.to_dict()
    d.update({k: (v.value if isinstance(v, CoarserBranchMode) else v) for k, v in changes.items()})
    return DyHeadConfig.from_dict(d)


def apply_overrides(cfg, coarser_branch: Optional[object], overrides: dict, origin: str):
    """`cfg` (a `DetectorConfig`) with the coarser-branch mode and the `DetectorConfig` field
    `overrides` (e.g. min_size=320) applied; an unknown field or invalid value names the problem."""
    if coarser_branch is not None:
        cfg = cfg.replace(tower=replace_tower(cfg.tower, coarser_branch=CoarserBranchMode(coarser_branch)))
    if overrides:
        known = set(cfg.to_dict())
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown detector setting(s) {unknown}; known: {sorted(known)}")
        try:
            cfg = cfg.replace(**overrides)
        except (TypeError, ValueError) as exc:
            raise UnknownLayoutError(f"{origin}: the overrides {overrides} do not give a valid detector ({exc})") from None
    return cfg

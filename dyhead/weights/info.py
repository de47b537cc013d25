"""`LoadInfo`: what a loader read and how it interpreted the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

__all__ = ["LoadInfo", "KINDS"]

#: Every kind of file the loaders read.
KINDS = ("own", "detectron2", "mmdet")


@dataclass(frozen=True)
class LoadInfo:
    """kind: "own" (this project's format), "detectron2" (an official DyHead release) or "mmdet"
    (the tower of an mmdetection DyHead). config: the `DetectorConfig` the model was built with
    (a `DyHeadConfig` for an mmdetection tower). meta: the file's own metadata (own format: training
    iteration, time, torch version, ...). notes: what was ignored, filled or assumed, in words.
    prefix: the key prefix of an mmdetection tower inside its checkpoint."""

    kind: str
    path: str
    config: object
    meta: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown checkpoint kind {self.kind!r}; expected one of {KINDS}")
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "meta", dict(self.meta))

    def with_path(self, path: Union[str, object]) -> "LoadInfo":
        from dataclasses import replace

        return replace(self, path=str(path))

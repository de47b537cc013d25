"""What replaces an attention switched off: calibrated constants from a pass over a dataset.

Switching an attention "off" should remove its *dynamic*, input-dependent effect without changing the
feature magnitude the rest of the network was trained on. The official scale weights lie in [0.5, 1]
(relu6(ReLU(x) + 3) / 6) and start near 0.5, so replacing them by 1 rescales every block's output by
up to 2x: on the demo model that alone costs about 29 of the 31 AP lost by "scale off = weights 1".
Likewise a plain ReLU is not the DyReLU the model learned on average.

`KnockoutConstants` holds, per block and level, the dataset means that the "calibrated" and "static"
knock-outs of `dyhead.config.AttentionSwitches` put in place of the attention:

* scale: the mean weight of each (block, level, source level), [B, L, 3] (sources in the slots
  same, finer, coarser; NaN where the level has no such neighbour). The "calibrated" variant uses one
  constant per (block, level), the mean over the level's branches (every image has the same
  branches, so it is the mean of the per-source means); "calibrated-per-source" uses each mean alone.
* task: the mean DyReLU coefficients a1, b1, a2, b2 per (block, level, channel), [B, L, C] each.

`calibrate(model, data_root, split)` computes them with one traced pass (no detection head) over a
split, by default each image alone (batch 1, as the official test path). `load_or_calibrate` keeps them
in a file beside the checkpoint (``<checkpoint>.knockout.pt``), keyed by the checkpoint's sha256, so
they are computed once per model and reused. The values are passed per call inside the switches
(`AttentionSwitches(scale=False, constants=k)`), never stored on a module.

Shape legend: B blocks, L levels (index 0 = finest), C channels, N images.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor

from .attention import DyReLUCoefficients
from .trace import TraceSpec

__all__ = ["KnockoutConstants", "ConstantsAccumulator", "calibrate", "load_or_calibrate", "constants_path",
           "file_sha256", "SOURCE_SLOTS"]

#: Slot of each source in `KnockoutConstants.scale`'s last axis.
SOURCE_SLOTS = ("same", "finer", "coarser")
_FORMAT = "dyhead-knockout-constants/1"


def _slot(level: int, source: int) -> int:
    return {0: 0, -1: 1, 1: 2}[source - level]


@dataclass(frozen=True, eq=False, repr=False)
class KnockoutConstants:
    """Dataset means that stand in for switched-off attentions (see the module docstring).
    Compared and hashed by identity, so that switches holding it stay hashable."""

    scale: Tensor  # [B, L, 3] float32, NaN where a level has no such source
    a1: Tensor  # [B, L, C] float32
    b1: Tensor
    a2: Tensor
    b2: Tensor
    images: int
    #: where the means come from: checkpoint_sha256, data, split, images, batch_size, coarser_branch
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # short: it appears inside every AttentionSwitches that carries it
        return f"KnockoutConstants({self.describe()})"

    @property
    def num_blocks(self) -> int:
        return int(self.scale.shape[0])

    def check(self, block: int, num_levels: int, channels: int) -> None:
        b, l, c = self.a1.shape
        if block >= b or num_levels != l or channels != c:
            raise ValueError(
                f"knock-out constants for {b} blocks x {l} levels x {c} channels do not fit block {block} "
                f"of a tower with {num_levels} levels x {channels} channels (calibrated for another model?)"
            )

    def scale_weights(self, block: int, level: int, sources: Iterable[int], *, per_source: bool,
                      like: Tensor) -> dict[int, Tensor]:
        """The constant weight of each source branch of (block, level), as 0-dim tensors like `like`:
        per source ("calibrated-per-source"), or one value for all, their mean ("calibrated")."""
        sources = list(sources)
        row = self.scale[block, level]  # [3]
        means = {src: row[_slot(level, src)] for src in sources}
        if any(torch.isnan(v) for v in means.values()):
            raise ValueError(f"no calibrated scale weight for block {block}, level {level}, sources {sources}")
        if not per_source:
            level_mean = torch.stack(list(means.values())).mean()
            means = {src: level_mean for src in sources}
        return {src: v.to(device=like.device, dtype=like.dtype) for src, v in means.items()}

    def dyrelu(self, block: int, level: int, n: int, *, like: Tensor) -> DyReLUCoefficients:
        """The static DyReLU coefficients of (block, level), each [n, C] like `like`."""
        def take(t: Tensor) -> Tensor:
            return t[block, level].to(device=like.device, dtype=like.dtype).expand(n, -1)  # [N, C]

        return DyReLUCoefficients(a1=take(self.a1), b1=take(self.b1), a2=take(self.a2), b2=take(self.b2))

    def describe(self) -> str:
        m = self.meta
        sha = str(m.get("checkpoint_sha256", ""))[:16] or "?"
        return (f"dataset means over {self.images} images of {m.get('data', '?')} split {m.get('split', '?')} "
                f"(batch {m.get('batch_size', '?')}), model sha256 {sha}")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"format": _FORMAT, "scale": self.scale, "a1": self.a1, "b1": self.b1, "a2": self.a2,
                    "b2": self.b2, "images": self.images, "meta": dict(self.meta)}, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "KnockoutConstants":
        d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a knock-out constants file ({_FORMAT})")
        return cls(scale=d["scale"], a1=d["a1"], b1=d["b1"], a2=d["a2"], b2=d["b2"], images=int(d["images"]),
                   meta=dict(d["meta"]))

    @classmethod
    def from_traces(cls, traces: Iterable, meta: Optional[dict] = None) -> "KnockoutConstants":
        """The means over every image of some `TowerTrace`s recorded with scale and dyrelu."""
        acc = ConstantsAccumulator()
        for t in traces:
            acc.add(t)
        return acc.result(meta)


class ConstantsAccumulator:
    """Sums the traced scale weights and DyReLU coefficients per (block, level) in float64."""

    def __init__(self) -> None:
        self.scale: Optional[Tensor] = None  # [B, L, 3]
        self.coeffs: dict[str, Tensor] = {}
        self.images = 0

    def add(self, trace) -> None:
        """Add one `TowerTrace` (all blocks, scale and dyrelu recorded) of a batch of N images."""
        blocks = trace.blocks
        num_levels = len(blocks[0].levels)
        first = blocks[0].levels[0]
        if first.dyrelu is None or not first.scale_weights:
            raise ValueError("calibration needs traces with TraceSpec(scale=True, dyrelu=True)")
        n, c = first.dyrelu.a1.shape
        if self.scale is None:
            self.scale = torch.zeros(len(blocks), num_levels, 3, dtype=torch.float64)
            self.present = torch.zeros(len(blocks), num_levels, 3, dtype=torch.bool)
            self.coeffs = {k: torch.zeros(len(blocks), num_levels, c, dtype=torch.float64)
                           for k in ("a1", "b1", "a2", "b2")}
        for b, block in enumerate(blocks):
            for level, lt in enumerate(block.levels):
                for src, w in lt.scale_weights.items():
                    slot = _slot(level, src)
                    self.scale[b, level, slot] += w.detach().double().sum().cpu()
                    self.present[b, level, slot] = True
                for k, v in lt.dyrelu.as_dict().items():
                    self.coeffs[k][b, level] += v.detach().double().sum(0).cpu()
        self.images += n

    def result(self, meta: Optional[dict] = None) -> KnockoutConstants:
        if not self.images:
            raise ValueError("no image was traced: nothing to calibrate")
        scale = (self.scale / self.images).float()
        scale[~self.present] = float("nan")
        coeffs = {k: (v / self.images).float() for k, v in self.coeffs.items()}
        return KnockoutConstants(scale=scale, **coeffs, images=self.images, meta=dict(meta or {}))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def constants_path(checkpoint: str | Path) -> Path:
    """Where `load_or_calibrate` keeps a checkpoint's constants: beside it, ``<name>.knockout.pt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".knockout.pt")


def calibrate(model, data_root, split: str = "train", *, max_images: Optional[int] = None,
              batch_size: int = 1, coarser_branch=None, checkpoint: Optional[str | Path] = None,
              path: Optional[str | Path] = None, progress: bool = True,
              on_image: Optional[Callable[[int, int], None]] = None) -> KnockoutConstants:
    """The knock-out constants of `model`: one pass over a COCO split (`data_root`/`split`, images in
    increasing id order, the first `max_images` when given), all attentions on, recording only the
    scale weights and DyReLU coefficients (no detection head). `checkpoint`'s sha256 goes into the
    metadata; with `path` the constants are saved there. on_image(done, total) after each batch."""
    from .data.coco import load_coco, resolve_split
    from .preprocess import ImageLoadError, load_image
    from .progress import progress_bar

    paths = resolve_split(data_root, split)
    coco = load_coco(paths.annotation_file)
    image_ids = sorted(coco.getImgIds())[:max_images]
    was_training = model.training
    model.eval()
    acc = ConstantsAccumulator()
    spec = TraceSpec(scale=True, dyrelu=True)
    bar = progress_bar(len(image_ids), desc=f"calibrate {paths.split}", unit="img", enabled=progress)
    try:
        for i in range(0, len(image_ids), batch_size):
            images = []
            for image_id in image_ids[i:i + batch_size]:
                try:
                    images.append(load_image(paths.image_dir / coco.imgs[image_id]["file_name"]))
                except ImageLoadError:
                    continue
            if images:
                result = model.infer(images, trace=spec, detections=False, coarser_branch=coarser_branch)
                acc.add(result.trace)
            bar.update(len(image_ids[i:i + batch_size]))
            if on_image is not None:
                on_image(min(i + batch_size, len(image_ids)), len(image_ids))
    finally:
        bar.close()
        model.train(was_training)
    meta = {"data": str(paths.annotation_file), "split": paths.split, "images": acc.images,
            "batch_size": batch_size, "coarser_branch": str(getattr(coarser_branch, "value", coarser_branch)
                                                            or model.config.tower.coarser_branch.value)}
    if checkpoint is not None:
        meta["checkpoint_sha256"] = file_sha256(checkpoint)
    constants = acc.result(meta)
    if path is not None:
        constants.save(path)
    return constants


def load_or_calibrate(model, checkpoint: str | Path, data_root=None, split: str = "train", *,
                      path: Optional[str | Path] = None, recalibrate: bool = False,
                      **calibrate_kwargs) -> KnockoutConstants:
    """The constants saved for `checkpoint` (``path``, default `constants_path(checkpoint)`) when the
    file's sha256 matches the checkpoint's; otherwise (or with `recalibrate`) computed by `calibrate`
    on `data_root`/`split` and saved there, or under ``~/.cache/dyhead/knockout/`` when the
    checkpoint's folder is not writable."""
    checkpoint = Path(checkpoint)
    sha = file_sha256(checkpoint)
    candidates = [Path(path)] if path is not None else [
        constants_path(checkpoint), Path.home() / ".cache" / "dyhead" / "knockout" / f"{sha[:16]}.knockout.pt"]
    if not recalibrate:
        for p in candidates:
            if p.is_file():
                found = KnockoutConstants.load(p)
                if found.meta.get("checkpoint_sha256") == sha:
                    return found
    if data_root is None:
        raise FileNotFoundError(
            f"no knock-out constants for {checkpoint.name} (sha256 {sha[:16]}) in {[str(p) for p in candidates]}; "
            "give a dataset to calibrate on")
    constants = calibrate(model, data_root, split, checkpoint=checkpoint, **calibrate_kwargs)
    for p in candidates:
        try:
            constants.save(p)
            break
        except OSError:
            continue
    return constants

"""Random weights in the exact layout of a released file, from a key manifest.

The conformance kit lists every key and shape of each official release
(``official_*_keys.json``: ``{"keys": {name: shape}}``). `state_from_manifest` draws a state dict with
exactly those keys and shapes, with values of the right kind (convolutions scaled by their fan-in,
normalisation layers neutral, running variances 1, the classification bias at the 0.01 prior, Swin's
int64 ``relative_position_index`` buffers at their deterministic values), so that
a full-size checkpoint can be loaded, timed and served without downloading the released file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from ..swin import relative_position_index

__all__ = ["read_manifest", "state_from_manifest", "save_random_release"]


def read_manifest(path: Union[str, Path]) -> dict[str, list[int]]:
    """{key: shape} of a key manifest (a JSON object with a "keys" mapping)."""
    data = json.loads(Path(path).read_text())
    keys = data.get("keys", data) if isinstance(data, dict) else None
    if not isinstance(keys, dict) or not all(isinstance(v, list) for v in keys.values()):
        raise ValueError(f"{path}: not a key manifest (expected {{'keys': {{name: shape}}}})")
    return {str(k): [int(x) for x in v] for k, v in keys.items()}


def _value(name: str, shape: list[int], g: torch.Generator) -> Tensor:
    if name.endswith("relative_position_index"):  # [w*w, w*w], not a weight
        return relative_position_index(math.isqrt(shape[0]))
    if name.endswith("running_var"):
        return torch.ones(shape)
    if name.endswith("running_mean") or name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long if name.endswith("num_batches_tracked") else torch.float32)
    if len(shape) <= 1:
        if "cls_logits.bias" in name:
            return torch.full(shape, -math.log((1 - 0.01) / 0.01))  # the 0.01 prior of the released init
        if ("norm" in name or ".bn" in name or "bn." in name) and name.endswith("weight"):
            return torch.ones(shape)
        if name.endswith("scale") or name.endswith("scales"):
            return torch.ones(shape)
        return torch.zeros(shape) if name.endswith("bias") else torch.randn(shape, generator=g) * 0.01
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=g) * (1.0 / math.sqrt(fan_in))


def state_from_manifest(path: Union[str, Path], seed: int = 0) -> dict[str, Tensor]:
    """A state dict with exactly the manifest's keys and shapes (random values, see the module)."""
    g = torch.Generator().manual_seed(seed)
    return {name: _value(name, shape, g) for name, shape in read_manifest(path).items()}


def save_random_release(manifest: Union[str, Path], out: Union[str, Path], seed: int = 0) -> Path:
    """Write ``{"model": state}`` as the official detectron2 files hold it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state_from_manifest(manifest, seed)}, out)
    return out

"""Choosing the compute device and the numeric precision of inference: the one place for both.

* `resolve_device`: "auto" -> CUDA when present, else CPU; an explicit device that is absent is an error.
* `inference_autocast`: the autocast policy of every inference path (the detector's `infer`, the
  analyses, the app, the benchmarks). ``precision="auto"`` runs float16 autocast on CUDA and plain
  float32 on the CPU; ``"float32"`` never autocasts; ``"bfloat16"`` / ``"float16"`` autocast on
  either device (bfloat16 on a CPU is fast where the CPU has bfloat16 instructions, e.g. AVX512-BF16).
* `training_autocast`: the mixed-precision policy of training (float16 autocast on CUDA only).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Union

import torch

__all__ = ["DeviceError", "PRECISIONS", "resolve_device", "inference_dtype", "inference_autocast",
           "training_autocast", "synchronize"]

#: The values of every ``precision`` argument.
PRECISIONS = ("auto", "float32", "float16", "bfloat16")


class DeviceError(RuntimeError):
    """A device that was asked for but is not available."""


def resolve_device(name: Union[str, torch.device] = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cpu"; "cuda" or "cuda:<i>" (an error if absent)."""
    if isinstance(name, torch.device):
        name = str(name)
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} was requested but CUDA is not available on this machine")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} was requested but only {torch.cuda.device_count()} GPU(s) exist")
        return dev
    raise DeviceError(f"unknown device {name!r}; expected 'auto', 'cpu' or 'cuda'")


def inference_dtype(device: Union[str, torch.device], precision: str = "auto"):
    """The autocast dtype of inference on `device` under `precision`, or None for plain float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    kind = torch.device(device).type
    if precision == "auto":
        return torch.float16 if kind == "cuda" else None
    return {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[precision]


def inference_autocast(device: Union[str, torch.device], precision: str = "auto") -> ContextManager:
    """The autocast context of one inference call on `device` (see the module docstring)."""
    dtype = inference_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def training_autocast(device: Union[str, torch.device], enabled: bool = True) -> ContextManager:
    """float16 autocast for a training step on CUDA (with a GradScaler); nothing on the CPU."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def synchronize(device: Union[str, torch.device]) -> None:
    """Wait for queued CUDA work (for timings); nothing on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)

"""Choosing the compute device."""

from __future__ import annotations

import torch

__all__ = ["DeviceError", "resolve_device"]


class DeviceError(RuntimeError):
    """A device that was asked for but is not available."""


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cpu"; "cuda" or "cuda:<i>" (an error if absent)."""
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

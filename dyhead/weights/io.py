"""Reading weight files safely, and the checked key-by-key transfer every format's loader uses.

Every file is read with ``torch.load(..., weights_only=True)``. A file that needs arbitrary code to
unpickle is refused, never loaded unsafely.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from .errors import (MissingKeysError, NotATorchFileError, CheckpointNotFoundError, ShapeMismatchError,
                     UnexpectedKeysError, UnsafeCheckpointError)

__all__ = ["PathLike", "read_checkpoint", "load_mapped", "require_keys", "is_state_dict"]

PathLike = Union[str, Path]


def read_checkpoint(path: PathLike) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint path is not a file: {path}")
    if path.stat().st_size == 0:
        raise NotATorchFileError(f"{path}: empty file (0 bytes), not a torch checkpoint")
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive; the legacy format and pickles of protocol >= 2 start with 0x80.
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")):
        raise NotATorchFileError(f"{path}: not a torch checkpoint (neither a torch zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol chatter of plain pickles
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            reason = _weights_only_reason(text)
            raise UnsafeCheckpointError(
                f"{path}: refused: unpickling this file needs arbitrary code, which torch.load(weights_only=True) "
                f"does not run, and this program never loads checkpoints unsafely. Re-save its tensors as a plain "
                f"state dict from a trusted environment. {reason}".strip()
            ) from None
        raise NotATorchFileError(f"{path}: not a torch checkpoint ({text.splitlines()[0] if text else 'unpickling failed'})") from None
    except (RuntimeError, KeyError, EOFError, ValueError, OSError, AttributeError, IndexError, TypeError) as exc:
        raise NotATorchFileError(
            f"{path}: not a torch checkpoint file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


def _weights_only_reason(text: str) -> str:
    """The one informative part of torch's weights_only refusal, e.g. 'Unsupported global: ...'."""
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[-1].strip() or next((x for x in lines[i + 1:] if x), "")
            return f"(torch: {rest.split('. Please use')[0]})" if rest else ""
    return ""


def is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def load_mapped(
    model: nn.Module,
    source: dict[str, Tensor],
    key_map: dict[str, str],
    origin: str,
    ignore: Callable[[str], bool] = lambda k: False,
    transforms: Optional[dict[str, Callable[[Tensor], Tensor]]] = None,
    fill: Optional[dict[str, Callable[[Tensor], Tensor]]] = None,
) -> None:
    """Copy `source[key_map[ours]]` into each of `model`'s state entries, checking every key and shape.

    transforms: per our key, applied to the source tensor first (e.g. 1x1 conv -> Linear).
    fill: our keys with no source tensor, made from our own tensor (e.g. a zero bias).
    """
    transforms = transforms or {}
    fill = fill or {}
    ours = model.state_dict()
    unmapped = [k for k in ours if k not in key_map and k not in fill]
    if unmapped:  # a bug in a key map, not in the file
        raise RuntimeError(f"no source key for model entries {unmapped[:5]}")
    wanted = {key_map[k] for k in ours if k in key_map}
    missing = [key_map[k] for k in ours if k in key_map and key_map[k] not in source]
    if missing:
        raise MissingKeysError(
            f"{origin}: {len(missing)} expected key(s) missing, e.g. {missing[:5]}", missing
        )
    unexpected = [k for k in source if k not in wanted and not ignore(k)]
    if unexpected:
        raise UnexpectedKeysError(
            f"{origin}: {len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}", unexpected
        )
    new_state, mismatches = {}, []
    for k, target in ours.items():
        if k in fill:
            new_state[k] = fill[k](target)
            continue
        value = source[key_map[k]]
        if k in transforms and value.dim() == 4 and target.dim() == 2:
            value = transforms[k](value)
        if tuple(value.shape) != tuple(target.shape):
            mismatches.append((key_map[k], tuple(target.shape), tuple(value.shape)))
            continue
        new_state[k] = value.detach().to(dtype=target.dtype)
    if mismatches:
        detail = "; ".join(f"{name}: expected {list(e)}, found {list(f)}" for name, e, f in mismatches[:5])
        raise ShapeMismatchError(f"{origin}: {len(mismatches)} tensor(s) with the wrong shape: {detail}", mismatches)
    model.load_state_dict(new_state, strict=True)


def require_keys(state: dict, keys: list[str], origin: str) -> None:
    """Raise `MissingKeysError` naming the first missing `keys` of `state`."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise MissingKeysError(f"{origin}: {len(missing)} expected key(s) missing, e.g. {missing[:5]}", missing)

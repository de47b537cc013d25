"""What one inference pass keeps between its operations, on one thread.

At the official size (800x1333, 256 channels) a fresh feature map is 17 MB, and on CPU writing into
freshly allocated memory costs several times the arithmetic done on it: its pages are new to the
process (glibc hands maps of this size back to the OS when they are freed). The fast deformable
conv (`dyhead.ops.deform_conv`) writes each output, which its GroupNorm reads once, into a kept
buffer, and keeps its reordered weights; a DyHead tower opens one workspace around its blocks:

* `empty` hands out a buffer of the asked shape that nothing but the workspace refers to any more
  (the storage's use count says so), else makes a new one and keeps it too. A buffer still used by
  anybody (a caller, a trace, a view) is never handed out again.
* `kept` makes a derived copy of a weight (a reordering, a packing) once per block instead of once
  per call.

Both are dropped when the outermost `workspace` block ends; outside one, `empty` is `torch.empty`
and `kept` makes its copy every time. Only inference (no autograd) uses them.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Optional, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

_LOCAL = threading.local()


class _Workspace:
    def __init__(self) -> None:
        #: id(weight) -> (weight, what `kept` made of it); the weight is held so its id stays its own
        self.weights: dict[int, tuple[Tensor, object]] = {}
        #: (shape, dtype, device) -> buffers made so far
        self.buffers: dict[tuple, list[Tensor]] = {}


@contextlib.contextmanager
def workspace() -> Iterator[None]:
    """Keep buffers and weight copies until this block ends. Nested blocks share the outermost one's
    buffers and keep weight copies of their own (a tower opens one around all its blocks, each block
    one around its own calls), so that only one block's weight copies are held at a time. Weights
    must not change inside a block."""
    outer: Optional[_Workspace] = getattr(_LOCAL, "current", None)
    if outer is None:
        _LOCAL.current = _Workspace()
    else:
        outer_weights, outer.weights = outer.weights, {}
    try:
        yield
    finally:
        if outer is None:
            _LOCAL.current = None
        else:
            outer.weights = outer_weights


def active() -> bool:
    """Whether a `workspace` block is open on this thread."""
    return getattr(_LOCAL, "current", None) is not None


def kept(weight: Tensor, make: Callable[[Tensor], T]) -> T:
    """make(weight), made once per workspace block for this weight tensor (every call outside one)."""
    space: Optional[_Workspace] = getattr(_LOCAL, "current", None)
    if space is None:
        return make(weight)
    hit = space.weights.get(id(weight))
    if hit is None or hit[0] is not weight:
        hit = space.weights[id(weight)] = (weight, make(weight))
    return hit[1]  # type: ignore[return-value]


def _storage_users(t: Tensor) -> Optional[int]:
    """How many tensors share t's storage (None where this PyTorch does not say)."""
    try:
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata)
    except (AttributeError, RuntimeError, TypeError):
        return None


#: What `_storage_users` reports for a storage held by one tensor only (None: reuse nothing).
_SOLE_USER = _storage_users(torch.empty(1))


def empty(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised contiguous tensor of `shape` with `like`'s dtype and device: inside a
    workspace, one of its buffers that nobody else uses any more, else a new one (kept as well)."""
    space: Optional[_Workspace] = getattr(_LOCAL, "current", None)
    if space is None or _SOLE_USER is None:
        return like.new_empty(shape)
    pool = space.buffers.setdefault((tuple(shape), like.dtype, like.device), [])
    for buffer in pool:
        if _storage_users(buffer) == _SOLE_USER:
            break
    else:
        buffer = like.new_empty(shape)
        pool.append(buffer)
    # A view, not the kept tensor itself: while the caller (or anything made from what it got) holds
    # it, the storage counts one more user and the buffer is not handed out again.
    return buffer.view(buffer.shape)

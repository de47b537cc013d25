"""A cache of per-image results bounded by bytes, shared by every session of one server.

Streamlit's `st.cache_data` bounds a cache by its number of entries and unpickles the whole value on
every read; a per-image result of a full-size model holds tens of MB of maps, so eight entries could
be a few hundred MB or a few hundred kB. `ByteLRU` keeps values as they are (no copy on read: callers
treat them as read-only), counts their bytes (`nbytes`) and evicts the least recently used entries
beyond `max_bytes`. One computation per key runs at a time; a second caller of the same key waits
for the first one's result instead of computing it again.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

import numpy as np

__all__ = ["ByteLRU", "nbytes"]


def nbytes(value: Any, _seen: set | None = None) -> int:
    """Approximate memory held by `value`: arrays, tensors and frames by their buffers, containers
    and dataclasses by their contents (each object counted once)."""
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # torch.Tensor
        return int(value.element_size() * value.nelement())
    if hasattr(value, "memory_usage") and hasattr(value, "columns"):  # pandas.DataFrame
        return int(value.memory_usage(index=True, deep=True).sum())
    if isinstance(value, dict):
        return 64 + sum(nbytes(k, seen) + nbytes(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 56 + sum(nbytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return 64 + sum(nbytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    if isinstance(value, (str, bytes)):
        return 49 + len(value)
    return 32


class ByteLRU:
    """Least-recently-used cache holding at most `max_bytes` (a value larger than that is returned
    but not kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[Hashable, threading.Lock] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key][0]

    def put(self, key: Hashable, value: Any) -> None:
        size = nbytes(value)
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes and self._items:
                _, (_, evicted) = self._items.popitem(last=False)
                self.bytes -= evicted

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value of `key`, else `compute()` (once, even with concurrent callers)."""
        sentinel = object()
        value = self.get(key, sentinel)
        if value is not sentinel:
            return value
        with self._lock:
            gate = self._computing.setdefault(key, threading.Lock())
        with gate:
            value = self.get(key, sentinel)  # computed by another caller while we waited
            if value is not sentinel:
                return value
            with self._lock:
                self.misses += 1
            try:
                value = compute()
                self.put(key, value)
            finally:
                with self._lock:
                    self._computing.pop(key, None)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

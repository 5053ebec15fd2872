"""Compact state for runs that stream: a uint64 -> int64 map in sorted numpy arrays.

Why: a streaming run still needs a little state per row (which request keys the log already
answers, and where; which prompts were seen). A Python dict holds an entry in ~100 bytes, so 10M
rows would be a gigabyte; two sorted numpy arrays hold it in 16. Recent entries sit in a small
dict that is merged into the arrays when it reaches a quarter of their size, so inserts cost
O(log n) amortised and a lookup is one dict probe plus one binary search.
"""

from __future__ import annotations

from typing import Any

_MIN_BUFFER = 1 << 15


def _np() -> Any:
    import numpy  # imported on first use: a run that resumes nothing never needs it

    return numpy


class U64Map:
    """uint64 keys to int64 values; a later ``set`` of a key replaces its value."""

    __slots__ = ("_buf", "_keys", "_vals")

    def __init__(self) -> None:
        self._buf: dict[int, int] = {}
        self._keys: Any = ()  # sorted numpy uint64, once a merge made them
        self._vals: Any = ()

    def __len__(self) -> int:
        self._merge()
        return len(self._keys)

    def set(self, key: int, value: int) -> None:
        self._buf[key] = value
        if len(self._buf) >= max(_MIN_BUFFER, len(self._keys) >> 2):
            self._merge()

    def get(self, key: int) -> int | None:
        v = self._buf.get(key)
        if v is not None:
            return v
        keys = self._keys
        if not len(keys):
            return None
        np = _np()
        k = np.uint64(key)
        i = int(np.searchsorted(keys, k))
        if i < len(keys) and keys[i] == k:
            return int(self._vals[i])
        return None

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None

    def _merge(self) -> None:
        if not self._buf:
            return
        np = _np()
        new_k = np.fromiter(self._buf.keys(), np.uint64, len(self._buf))
        new_v = np.fromiter(self._buf.values(), np.int64, len(self._buf))
        self._buf = {}
        keys = np.concatenate([np.asarray(self._keys, np.uint64), new_k])
        vals = np.concatenate([np.asarray(self._vals, np.int64), new_v])
        order = np.argsort(keys, kind="stable")  # equal keys: the newer (later) one last
        keys, vals = keys[order], vals[order]
        last = np.r_[keys[1:] != keys[:-1], True]
        self._keys, self._vals = keys[last], vals[last]


def key64(key: str) -> int:
    """A request key (hex) as the uint64 of its first 16 digits; callers that read a record
    back by it compare the full key, so a collision costs a lookup, never a wrong answer."""
    return int(key[:16], 16)

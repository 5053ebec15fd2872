"""Deterministic fingerprints: the cache keys and run ids.

A fingerprint hashes *declared configuration*, never source code or object identity, so it is
stable across processes, machines and refactors (tests pin known values). When a step's output
changes meaning, bump its version instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import xxhash
from pydantic import BaseModel


def _canonical(obj: Any) -> Any:
    # Fast paths for the exact built-in types (request keys hash one payload per request).
    # Dict key order is irrelevant: canonical_json sorts keys on output, and with str keys
    # only no two keys can collide, so skipping the sort gives the same bytes.
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        return obj
    if t is float:
        return int(obj) if obj.is_integer() else obj
    if t is list or t is tuple:
        return [_canonical(v) for v in obj]
    if t is dict and all(type(k) is str for k in obj):
        return {k: _canonical(v) for k, v in obj.items()}
    if isinstance(obj, BaseModel):
        return _canonical(obj.model_dump(mode="json", exclude_none=True))
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        # 1.0 and 1 mean the same sampling setting; hash them the same.
        return int(obj)
    return obj


def canonical(obj: Any) -> Any:
    """``obj`` normalised (models dumped, str keys, integral floats as ints): what gets hashed.

    Canonical parts can be computed once and combined: ``hash_canonical({**a, "b": b})`` equals
    ``stable_hash({**a_raw, "b": b_raw})`` when ``a = canonical(a_raw)``, ``b = canonical(b_raw)``.
    """
    return _canonical(obj)


def canonical_json(obj: Any) -> bytes:
    """JSON with sorted keys and normalised numbers: equal configs give equal bytes."""
    return orjson.dumps(_canonical(obj), option=orjson.OPT_SORT_KEYS)


def hash_canonical(obj: Any, length: int = 16) -> str:
    """:func:`stable_hash` of an object already in :func:`canonical` form."""
    return xxhash.xxh3_128_hexdigest(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))[:length]


def stable_hash(obj: Any, length: int = 16) -> str:
    """A hex digest of ``obj``'s canonical JSON (xxh3-128, truncated to ``length`` chars)."""
    return hash_canonical(_canonical(obj), length)


def fingerprint(parent: str | None, step: str, version: str, args: Mapping[str, Any]) -> str:
    """hash(parent fingerprint, step@version, non-default args): the id of a derived artifact.

    ``args`` should hold only arguments that differ from their defaults, so adding a new
    argument with a default does not change the fingerprint of existing runs.
    """
    return stable_hash({"parent": parent, "step": f"{step}@{version}", "args": dict(args)})


def file_fingerprint(path: str, chunk: int = 1 << 20) -> str:
    """Content hash of a file: renaming or touching it keeps the id, editing it changes it."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]

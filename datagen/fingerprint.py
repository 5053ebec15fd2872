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


def canonical_json(obj: Any) -> bytes:
    """JSON with sorted keys and normalised numbers: equal configs give equal bytes."""
    return orjson.dumps(_canonical(obj), option=orjson.OPT_SORT_KEYS)


def stable_hash(obj: Any, length: int = 16) -> str:
    """A hex digest of ``obj``'s canonical JSON (xxh3-128, truncated to ``length`` chars)."""
    return xxhash.xxh3_128_hexdigest(canonical_json(obj))[:length]


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

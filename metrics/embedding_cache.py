"""The per-row embedding cache (the ``embeddings`` table, migration 9).

Embedding is the expensive part of RDS+ selection (one forward pass of the student's base model
per row; SmolLM2 on 2 CPU cores manages tens of rows a second), and the same rows are embedded
again whenever a selection is repeated with another k or target, or a pool grows. So every
vector is kept under a key that fingerprints (model, max length, text): a row is embedded once
per model, whichever run or data set it appears in. Vectors are float32 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from metrics.store import Store

_BATCH = 50_000  # keys per lookup query


def read_embeddings(store: Store, keys: Sequence[str]) -> dict[str, Any]:
    """The cached vectors (float32 numpy arrays) among ``keys``, by key."""
    import numpy as np
    import pyarrow as pa

    found: dict[str, Any] = {}
    if not keys or not store.path.exists():
        return found
    with store.connect() as con:
        for start in range(0, len(keys), _BATCH):
            wanted = pa.table({"key": list(keys[start:start + _BATCH])})
            con.register("wanted", wanted)
            rows = con.execute("SELECT e.key, e.vector FROM embeddings e "
                               "JOIN wanted w ON e.key = w.key").fetchall()
            con.unregister("wanted")
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
    return found


def write_embeddings(store: Store, keys: Sequence[str], vectors: Any) -> None:
    """Store one vector per key (an (n, d) array); an existing key is left as it is."""
    import numpy as np
    import pyarrow as pa

    if not len(keys):
        return
    vectors = np.asarray(vectors, dtype=np.float32)
    now = datetime.now(UTC).replace(tzinfo=None)
    table = pa.table({
        "key": list(keys),
        "dim": pa.array([vectors.shape[1]] * len(keys), pa.int32()),
        "vector": pa.array([v.tobytes() for v in vectors], pa.binary()),
        "created_at": pa.array([now] * len(keys), pa.timestamp("us")),
    })
    with store.connect(read_only=False) as con:
        con.register("incoming", table)
        con.execute("INSERT INTO embeddings SELECT DISTINCT ON (key) key, dim, vector, "
                    "created_at FROM incoming ON CONFLICT (key) DO NOTHING")
        con.unregister("incoming")

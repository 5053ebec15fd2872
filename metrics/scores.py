"""Evaluation scores in the workspace database (tables ``scores`` and ``item_scores``,
migration 5).

One evaluation id is one (model, task, task arguments, data, limit[, judge]) measurement. Its
item rows and task metrics are written in one transaction, metrics included, so a stored
``scores`` row means the evaluation finished: a later call with the same id reads it back and
does no work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from metrics.store import Store


def read_scores(store: Store, eval_id: str) -> list[dict[str, Any]]:
    """The stored metrics of one evaluation (empty when it has not finished)."""
    if not store.path.exists():
        return []
    with store.connect() as con:
        cur = con.execute(
            "SELECT eval_id, model, student_id, task, metric, value, n, created_at FROM scores "
            "WHERE eval_id = ? ORDER BY metric", [eval_id])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def read_item_scores(store: Store, eval_id: str) -> list[dict[str, Any]]:
    """Per-item rows of one evaluation, in item order, ``detail`` parsed."""
    with store.connect() as con:
        cur = con.execute(
            "SELECT item_id, idx, score, extracted, detail FROM item_scores WHERE eval_id = ? "
            "ORDER BY idx", [eval_id])
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    for r in rows:
        r["detail"] = orjson.loads(r["detail"]) if r["detail"] else {}
    return rows


def write_evaluation(
    store: Store, *, eval_id: str, model: str, student_id: str | None, task: str,
    metrics: Mapping[str, float], n: int, items: Sequence[Mapping[str, Any]],
) -> None:
    """Replace one evaluation's item rows and metrics, atomically.

    ``items`` are mappings with ``item_id``, ``idx``, ``score``, ``extracted`` and ``detail``.
    """
    import pyarrow as pa

    now = datetime.now(UTC).replace(tzinfo=None)
    item_table = pa.table({
        "eval_id": pa.array([eval_id] * len(items), pa.string()),
        "task": pa.array([task] * len(items), pa.string()),
        "item_id": pa.array([str(x["item_id"]) for x in items], pa.string()),
        "idx": pa.array([int(x["idx"]) for x in items], pa.int32()),
        "score": pa.array([x["score"] for x in items], pa.float64()),
        "extracted": pa.array([x["extracted"] for x in items], pa.string()),
        "detail": pa.array([orjson.dumps(x["detail"]).decode() for x in items], pa.string()),
    })
    score_table = pa.table({
        "eval_id": pa.array([eval_id] * len(metrics), pa.string()),
        "model": pa.array([model] * len(metrics), pa.string()),
        "student_id": pa.array([student_id] * len(metrics), pa.string()),
        "task": pa.array([task] * len(metrics), pa.string()),
        "metric": pa.array(list(metrics), pa.string()),
        "value": pa.array([float(v) for v in metrics.values()], pa.float64()),
        "n": pa.array([n] * len(metrics), pa.int32()),
        "created_at": pa.array([now] * len(metrics), pa.timestamp("us")),
    })
    with store.connect() as con:
        con.register("incoming_items", item_table)
        con.register("incoming_scores", score_table)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM item_scores WHERE eval_id = ?", [eval_id])
            con.execute("DELETE FROM scores WHERE eval_id = ?", [eval_id])
            con.execute("INSERT INTO item_scores SELECT eval_id, task, item_id, idx, score, "
                        "extracted, detail FROM incoming_items")
            con.execute("INSERT INTO scores SELECT eval_id, model, student_id, task, metric, "
                        "value, n, created_at FROM incoming_scores")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

"""The ``students`` table (migration 4): functions over a :class:`~metrics.store.Store`.

Kept apart from ``store.py`` so that module stays about runs. The manifests under
``students/<id>/student.json`` are the truth; this table is the queryable copy the driver keeps
in sync (Ray tasks never open the database: they train in parallel processes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from datagen_core.errors import ConfigError, DatagenError, NotFoundError
from metrics.store import Store, _dicts

_COLUMNS = ("student_id", "base_model", "recipe", "data_run_id", "status", "created_at",
            "finished_at", "train_seconds", "final_loss", "path", "error")


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def upsert_student(
    store: Store, *, student_id: str, base_model: str, recipe: dict[str, Any],
    data_run_id: str | None, status: str, created_at: float, finished_at: float | None = None,
    train_seconds: float | None = None, final_loss: float | None = None,
    path: str | None = None, error: str | None = None,
) -> None:
    """Insert or replace one student's row (``created_at`` of an existing row is kept)."""
    row = (student_id, base_model, orjson.dumps(recipe).decode(), data_run_id, status,
           _ts(created_at), _ts(finished_at), train_seconds, final_loss, path, error)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS
                        if c not in ("student_id", "created_at"))
    with store.connect() as con:
        con.execute(
            f"INSERT INTO students ({', '.join(_COLUMNS)}) VALUES "
            f"({', '.join('?' for _ in _COLUMNS)}) "
            f"ON CONFLICT (student_id) DO UPDATE SET {updates}", list(row))


def list_students(store: Store) -> list[dict[str, Any]]:
    """All students, newest first, with the recipe's name and kind pulled out of its JSON."""
    if not store.path.exists():
        return []
    with store.connect() as con:
        cur = con.execute(
            "SELECT student_id, status, base_model, recipe->>'name' AS recipe_name, "
            "recipe->>'kind' AS kind, data_run_id, created_at, finished_at, train_seconds, "
            "final_loss, path, error FROM students ORDER BY created_at DESC")
        return _dicts(cur)


def get_student(store: Store, student_id: str) -> dict[str, Any] | None:
    if not store.path.exists():
        return None
    with store.connect() as con:
        rows = _dicts(con.execute("SELECT * FROM students WHERE student_id = ?", [student_id]))
    if not rows:
        return None
    row = rows[0]
    row["recipe"] = orjson.loads(row["recipe"]) if row["recipe"] else {}
    return row


def resolve_student(store: Store, prefix: str) -> str:
    """A full student id from a unique prefix, like git (an empty prefix names none)."""
    if not prefix.strip():
        raise ConfigError("empty student id: give a student id or a unique prefix (see `datagen "
                          "students`)")
    ids: list[str] = []
    if store.path.exists():
        with store.connect() as con:
            ids = [r[0] for r in con.execute(
                "SELECT student_id FROM students WHERE starts_with(student_id, ?)", [prefix]
            ).fetchall()]
    if not ids:
        raise NotFoundError(f"no student {prefix!r} in {store.path.parent}: see `datagen "
                            "students`")
    if len(ids) > 1:
        raise DatagenError(f"student id {prefix!r} is ambiguous ({len(ids)} students): give "
                           "more of it")
    return str(ids[0])

"""Students in a workspace: train them on runs, list them, show one (the top layer: it records
every student in the workspace database; :mod:`students` trains and returns records).

::

    from datagen.training import train
    rec = train("3f2a9c", recipe="tiny-llama")           # a run id (or prefix), or a data file
    rec.student_id, rec.path, rec.final_loss

Training goes through Ray (a private local Ray by default, a cluster's Jobs API with
``ray_address``) unless ``use_ray=False``. This module is the driver: it resolves the data, skips
students already finished, records every student in the workspace database (running, then
finished or failed) and raises the first failure as one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datagen_core.errors import DatagenError, NotFoundError
from datagen_core.workspace import Workspace
from students import train as training_step
from students.recipes import Recipe, load_recipe
from students.records import DataRef, StudentRecord
from students.train import read_manifest, resolve_data, student_id

RecipeLike = str | Path | Recipe | dict[str, Any]
DataLike = str | Path | DataRef


def train(
    data: DataLike,
    recipe: RecipeLike = "tiny-llama",
    workspace: str | Path | None = None,
    ray_address: str | None = None,
    *,
    use_ray: bool = True,
    timeout_s: float | None = None,
    **overrides: Any,
) -> StudentRecord:
    """Train one student of ``recipe`` (a preset, a YAML file or a Recipe; ``overrides`` such as
    ``epochs=2`` or ``max_steps=10`` on top) on ``data`` (a run id or prefix, or a file)."""
    return train_many([(data, load_recipe(recipe, **overrides))], workspace, ray_address,
                      use_ray=use_ray, timeout_s=timeout_s)[0]


def train_many(
    items: Sequence[tuple[DataLike, RecipeLike]],
    workspace: str | Path | None = None,
    ray_address: str | None = None,
    *,
    use_ray: bool = True,
    timeout_s: float | None = None,
) -> list[StudentRecord]:
    """Train several students at once (side by side where Ray's resources allow); one record
    per item, in order. Finished students are returned untouched; a request repeated in
    ``items`` trains once."""
    from metrics.store import Store

    ws = Workspace.resolve(workspace).ensure()
    store = Store(ws.db_path)
    recipes = [r if isinstance(r, Recipe) else load_recipe(r) for _, r in items]
    refs = [resolve_data(d, r.kind, ws) for (d, _), r in zip(items, recipes)]
    ids = [student_id(r, d) for r, d in zip(recipes, refs)]
    found: dict[str, StudentRecord | DatagenError] = {}
    todo: dict[str, tuple[Recipe, DataRef]] = {}
    for sid, recipe, ref in zip(ids, recipes, refs):
        done = read_manifest(ws, sid)
        if done is not None and done.status == "finished":
            found[sid] = done
            _record(store, done)
        elif sid not in todo:
            todo[sid] = (recipe, ref)
            _record(store, StudentRecord(student_id=sid, status="running", recipe=recipe,
                                         data=ref, created_at=_now()))
    outcomes = _run(list(todo.values()), ws, ray_address, use_ray, timeout_s)
    for (sid, (recipe, ref)), outcome in zip(todo.items(), outcomes):
        found[sid] = outcome
        if isinstance(outcome, StudentRecord):
            _record(store, outcome)
        else:
            _record(store, StudentRecord(student_id=sid, status="failed", recipe=recipe,
                                         data=ref, created_at=_now(), finished_at=_now(),
                                         error=str(outcome)))
    errors = [o for o in found.values() if isinstance(o, DatagenError)]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DatagenError(f"{errors[0]} (and {len(errors) - 1} more failed)") from errors[0]
    return [found[sid] for sid in ids]  # type: ignore[misc]


def _run(jobs: list[tuple[Recipe, DataRef]], ws: Workspace, ray_address: str | None,
         use_ray: bool, timeout_s: float | None) -> list[StudentRecord | DatagenError]:
    if use_ray:
        from students.ray_jobs import train_students

        return train_students(jobs, ws, ray_address=ray_address, timeout_s=timeout_s)
    out: list[StudentRecord | DatagenError] = []
    for recipe, ref in jobs:
        try:
            out.append(training_step.train_student(recipe, ref, ws))
        except DatagenError as e:
            out.append(e)
    return out


def _record(store: Any, rec: StudentRecord) -> None:
    from metrics.students_store import upsert_student

    upsert_student(store, **rec.store_row())


def _now() -> float:
    import time

    return time.time()


def list_students(workspace: str | Path | None = None) -> list[dict[str, Any]]:
    """Students in the workspace, newest first (id, status, base model, recipe, loss, path)."""
    from metrics.store import Store
    from metrics.students_store import list_students as rows

    return rows(Store(Workspace.resolve(workspace).db_path))


def show_student(student: str, workspace: str | Path | None = None) -> StudentRecord:
    """One student by id or unique prefix: its manifest when it finished (or is training), else
    the database row of a failed attempt."""
    from metrics.store import Store
    from metrics.students_store import get_student, resolve_student

    ws = Workspace.resolve(workspace)
    store = Store.open_existing(ws.root)
    sid = resolve_student(store, student)
    rec = read_manifest(ws, sid)
    row = get_student(store, sid)
    if rec is not None:
        return rec
    if row is None:  # resolve_student found it, so only a concurrent delete gets here
        raise NotFoundError(f"no student {student!r}")
    return StudentRecord(
        student_id=sid, status=row["status"], recipe=Recipe.model_validate(row["recipe"]),
        data=DataRef(path="", fingerprint="", run_id=row["data_run_id"],
                     kind=row["recipe"].get("kind", "sft")),
        created_at=_epoch(row["created_at"]) or 0.0, finished_at=_epoch(row["finished_at"]),
        train_seconds=row["train_seconds"], final_loss=row["final_loss"], path=row["path"],
        error=row["error"])


def _epoch(ts: Any) -> float | None:
    from datetime import UTC

    return None if ts is None else float(ts.replace(tzinfo=UTC).timestamp())

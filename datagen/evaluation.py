"""Evaluate a model or a trained student on tasks, with the workspace as store and cache.

::

    from datagen.api import evaluate      # or: await datagen.evaluation.aevaluate(...)
    result = evaluate("hf:smollm2", ["gsm8k", "ifeval"], limit=50)
    result.scores            # {"gsm8k": 0.12, "ifeval": 0.31}

:mod:`students.evaluate` generates and scores and returns records; this module is where they are
stored. Per-item results and task metrics go to the ``item_scores`` and ``scores`` tables in one
transaction; once an id has stored scores, evaluating it again generates nothing, scores nothing
and writes nothing. An evaluation whose generations failed for a retryable reason (rate limit,
network) is returned but not stored, so the next call retries exactly those requests. The
workspace database is the engines' cross-run cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datagen_core.errors import ConfigError
from datagen_core.records import GeneratorSpec
from datagen_core.workspace import Workspace
from generators.engine import Engine
from metrics.scores import read_item_scores, read_scores, write_evaluation
from metrics.store import Store
from students.evaluate import (
    EVALS_DIR,
    EvalResult,
    TaskResult,
    plan_task,
    resolve_model,
    run_task,
)
from students.tasks.base import ItemScore, Task, get_task

__all__ = ["EvalResult", "TaskResult", "aevaluate", "resolve_model"]


async def aevaluate(
    model_spec: str | GeneratorSpec,
    tasks: Sequence[str | Task],
    workspace: str | Path | None = None,
    limit: int | None = None,
    judge: str | GeneratorSpec | None = None,
    *,
    student_id: str | None = None,
    progress: bool | None = None,
    backend: Any = None,
    backends: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate ``model_spec`` (a spec or a student id) on ``tasks`` (names or Task objects).

    ``limit`` keeps the first N items of each task (a fixed held-out slice). ``judge`` is the
    judge LM for judge tasks. ``backend`` injects a ready backend for the model and
    ``backends`` maps spec labels to ready backends for the judge (tests, custom clients).
    """
    spec, found_id = resolve_model(model_spec, workspace)
    student_id = student_id or found_id
    task_objs = [t if isinstance(t, Task) else get_task(t) for t in tasks]
    if not task_objs:
        raise ConfigError("no task given: name at least one, e.g. gsm8k")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    judge_spec = (judge if isinstance(judge, GeneratorSpec)
                  else GeneratorSpec.parse(judge) if judge else None)
    for t in task_objs:
        if t.needs_judge and judge_spec is None:
            raise ConfigError(f"task {t.name} needs a judge LM: pass --judge SPEC "
                              "(e.g. openai:gpt-4o-mini)")
    ws = Workspace.resolve(workspace).ensure()
    store = Store(ws.db_path)
    engine = Engine(spec, backend=backend, cache=store, progress=progress)
    judge_engine = None
    if judge_spec is not None and any(t.needs_judge for t in task_objs):
        judge_engine = Engine(judge_spec, backend=(backends or {}).get(judge_spec.label),
                              cache=store, progress=progress)
    results = []
    try:
        for task in task_objs:
            plan = plan_task(task, spec, limit, judge_engine.spec if judge_engine else None)
            stored = _stored(store, plan.eval_id, task)
            if stored is not None:
                results.append(stored)
                continue
            ran = await run_task(plan, spec, student_id, ws.root / EVALS_DIR / plan.eval_id,
                                 engine, judge_engine)
            store.ingest_responses(f"eval-{plan.eval_id}", ran.responses)  # the cross-run cache
            if ran.judged:
                store.ingest_responses(f"eval-{plan.eval_id}-judge", ran.judged)
            r = ran.result
            if r.complete:
                write_evaluation(
                    store, eval_id=r.eval_id, model=spec.label, student_id=student_id,
                    task=task.name, metrics=r.metrics, n=r.n,
                    items=[{"item_id": s.item_id, "idx": s.index, "score": s.score,
                            "extracted": s.extracted, "detail": s.detail} for s in r.items])
            results.append(r)
    finally:
        await engine.aclose()
        if judge_engine is not None:
            await judge_engine.aclose()
    return EvalResult(model=spec.label, student_id=student_id, tasks=results)


def _stored(store: Store, eval_id: str, task: Task) -> TaskResult | None:
    """A finished evaluation read back from the store, or None."""
    stored = read_scores(store, eval_id)
    if not stored:
        return None
    rows = read_item_scores(store, eval_id)
    return TaskResult(
        task=task.name, eval_id=eval_id, primary_metric=task.primary_metric,
        metrics={r["metric"]: r["value"] for r in stored}, n=int(stored[0]["n"]), cached=True,
        items=[ItemScore(r["item_id"], r["idx"], r["score"], r["extracted"], r["detail"])
               for r in rows])

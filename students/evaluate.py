"""Evaluate a model or a trained student on tasks: generate through the engine, score, store.

::

    from students.evaluate import evaluate
    result = evaluate("hf:smollm2", ["gsm8k", "ifeval"], limit=50)
    result.scores            # {"gsm8k": 0.12, "ifeval": 0.31}

A student is evaluated as a generator backend (``hf:<folder>`` on CPU, ``vllm:<folder>`` where a
GPU and vLLM are present), through the same :class:`~generators.engine.Engine` that generates
data, with each task's decoding settings. So evaluation answers are cached and resumable like
any run: they are logged to ``<workspace>/evals/<eval_id>/responses.jsonl`` and the workspace
database is the cross-run cache; a killed evaluation resumes from its log.

One evaluation id is a fingerprint of (data, task@version, the task's non-default semantic
arguments, the model's identity and decoding settings, limit, and the judge for judge tasks).
Per-item results and task metrics go to the ``item_scores`` and ``scores`` tables in one
transaction; once an id has stored scores, evaluating it again generates nothing, scores nothing
and writes nothing. An evaluation whose generations failed for a retryable reason (rate limit,
network) is returned but not stored, so the next call retries exactly those requests.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from datagen_core.errors import ConfigError, NotFoundError
from datagen_core.fingerprint import fingerprint
from datagen_core.records import GeneratorSpec, GenRequest, GenResponse
from datagen_core.workspace import Workspace
from generators.engine import Engine, EngineStats
from students.tasks.base import ItemScore, ScoreContext, Task, get_task

log = logging.getLogger("datagen.eval")

EVALS_DIR = "evals"
STUDENT_MODEL_DIR = "model"
_RETRYABLE = ("rate_limit", "transient")


@dataclass
class TaskResult:
    """One task's outcome for one model; ``cached`` when it was read back from the store."""

    task: str
    eval_id: str
    primary_metric: str
    metrics: dict[str, float]
    n: int
    cached: bool = False
    complete: bool = True
    items: list[ItemScore] = field(default_factory=list)
    stats: EngineStats | None = None

    @property
    def score(self) -> float:
        return self.metrics[self.primary_metric]


@dataclass
class EvalResult:
    model: str
    student_id: str | None
    tasks: list[TaskResult]

    @property
    def scores(self) -> dict[str, float]:
        """Each task's primary metric."""
        return {t.task: t.score for t in self.tasks}

    def __getitem__(self, task: str) -> TaskResult:
        for t in self.tasks:
            if t.task == task:
                return t
        raise KeyError(task)


def _gpu_engine_available() -> bool:
    """vLLM installed and a CUDA device visible (torch is imported only when vLLM is there)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def student_spec(folder: Path) -> GeneratorSpec:
    """The generator spec that serves a trained student's model folder."""
    provider = "vllm" if _gpu_engine_available() else "hf"
    return GeneratorSpec(provider=provider, model=str(folder))


def resolve_model(model: str | GeneratorSpec,
                  workspace: str | Path | None = None) -> tuple[GeneratorSpec, str | None]:
    """A generator spec (``hf:PATH``, ``openai:MODEL``, ...) or a student id whose model is
    ``<workspace>/students/<id>/model`` -> (spec, student id or None)."""
    if isinstance(model, GeneratorSpec):
        return model, None
    text = model.strip()
    folder = Workspace.resolve(workspace).students_dir / text / STUDENT_MODEL_DIR
    if text and ":" not in text and "/" not in text and folder.is_dir():
        return student_spec(folder), text
    if ":" not in text:
        from generators.base import BACKENDS

        if text not in BACKENDS.names():
            raise NotFoundError(
                f"{text!r} is neither a student (no {folder}) nor a generator spec: give a "
                "student id, or provider:model such as hf:PATH")
    return GeneratorSpec.parse(text), None


def _identity(spec: GeneratorSpec) -> dict[str, Any]:
    """What identifies a model's outputs apart from decoding (which the task sets)."""
    return {k: v for k, v in spec.semantic().items() if k != "sampling"}


def evaluate(
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
    """Synchronous wrapper of :func:`aevaluate` (notebooks with a running loop await that)."""
    return asyncio.run(aevaluate(
        model_spec, tasks, workspace, limit, judge, student_id=student_id, progress=progress,
        backend=backend, backends=backends,
    ))


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
    from metrics.store import Store

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
            results.append(await _evaluate_task(
                task, spec, student_id, limit, ws, store, engine, judge_engine))
    finally:
        await engine.aclose()
        if judge_engine is not None:
            await judge_engine.aclose()
    return EvalResult(model=spec.label, student_id=student_id, tasks=results)


async def _evaluate_task(
    task: Task, spec: GeneratorSpec, student_id: str | None, limit: int | None, ws: Workspace,
    store: Any, engine: Engine, judge_engine: Engine | None,
) -> TaskResult:
    from metrics.scores import read_item_scores, read_scores, write_evaluation

    all_items, src = task.load()
    items = all_items[:limit] if limit is not None else all_items
    ident: dict[str, Any] = {
        "model": _identity(spec),
        "sampling": task.sampling.model_dump(mode="json", exclude_none=True),
        "args": task.id_args(),
        "limit": limit if limit is not None and limit < len(all_items) else None,
    }
    if task.needs_judge and judge_engine is not None:
        ident["judge"] = _identity(judge_engine.spec)
    eval_id = fingerprint(src.fingerprint, f"eval:{task.name}", task.version, ident)

    stored = read_scores(store, eval_id)
    if stored:
        rows = read_item_scores(store, eval_id)
        return TaskResult(
            task=task.name, eval_id=eval_id, primary_metric=task.primary_metric,
            metrics={r["metric"]: r["value"] for r in stored}, n=int(stored[0]["n"]),
            cached=True, items=[ItemScore(r["item_id"], r["idx"], r["score"], r["extracted"],
                                          r["detail"]) for r in rows])

    eval_dir = ws.root / EVALS_DIR / eval_id
    eval_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "eval_id": eval_id, "created_at": time.time(), "model": spec.label,
        "model_spec": spec.model_dump(mode="json", exclude={"api_key_env"}),
        "student_id": student_id, "task": task.name, "task_version": task.version,
        "task_args": task.args.model_dump(mode="json"), "limit": limit, "n": len(items),
        "source": src.model_dump(mode="json"),
        "judge": judge_engine.spec.label if task.needs_judge and judge_engine else None,
    }
    (eval_dir / "eval.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))

    engine.log_path = eval_dir / "responses.jsonl"  # one engine (one loaded model) for all tasks
    engine.description = f"eval {task.name} {spec.label}"
    responses = await engine.generate([task.request(item) for item in items])
    stats = engine.stats

    judged: list[GenResponse] = []

    async def judge_call(requests: list[GenRequest]) -> list[GenResponse]:
        assert judge_engine is not None
        judge_engine.log_path = eval_dir / "judge" / "responses.jsonl"
        judge_engine.description = f"judge {task.name} {judge_engine.spec.label}"
        replies = await judge_engine.generate(requests)
        judged.extend(replies)
        return replies

    ctx = ScoreContext(judge=judge_call if judge_engine is not None else None, eval_dir=eval_dir)
    scores = await task.score(items, responses, ctx)
    metrics = task.aggregate(scores)

    store.ingest_responses(f"eval-{eval_id}", responses)  # the cross-run cache
    if judged:
        store.ingest_responses(f"eval-{eval_id}-judge", judged)
    retry = [r for r in [*responses, *judged] if r.error is not None and r.error.kind in _RETRYABLE]
    if retry:
        log.warning("%s on %s: %d requests failed (e.g. %s); scores are not stored, run again to "
                    "retry them", task.name, spec.label, len(retry), retry[0].error.message
                    if retry[0].error else "")
    else:
        write_evaluation(
            store, eval_id=eval_id, model=spec.label, student_id=student_id, task=task.name,
            metrics=metrics, n=len(items),
            items=[{"item_id": s.item_id, "idx": s.index, "score": s.score,
                    "extracted": s.extracted, "detail": s.detail} for s in scores])
    return TaskResult(task=task.name, eval_id=eval_id, primary_metric=task.primary_metric,
                      metrics=metrics, n=len(items), complete=not retry, items=scores,
                      stats=stats)

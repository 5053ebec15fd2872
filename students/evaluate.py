"""Evaluate a model or a trained student on a task: generate through the engine, then score.

This module returns records and stores nothing: :mod:`datagen.evaluation` (the top layer) looks
up stored scores, hands in engines whose cache is the workspace database, and writes what comes
back. ::

    from datagen.evaluation import evaluate
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

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from datagen_core.errors import NotFoundError
from datagen_core.fingerprint import fingerprint
from datagen_core.records import GeneratorSpec, GenRequest, GenResponse
from datagen_core.workspace import Workspace
from generators.engine import Engine
from generators.progress import EngineStats
from students.tasks.base import ItemScore, ScoreContext, Task

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
        from generators.backends.base import BACKENDS

        if text not in BACKENDS.names():
            raise NotFoundError(
                f"{text!r} is neither a student (no {folder}) nor a generator spec: give a "
                "student id, or provider:model such as hf:PATH")
    return GeneratorSpec.parse(text), None


def _identity(spec: GeneratorSpec) -> dict[str, Any]:
    """What identifies a model's outputs apart from decoding (which the task sets)."""
    return {k: v for k, v in spec.semantic().items() if k != "sampling"}


@dataclass
class TaskPlan:
    """One task for one model before anything runs: its items and evaluation id."""

    task: Task
    items: list[Any]
    eval_id: str
    source: Any
    limit: int | None


def plan_task(task: Task, spec: GeneratorSpec, limit: int | None,
              judge_spec: GeneratorSpec | None) -> TaskPlan:
    """The items a task scores (the first ``limit``) and the evaluation's id."""
    all_items, src = task.load()
    items = all_items[:limit] if limit is not None else all_items
    ident: dict[str, Any] = {
        "model": _identity(spec),
        "sampling": task.sampling.model_dump(mode="json", exclude_none=True),
        "args": task.id_args(),
        "limit": limit if limit is not None and limit < len(all_items) else None,
    }
    if task.needs_judge and judge_spec is not None:
        ident["judge"] = _identity(judge_spec)
    eval_id = fingerprint(src.fingerprint, f"eval:{task.name}", task.version, ident)
    return TaskPlan(task=task, items=items, eval_id=eval_id, source=src, limit=limit)


@dataclass
class TaskRun:
    """What evaluating one task produced, for the caller to store: the result, and the model's
    and the judge's responses."""

    result: TaskResult
    responses: list[GenResponse]
    judged: list[GenResponse]


async def run_task(plan: TaskPlan, spec: GeneratorSpec, student_id: str | None, eval_dir: Path,
                   engine: Engine, judge_engine: Engine | None) -> TaskRun:
    """Generate the task's answers (logged to ``eval_dir``, so a killed evaluation resumes),
    score them and aggregate. ``result.complete`` is False when requests failed for a
    retryable reason: such a result is not to be stored."""
    task, items, eval_id = plan.task, plan.items, plan.eval_id
    eval_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "eval_id": eval_id, "created_at": time.time(), "model": spec.label,
        "model_spec": spec.model_dump(mode="json", exclude={"api_key_env"}),
        "student_id": student_id, "task": task.name, "task_version": task.version,
        "task_args": task.args.model_dump(mode="json"), "limit": plan.limit, "n": len(items),
        "source": plan.source.model_dump(mode="json"),
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
    retry = [r for r in [*responses, *judged] if r.error is not None and r.error.kind in _RETRYABLE]
    if retry:
        log.warning("%s on %s: %d requests failed (e.g. %s); scores are not stored, run again to "
                    "retry them", task.name, spec.label, len(retry), retry[0].error.message
                    if retry[0].error else "")
    result = TaskResult(task=task.name, eval_id=eval_id, primary_metric=task.primary_metric,
                        metrics=metrics, n=len(items), complete=not retry, items=scores,
                        stats=stats)
    return TaskRun(result=result, responses=responses, judged=judged)

"""The Python API: everything the ``datagen`` command does, as functions (the CLI is a thin layer
over them), and the one place where the async core gets a synchronous edge. Runs, students and
evaluations come from the ``datagen`` modules; metrics, PGR, leaderboards and reports from
:mod:`metrics.facade`.

::

    from datagen.api import generate, export_run, train, evaluate
    result = generate("hf:smollm2", "prompts.jsonl", n=8)     # or: await agenerate(...)
    export_run(result.run_id, "train.jsonl")                 # push_run(id, "org/name"): Hub
    student = train(result.run_id, recipe="tiny-llama")
    evaluate(student.student_id, ["arithmetic"], limit=50).scores

``select(RUNS, k=K, target=...)`` chooses K rows of runs for a target set (RDS+ or random) as
a new run. ``serve()`` opens the workspace in the browser (the ``datagen serve`` web app) and
``pair_labels(run_id)`` reads the labels people gave there.

Preference pairs: ``pair_counts`` and ``export_pairs`` (:mod:`datagen.pairs`; people's labels
win over the judge's where given); ``route_pairs(run_id, budget=0.2, out=...)`` writes the pairs
the judge is least reliable on for annotation, ``import_labels(run_id, file)`` reads the labels
back and ``label_agreement(run_id)`` measures judge-human agreement per feature bucket
(:mod:`datagen.routing`, after Hybrid Preferences).

The synchronous functions here run their ``a``-prefixed coroutine in a fresh event loop; inside
a running loop (a notebook, an async app) await the coroutine instead.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from datagen.ray_data import RayData
from datagen.runs import (
    DEFAULT_SOURCE,
    RunPlan,
    RunResult,
    agenerate,
    list_runs,
    load_responses,
    plan_run,
    show_run,
)
from datagen_core.errors import ConfigError
from datagen_core.records import GeneratorSpec
from generators.specs import load_spec

# What ``generate`` does not need is imported on first use (PEP 562): a `datagen generate`
# starts without loading bench, evaluation, selection, training or the metrics facade, and
# without pyarrow until its first rows are written.
_LAZY = {
    "datagen.bench": ("BenchResult", "Reporter", "abench"),
    "datagen.bench_plan": ("BenchPlan", "aplan_bench"),
    "datagen.evaluation": ("EvalResult", "TaskResult", "aevaluate", "resolve_model"),
    "datagen.pairs": ("export_pairs", "pair_counts"),
    "datagen.routing": ("import_labels", "label_agreement", "route_pairs"),
    "datagen.run_files": ("EXPORT_FORMATS", "export_run", "pair_rows", "push_run"),
    "datagen.select": ("SelectConfig", "SelectResult", "aselect"),
    "datagen.training": ("list_students", "show_student", "train", "train_many"),
    "metrics.facade": ("analyze", "compare", "compute_metrics", "compute_pgr",
                       "intrinsic_values", "issue_table", "leaderboard",
                       "pair_margin_histogram", "write_report"),
}
_LAZY_FROM = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY_FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from datagen.bench import BenchResult, Reporter, abench
    from datagen.bench_plan import BenchPlan, aplan_bench
    from datagen.evaluation import EvalResult, TaskResult, aevaluate, resolve_model
    from datagen.pairs import export_pairs, pair_counts
    from datagen.routing import import_labels, label_agreement, route_pairs
    from datagen.run_files import EXPORT_FORMATS, export_run, pair_rows, push_run
    from datagen.select import SelectConfig, SelectResult, aselect
    from datagen.suite import Suite
    from datagen.training import list_students, show_student, train, train_many
    from generators.curation import CurationConfig
    from metrics.facade import (
        analyze,
        compare,
        compute_metrics,
        compute_pgr,
        intrinsic_values,
        issue_table,
        leaderboard,
        pair_margin_histogram,
        write_report,
    )
    from students.tasks.base import Task

__all__ = [
    "DEFAULT_SOURCE",
    "EXPORT_FORMATS",
    "BenchPlan",
    "BenchResult",
    "EvalResult",
    "RayData",
    "RunPlan",
    "RunResult",
    "SelectConfig",
    "SelectResult",
    "TaskResult",
    "abench",
    "aevaluate",
    "agenerate",
    "analyze",
    "aplan_bench",
    "aselect",
    "bench",
    "compare",
    "compute_metrics",
    "compute_pgr",
    "create_app",
    "evaluate",
    "export_pairs",
    "export_run",
    "generate",
    "import_labels",
    "intrinsic_values",
    "issue_table",
    "label_agreement",
    "leaderboard",
    "list_runs",
    "list_students",
    "load_responses",
    "load_spec",
    "pair_counts",
    "pair_labels",
    "pair_margin_histogram",
    "pair_rows",
    "plan_bench",
    "plan_run",
    "push_run",
    "resolve_model",
    "route_pairs",
    "select",
    "serve",
    "show_run",
    "show_student",
    "train",
    "train_many",
    "write_report",
]


def generate(
    generator: str | GeneratorSpec,
    source: str | None = None,
    *,
    n: int | None = None,
    method: str = "prompt",
    method_args: dict[str, Any] | None = None,
    domain: str | None = None,
    workspace: str | Path | None = None,
    progress: bool | None = None,
    backend: Any = None,
    backends: dict[str, Any] | None = None,
    curation: CurationConfig | dict[str, Any] | None = None,
    max_failure_rate: float | None = None,
    ray: RayData | dict[str, Any] | str | None = None,
) -> RunResult:
    """:func:`datagen.runs.agenerate`, synchronously. ``ray="local"`` (or ``"auto"``,
    ``"ray://HOST:10001"``, or ``{"address": ..., "replicas": 4}``) answers the requests
    through a Ray Data pipeline: the same run, on many CPUs or GPUs."""
    return asyncio.run(agenerate(
        generator, source, n=n, method=method, method_args=method_args, domain=domain,
        workspace=workspace, progress=progress, backend=backend, backends=backends,
        curation=curation, max_failure_rate=max_failure_rate, ray=ray,
    ))


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
    """:func:`datagen.evaluation.aevaluate`, synchronously."""
    from datagen.evaluation import aevaluate

    return asyncio.run(aevaluate(
        model_spec, tasks, workspace, limit, judge, student_id=student_id, progress=progress,
        backend=backend, backends=backends,
    ))


def bench(suite: Suite, *, workspace: str | Path | None = None, ray_address: str | None = None,
          backends: dict[str, Any] | None = None, progress: bool | None = None,
          reporter: Reporter | None = None) -> BenchResult:
    """:func:`datagen.bench.abench`, synchronously."""
    from datagen.bench import abench

    return asyncio.run(abench(suite, workspace=workspace, ray_address=ray_address,
                              backends=backends, progress=progress, reporter=reporter))


def serve(workspace: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 8765,
          expose: bool = False, annotator: str = "local",
          announce: Callable[[str], Any] | None = None) -> None:
    """Serve the workspace's web app (leaderboard, runs, comparison, pairs, labelling) until
    interrupted; ``announce(url)`` is called once it listens (``port=0``: any free port). An
    address other than the loopback needs ``expose=True``: the app has no login. Needs the
    ``serve`` extra (``pip install 'datagen[serve]'``)."""
    from datagen_core.records import validation_message

    serving = _serving()
    try:
        config = serving.ServeConfig(workspace=workspace, host=host, port=port, expose=expose,
                                     annotator=annotator)
    except ValidationError as e:
        raise ConfigError(f"serve: {validation_message(e)}") from None
    serving.serve(config, announce)


def create_app(workspace: str | Path | None = None, *, annotator: str = "local") -> Any:
    """The same web app as an ASGI application, for any ASGI server or test client."""
    return _serving().create_app(workspace, annotator=annotator)


def _serving() -> Any:
    try:
        import datagen.serve as serving
    except ImportError as e:
        from datagen_core.errors import MissingDependencyError

        raise MissingDependencyError("datagen serve", e.name or "starlette", extra="serve"
                                     ) from None
    return serving


def pair_labels(run_id: str, annotator: str | None = None,
                workspace: str | Path | None = None) -> list[dict[str, Any]]:
    """People's labels of a run's pairs (from ``datagen serve``'s labelling page), in pair
    order: ``label`` is the side preferred, ``chosen``, ``rejected`` or ``tie``."""
    from metrics.labels import read_labels
    from metrics.store import Store

    store = Store.open_existing(workspace)
    return read_labels(store, store.resolve_run(run_id), annotator)


def select(sources: str | Sequence[str], *, k: int, target: str | Sequence[str] | None = None,
           method: str = "rds", workspace: str | Path | None = None,
           **options: Any) -> SelectResult:
    """:func:`datagen.select.aselect`, synchronously: ``k`` rows of ``sources`` (run ids or
    data sets) for ``target`` (a data set or ``task:NAME``) as a new run recording its parents.
    ``options`` are the other :class:`~datagen.select.SelectConfig` fields (``model``,
    ``max_length``, ``target_n``, ``seed``, ``batch_size``)."""
    from datagen.select import aselect, select_config

    srcs = [sources] if isinstance(sources, str) else list(sources)
    targets = [target] if isinstance(target, str) else list(target) if target else None
    cfg = select_config(method=method, k=k, target=targets, **options)
    return asyncio.run(aselect(srcs, cfg, workspace=workspace))


def plan_bench(suite: Suite, workspace: str | Path | None = None) -> BenchPlan:
    """:func:`datagen.bench_plan.aplan_bench`, synchronously: what a bench would do, no call."""
    from datagen.bench_plan import aplan_bench

    return asyncio.run(aplan_bench(suite, workspace))

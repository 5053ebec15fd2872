"""Runs: plan one (every argument checked, the id computed, nothing called), run it, inspect
runs. Async all the way down; the one synchronous edge is :mod:`datagen.api`.

A run's id is a fingerprint of (source content, method@version, non-default method args,
generator's semantic spec, n): the same command twice is the same run, and the second time
sends nothing. A killed run resumes from its response log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from datagen import __version__
from datagen.ray_data import RayData, engine_for, ray_data_config
from datagen.run_curation import (
    Decontamination,
    curate_outputs,
    curation_config,
    drop_seed_items,
    filter_seed_items,
    prepare,
)
from datagen.run_files import write_data, write_pairs
from datagen.run_result import RunResult, run_problem
from datagen_core.errors import ConfigError, RunFailedError
from datagen_core.fingerprint import fingerprint, stable_hash
from datagen_core.records import (
    GeneratorSpec,
    GenRequest,
    GenResponse,
    RunManifest,
)
from datagen_core.secrets import redact
from datagen_core.sources import load_rows, open_rows
from datagen_core.workspace import Workspace, run_is_live, run_lock
from generators.backends.base import check_spec
from generators.engine import Engine
from generators.progress import EngineStats
from generators.specs import load_spec

if TYPE_CHECKING:
    from generators.curation import CurationConfig
from generators.methods.base import METHODS, MethodContext
from metrics.store import Store, run_decontaminated

DEFAULT_SOURCE = "builtin:general"
log = logging.getLogger("datagen.runs")


@dataclass
class RunPlan:
    """Everything a run is before it runs: its spec, method, seed rows and id (no call made)."""

    spec: GeneratorSpec
    method: Any
    domain: str | None
    rows: Sequence[dict[str, Any]]  # a streaming method's are lazy (datagen.run_stream.LazyRows)
    source: Any
    uri: str
    run_id: str
    curation: CurationConfig
    n: int | None = None
    decontamination: Decontamination | None = None
    seed_drops: dict[str, Any] | None = None  # seed rows dropped as evaluation items
    ray: RayData | None = None  # where requests are answered (operational: not in run_id)

    async def requests(self) -> tuple[list[GenRequest], bool]:
        """The generator requests this run would send, and whether the list is exact.

        The method runs against a generator that answers nothing (every request fails), so
        one-round methods give their exact requests; a method whose later rounds depend on
        answers (judging, editing) gives only what it sends before those: a lower bound.
        """
        sent: list[GenRequest] = []

        async def record(requests: list[GenRequest]) -> list[GenResponse]:
            from datagen_core.records import ErrorInfo

            sent.extend(requests)
            return [GenResponse(key=str(i), index=i, error=ErrorInfo(
                type="dry_run", kind="fatal", message="dry run")) for i in range(len(requests))]

        def record_with(_: GeneratorSpec | str) -> Callable[[list[GenRequest]],
                                                            Awaitable[list[GenResponse]]]:
            return record

        ctx = MethodContext(rows=list(self.rows), source=self.uri, n=self.n, domain=self.domain,
                            generate=record, generate_with=record_with)
        await self.method.run(ctx)
        return sent, self.method.dry_run_exact


def plan_run(
    generator: str | GeneratorSpec,
    source: str | None = None,
    *,
    n: int | None = None,
    method: str = "prompt",
    method_args: dict[str, Any] | None = None,
    domain: str | None = None,
    curation: CurationConfig | dict[str, Any] | None = None,
) -> RunPlan:
    """Resolve a run without running it: validates every argument, reads the seed rows and
    computes the run id, so a bench can tell a finished run from one still to do."""
    spec = generator if isinstance(generator, GeneratorSpec) else load_spec(generator)
    check_spec(spec)  # unknown provider or option: one line, and no run is created
    if n is not None and n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}")
    m = METHODS.get(method)(**(method_args or {}))
    if m.uses_domain:
        domain = domain or "general"
        from generators.domains.base import DOMAINS

        DOMAINS.get(domain)  # unknown domain -> one clear line before any work
    elif domain is not None:
        raise ConfigError(f"method {m.name} takes no --domain")
    uri = source or m.default_source or (f"builtin:{domain}" if m.uses_domain
                                         else DEFAULT_SOURCE)
    limit = n if m.n_means == "rows" else None
    rows: Sequence[dict[str, Any]]
    if m.streams:  # read while the run goes (datagen.run_stream), not now
        from datagen.run_stream import LazyRows

        lazy = open_rows(uri, limit)
        # an unreadable source (binary, corrupt) fails here, before a run exists; a bad row
        # further on fails the run when it is reached (its answers so far stay cached)
        lazy.check()
        rows, src = LazyRows(lazy), lazy.spec
    else:
        rows, src = load_rows(uri, limit=limit)
    args: dict[str, Any] = {"generator": spec.semantic(), "method_args": m.non_default_args(),
                            "n": n}
    if domain is not None:
        args["domain"] = domain
    cur = curation_config(curation)
    if cur.model_dump(exclude_defaults=True):
        args["curation"] = cur.model_dump(mode="json", exclude_defaults=True)
    dec = prepare(cur)
    if dec.skipped:  # a run curated without its eval sets is another run than one with them
        args["not_decontaminated"] = True
    seed_drops: dict[str, Any] | None = None
    if m.uses_domain and m.streams:
        if dec.index is not None:  # one pass now for the counts; the run skips those rows
            assert isinstance(rows, LazyRows)
            report: dict[str, Any] = {}
            dropped: set[int] = set()
            for _ in filter_seed_items(rows.source, getattr(m.args, "columns", None), uri, cur,
                                       dec, report, dropped):
                pass
            seed_drops = report or None
            if dropped:
                rows.keep = functools.partial(_skip_positions, dropped=frozenset(dropped))
    elif m.uses_domain:
        rows, seed_drops = drop_seed_items(list(rows), getattr(m.args, "columns", None), uri,
                                           cur, dec)
    run_id = fingerprint(src.fingerprint, m.name, m.version, args)
    return RunPlan(spec=spec, method=m, domain=domain, rows=rows, source=src, uri=uri,
                   run_id=run_id, curation=cur, n=n, decontamination=dec, seed_drops=seed_drops)


def _skip_positions(rows: Iterable[dict[str, Any]], dropped: frozenset[int]
                    ) -> Iterator[dict[str, Any]]:
    return (r for i, r in enumerate(rows) if i not in dropped)


async def agenerate(
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
    """Run ``method`` with ``generator`` over ``source`` (default: the built-in seed set).

    ``n`` is the number of seed rows to use, or for ``instance-generation`` the number of new
    instances to request. ``domain`` (math, code, general) picks the prompts and validator of
    the AgoraBench methods. ``backend`` injects a ready backend instance (tests, custom clients)
    for the generator, ``backends`` maps other specs' labels (judges, editors) to instances; by
    default a spec's provider is looked up in the backend registry. ``curation`` configures
    dedup and decontamination of every method's accepted rows and pairs (on by default; see
    :mod:`datagen.run_curation`).

    A run that keeps no row, or whose share of failed requests is above ``max_failure_rate``
    (0-1; default: any share), is stored with status ``failed`` and raises
    :class:`~datagen_core.errors.RunFailedError`, whose ``result`` holds what it did produce; the
    same call again resends only the failed requests.

    ``ray`` (an address such as ``"local"``, ``"auto"``, ``"ray://HOST:10001"``, or a
    :class:`~datagen.ray_data.RayData`) answers the generator's requests through a Ray Data
    pipeline of backend replicas instead of this process: the same run id, files and resume.
    """
    if max_failure_rate is not None and not 0 <= max_failure_rate <= 1:
        raise ConfigError(f"max failure rate must be between 0 and 1, got {max_failure_rate}")
    plan = plan_run(generator, source, n=n, method=method, method_args=method_args,
                    domain=domain, curation=curation)
    plan.ray = ray_data_config(ray, plan.spec)
    run_id = plan.run_id
    ws = Workspace.resolve(workspace).ensure()
    store = Store(ws.db_path)
    run_dir = ws.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The run's lock is taken before its status is touched: a second identical command is
    # refused without marking the live run failed.
    with run_lock(run_dir):
        return await _run(plan, ws, store, run_dir, progress=progress, backend=backend,
                          backends=backends, max_failure_rate=max_failure_rate)


async def _run(plan: RunPlan, ws: Workspace, store: Store, run_dir: Path, *,
               progress: bool | None, backend: Any, backends: dict[str, Any] | None,
               max_failure_rate: float | None) -> RunResult:
    spec, m, domain, src, run_id, n = (plan.spec, plan.method, plan.domain, plan.source,
                                       plan.run_id, plan.n)
    manifest_path = run_dir / "run.json"
    manifest = RunManifest(
        run_id=run_id,
        created_at=_created_at(manifest_path),
        generator=spec,
        method=m.name,
        method_version=m.version,
        method_args=m.args.model_dump(mode="json"),
        domain=domain,
        source=src,
        n=n,
        datagen_version=__version__,
    )
    manifest_path.write_text(manifest.model_dump_json(indent=2))
    store.upsert_run(manifest, "running")
    try:
        return await _execute(manifest, plan, store, run_dir, progress=progress, backend=backend,
                              backends=backends, max_failure_rate=max_failure_rate,
                              workspace=ws)
    except (KeyboardInterrupt, asyncio.CancelledError):
        store.upsert_run(manifest, "interrupted")
        raise
    except RunFailedError:
        raise  # stored with its counts
    except BaseException as e:  # a run's status is true at every moment: no run stays running
        store.upsert_run(manifest, "failed", error=redact(str(e)) or type(e).__name__)
        raise


async def _execute(manifest: RunManifest, plan: RunPlan, store: Store, run_dir: Path, *,
                   progress: bool | None, backend: Any, backends: dict[str, Any] | None,
                   max_failure_rate: float | None, workspace: Workspace) -> RunResult:
    if plan.method.streams:  # a Ray Data run too: RayDataEngine.stream sends it in slices
        from datagen.run_stream import execute_streaming

        return await execute_streaming(manifest, plan, store, run_dir, progress=progress,
                                       backend=backend, max_failure_rate=max_failure_rate)
    spec, m, uri, n, cur, run_id = (plan.spec, plan.method, plan.uri, plan.n, plan.curation,
                                    plan.run_id)
    rows = list(plan.rows)
    domain = plan.domain
    engine: Engine = engine_for(plan.ray)(
        spec, backend=backend, log_path=run_dir / "responses.jsonl", cache=store,
        progress=progress, description=f"{m.name} {spec.label}")
    totals = EngineStats()

    async def call(requests: list[GenRequest]) -> list[GenResponse]:
        responses = await engine.generate(requests)
        _add_stats(totals, engine.stats)
        return responses

    others: dict[str, Engine] = {}

    def generate_with(other: GeneratorSpec | str) -> Callable[[list[GenRequest]],
                                                             Awaitable[list[GenResponse]]]:
        ospec = other if isinstance(other, GeneratorSpec) else load_spec(other)
        tag = stable_hash(ospec.semantic(), 12)
        if tag not in others:
            others[tag] = Engine(
                ospec, backend=(backends or {}).get(ospec.label),
                log_path=run_dir / f"responses-{tag}.jsonl", cache=store, progress=progress,
                description=f"{m.name} {ospec.label}")
        eng = others[tag]

        async def call_other(requests: list[GenRequest]) -> list[GenResponse]:
            responses = await eng.generate(requests)
            _add_stats(totals, eng.stats)
            return responses

        return call_other

    ctx = MethodContext(rows=rows, source=uri, n=n, domain=domain, generate=call,
                        generate_with=generate_with, generator=spec.label,
                        workspace=workspace.root)
    async with engine:
        try:
            produced = await m.run(ctx)
        finally:
            for eng in others.values():
                await eng.aclose()

    instances, pairs = produced.instances, produced.pairs
    responses = produced.responses + produced.extra_responses
    pairs, dropped_pairs, curation_report = curate_outputs(
        m, instances, pairs, rows, cur, plan.decontamination or prepare(cur), plan.seed_drops)
    write_data(run_dir, instances)
    write_pairs(run_dir, pairs, dropped_pairs)
    # the prompts of the main requests (judge and editor requests are not kept in Produced)
    aligned = len(produced.requests) == len(produced.responses)
    store.ingest_responses(run_id, responses,
                           [q.messages for q in produced.requests] if aligned else ())
    store.write_instances(run_id, instances)
    store.write_pairs(run_id, pairs)
    result = RunResult(run_id=run_id, run_dir=run_dir, stats=totals, instances=instances,
                       pairs=pairs, curation=curation_report)
    problem = _run_problem(result, responses, max_failure_rate)
    store.upsert_run(
        manifest, "failed" if problem else "finished",
        n_requests=len(responses), n_ok=sum(r.ok for r in responses),
        n_failed=sum(not r.ok for r in responses), n_reused=totals.reused,
        n_instances=len(instances), n_valid=sum(x.valid for x in instances), n_pairs=len(pairs),
        prompt_tokens=sum(r.usage.prompt_tokens for r in responses),
        completion_tokens=sum(r.usage.completion_tokens for r in responses),
        cost_usd=sum(r.cost_usd for r in responses), error=problem,
        curation=orjson.dumps(curation_report).decode(),
    )
    if problem:
        raise RunFailedError(problem, result)
    return result


def _run_problem(result: RunResult, responses: list[GenResponse],
                 max_failure_rate: float | None) -> str | None:
    """:func:`run_problem` of an in-memory run."""
    failed = Counter(r.error.type for r in responses if r.error is not None)
    reasons = Counter(x.reject_reason or "rejected" for x in result.instances if not x.valid)
    return run_problem(result.run_id, len(result.valid), len(result.pairs), failed,
                       len(responses), reasons, max_failure_rate)


def _add_stats(total: EngineStats, part: EngineStats) -> None:
    for f in ("total", "reused", "sent", "ok", "failed", "attempts", "prompt_tokens",
              "completion_tokens", "cost_usd"):
        setattr(total, f, getattr(total, f) + getattr(part, f))
    for k, v in part.errors.items():
        total.errors[k] = total.errors.get(k, 0) + v


def _created_at(manifest_path: Path) -> float:
    if manifest_path.exists():
        try:
            return float(orjson.loads(manifest_path.read_bytes())["created_at"])
        except (KeyError, ValueError, orjson.JSONDecodeError):
            pass
    return time.time()


# -- inspecting runs -----------------------------------------------------------------------------
def list_runs(workspace: str | Path | None = None) -> list[dict[str, Any]]:
    """Runs in the workspace, newest first."""
    ws = Workspace.resolve(workspace)
    return [with_hygiene(true_status(ws, r)) for r in Store(ws.db_path).list_runs()]


def show_run(run_id: str, workspace: str | Path | None = None) -> dict[str, Any]:
    """One run's counts, tokens, cost, latency, failures by type and rejections by reason."""
    store = Store.open_existing(workspace)
    return _with_compute(with_hygiene(true_status(Workspace.resolve(workspace),
                                                  store.run_summary(store.resolve_run(run_id)))))


def _with_compute(row: dict[str, Any]) -> dict[str, Any]:
    """``compute_s`` (machine seconds the generation used) and ``tokens_per_s`` for runs of an
    in-process generator (hf, vllm offline: batched backends), where latencies are shares of
    batch wall time; None for servers and APIs, whose answers overlap in time."""
    from generators.backends.base import BACKENDS

    provider = (row.get("manifest") or {}).get("generator", {}).get("provider")
    try:
        batched = bool(provider) and BACKENDS.get(provider).batched
    except ConfigError:
        batched = False
    compute = row.get("latency_sum_s") if batched else None
    tokens = row.get("completion_tokens")
    return {**row, "compute_s": compute,
            "tokens_per_s": tokens / compute if compute and tokens else None}


def with_hygiene(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``decontaminated``: whether its rows were checked against eval sets."""
    return {**row, "decontaminated": run_decontaminated(row.get("curation"))}


def true_status(ws: Workspace, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a ``runs`` row) with its true status: a run stored as running whose process
    is gone (killed before it could say so) is shown as interrupted: the same command resumes
    it."""
    if row.get("status") == "running" and not run_is_live(ws.run_dir(row["run_id"])):
        row = {**row, "status": "interrupted"}
    return row


def load_responses(run_id: str, workspace: str | Path | None = None) -> list[GenResponse]:
    """Raw responses of a run, as stored in its log (last record per key)."""
    from generators.response_log import iter_log

    store = Store.open_existing(workspace)
    rid = store.resolve_run(run_id)
    ws = Workspace.resolve(workspace)
    return [GenResponse.model_validate(r) for r in iter_log(ws.run_dir(rid) / "responses.jsonl")]

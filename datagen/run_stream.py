"""Streaming runs: rows read lazily, answers written as they come, memory flat in N.

A method that streams (``Method.streams``: ``prompt``, ``response-generation``) runs as a
pipeline: the source is read a batch at a time (:class:`~datagen_core.sources.RowSource`),
requests flow through :meth:`Engine.stream` in a bounded window, and every few thousand answers
are parsed, curated (:class:`~datagen.run_curation.StreamCuration`) and written (a Parquet row
group, JSONL lines, one DuckDB insert per table) in a worker thread while generation goes on.

Outputs are the in-memory path's, byte for byte in content and order: ``data.parquet``,
``data.jsonl`` and ``rejected.jsonl`` are written to ``.tmp`` files and renamed at the end, and
the run's DuckDB rows are cleared when it starts, so a killed run leaves its previous outputs
(or none) and the same command again rewrites every row exactly once, re-sending nothing the
response log already holds.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, overload

import orjson

from datagen.ray_data import engine_for
from datagen.run_curation import StreamCuration, prepare
from datagen.run_files import _instance_rows, data_schema
from datagen.run_result import RowCounts, RunResult, run_problem
from datagen_core.records import GenRequest, GenResponse, Instance, RunManifest
from datagen_core.sources import RowSource
from generators.engine import Engine
from generators.methods.base import MethodContext
from metrics.store import Store

if TYPE_CHECKING:
    from datagen.runs import RunPlan

#: answers parsed, curated and written together (one Parquet row group)
BATCH = 4096
#: the run's DuckDB rows, gathered as Parquet beside its outputs and inserted at the end
_DB_FILES = ("requests.parquet.tmp", "instances.parquet.tmp")
_REASON_KIND = re.compile(r"\s*#\d+.*$")


class LazyRows(Sequence[dict[str, Any]]):
    """A streaming plan's rows: iterating reads the source again (lazily, through ``keep``);
    indexing or ``len`` reads it once into memory (for small sets and dry runs only)."""

    def __init__(self, source: RowSource,
                 keep: Callable[[Iterable[dict[str, Any]]], Iterator[dict[str, Any]]] | None
                 = None) -> None:
        self.source = source
        self.keep = keep
        self._rows: list[dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._rows is not None:
            return iter(self._rows)
        return self.keep(self.source) if self.keep is not None else iter(self.source)

    def _all(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = list(iter(self))
        return self._rows

    def __len__(self) -> int:
        return len(self._all())

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self._all()[i]


class LazyInstances(Sequence[Instance]):
    """A streamed run's instances: counted while written, read back from the store only if
    someone asks for them (an API caller on a small run; the CLI uses the counts)."""

    def __init__(self, store: Store, run_id: str, n: int) -> None:
        self._store, self._run_id, self._n = store, run_id, n
        self._rows: list[Instance] | None = None

    def _all(self) -> list[Instance]:
        if self._rows is None:
            self._rows = [Instance(index=r["index"], instance_id=r["instance_id"],
                                   messages=r["messages"], valid=r["valid"],
                                   reject_reason=r["reject_reason"], meta=r["meta"])
                          for r in self._store.instance_rows(self._run_id, True)]
        return self._rows

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Instance]:
        return iter(self._all())

    @overload
    def __getitem__(self, i: int) -> Instance: ...
    @overload
    def __getitem__(self, i: slice) -> list[Instance]: ...
    def __getitem__(self, i: int | slice) -> Instance | list[Instance]:
        return self._all()[i]


class _Writer:
    """The run's files and DuckDB rows, a batch at a time (called from one thread at a time,
    in batch order)."""

    def __init__(self, run_dir: Path, store: Store, run_id: str, method: Any,
                 ctx: MethodContext, curation: StreamCuration) -> None:
        self.run_dir, self.store, self.run_id = run_dir, store, run_id
        self.method, self.ctx, self.curation = method, ctx, curation
        self.counts = RowCounts()
        self._db: list[Any] = []  # Parquet writers of the DuckDB rows
        self._parquet: Any = None
        self._files: dict[str, IO[bytes]] = {
            name: open(run_dir / f"{name}.tmp", "wb")  # noqa: SIM115 - closed in close()
            for name in ("data.jsonl", "rejected.jsonl")}

    def write(self, batch: list[tuple[GenRequest, GenResponse]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        method, ctx, c = self.method, self.ctx, self.counts
        instances = [method.parse(r.index, q, r, ctx) for q, r in batch]
        self.curation.curate(instances)
        valid = [x for x in instances if x.valid]
        rows = _instance_rows(valid)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.run_dir / "data.parquet.tmp", data_schema())
        if rows:
            self._parquet.write_table(pa.Table.from_pylist(rows, schema=data_schema()))
        self._files["data.jsonl"].write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        self._files["rejected.jsonl"].write(b"".join(
            orjson.dumps(x.model_dump(mode="json")) + b"\n" for x in instances if not x.valid))
        responses = [r for _, r in batch]
        tables = self.store.row_tables(self.run_id, responses[0].index, responses,
                                       [q.messages for q, _ in batch], instances)
        if not self._db:
            self._db = [pq.ParquetWriter(self.run_dir / name, t.schema)
                        for name, t in zip(_DB_FILES, tables)]
        for w, t in zip(self._db, tables):
            w.write_table(t)
        for r in responses:
            c.requests += 1
            if r.ok:
                c.ok += 1
            if r.error is not None:
                c.failed[r.error.type] += 1
            c.prompt_tokens += r.usage.prompt_tokens
            c.completion_tokens += r.usage.completion_tokens
            c.cost_usd += r.cost_usd
        c.instances += len(instances)
        c.valid += len(valid)
        for x in instances:
            if not x.valid:
                c.rejected[_REASON_KIND.sub("", x.reject_reason or "rejected")] += 1
        if len(c.head) < 2:
            c.head.extend(valid[:2 - len(c.head)])

    def insert(self) -> None:
        """Insert the run's rows into DuckDB (one transaction, read from the files)."""
        for w in self._db:
            w.close()
        if self._db:
            self.store.append_parquet(*(self.run_dir / name for name in _DB_FILES))
        self._db = []
        for name in _DB_FILES:
            (self.run_dir / name).unlink(missing_ok=True)

    def close(self, keep: bool) -> None:
        """Close the files; ``keep``: put them in place of the run's outputs (else they stay
        as ``.tmp`` files, which the next run overwrites)."""
        import pyarrow.parquet as pq

        if keep and self._parquet is None:
            self._parquet = pq.ParquetWriter(self.run_dir / "data.parquet.tmp", data_schema())
        if self._parquet is not None:
            self._parquet.close()
        for w in self._db:
            w.close()
        for f in self._files.values():
            f.close()
        if keep:
            for name in ("data.parquet", "data.jsonl", "rejected.jsonl"):
                (self.run_dir / f"{name}.tmp").replace(self.run_dir / name)


class _Sink:
    """Hands full batches to the writer thread; at most one batch is being written while the
    next fills, so the event loop keeps sending and memory stays at two batches."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer
        self.batch: list[tuple[GenRequest, GenResponse]] = []
        # the writer's imports (pyarrow, and the pandas it loads on first use: ~1 s) happen
        # in its thread while the first requests are out, not after the last answer
        self._pending: asyncio.Future[None] | None = asyncio.ensure_future(
            asyncio.to_thread(_warm_up))

    async def add(self, request: GenRequest, response: GenResponse) -> None:
        self.batch.append((request, response))
        if len(self.batch) >= BATCH:
            await self._hand_off()

    async def _hand_off(self) -> None:
        batch, self.batch = self.batch, []
        if self._pending is not None:
            await self._pending
            self._pending = None
        if batch:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self.writer.write, batch))

    async def finish(self) -> None:
        await self._hand_off()
        if self._pending is not None:
            await self._pending
            self._pending = None

    async def abort(self) -> None:
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
            self._pending = None


async def execute_streaming(manifest: RunManifest, plan: RunPlan, store: Store, run_dir: Path,
                            *, progress: bool | None, backend: Any,
                            max_failure_rate: float | None) -> RunResult:
    """Run a streaming method (see the module docstring); the result's instances are read back
    from the store only when asked for."""
    spec, m, run_id = plan.spec, plan.method, plan.run_id
    dec = plan.decontamination or prepare(plan.curation)
    curation = StreamCuration(plan.curation, dec, run_dir / ".dedup-spill")
    ctx = MethodContext(rows=[], source=plan.uri, n=plan.n, domain=plan.domain,
                        generate=_no_generate, generator=spec.label)
    rows = plan.rows  # seed items found at planning are skipped as the rows are read
    source = rows.source if isinstance(rows, LazyRows) else None
    cached = store.begin_streamed_run(run_id)
    engine: Engine = engine_for(plan.ray)(  # the plain engine, or Ray Data's (datagen.ray_data)
        spec, backend=backend, log_path=run_dir / "responses.jsonl",
        cache=store if cached else None, progress=progress,
        description=f"{m.name} {spec.label}")
    writer = _Writer(run_dir, store, run_id, m, ctx, curation)
    sink = _Sink(writer)
    done = False
    try:
        async with engine:
            answers = engine.stream(m.iter_requests(rows, ctx))
            try:
                async for request, response in answers:
                    await sink.add(request, response)
            finally:  # a failure here (a write, a bad row) stops what is in flight at once
                aclose = getattr(answers, "aclose", None)
                if aclose is not None:
                    await aclose()
        await sink.finish()
        await asyncio.to_thread(writer.insert)
        done = True
    finally:
        if not done:
            await sink.abort()
        writer.close(keep=done)
        curation.close()
    curation.seed_drops = plan.seed_drops
    if source is not None and source.count is not None and manifest.source is not None:
        manifest.source = manifest.source.model_copy(update={"rows": source.count})
        (run_dir / "run.json").write_text(manifest.model_dump_json(indent=2))
    c = writer.counts
    report = curation.report()
    result = RunResult(run_id=run_id, run_dir=run_dir, stats=engine.stats,
                       instances=LazyInstances(store, run_id, c.instances), curation=report,
                       counts=c)
    problem = run_problem(run_id, c.valid, 0, c.failed, c.requests, c.rejected,
                          max_failure_rate)
    store.upsert_run(
        manifest, "failed" if problem else "finished",
        n_requests=c.requests, n_ok=c.ok, n_failed=c.requests - c.ok,
        n_reused=engine.stats.reused, n_instances=c.instances, n_valid=c.valid, n_pairs=0,
        prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
        cost_usd=c.cost_usd, error=problem, curation=orjson.dumps(report).decode(),
    )
    if problem:
        from datagen_core.errors import RunFailedError

        raise RunFailedError(problem, result)
    return result


def _warm_up() -> None:
    import pyarrow as pa
    import pyarrow.parquet

    pa.array([0])


async def _no_generate(requests: list[GenRequest]) -> list[GenResponse]:
    raise RuntimeError("a streaming run sends its requests through Engine.stream")

"""A streaming run's writer: parse, curate and write each batch of answers, in a thread or in
a process of its own.

The writer's work (parsing answers into rows, dedup, Parquet/JSONL/DuckDB rows) is about a
quarter of a streaming run's CPU; in a thread it holds the GIL the event loop needs to keep
requests going. A run that fills a first full batch (:data:`BATCH` answers) is therefore
written by a separate process (:class:`ProcessWriter`), which gets each batch pickled through a
pipe, one at a time, in order; smaller runs (most tests, a first try) never pay the ~1 s it
takes that process to start, and are written in a thread (:class:`StreamWriter` itself). Both give
the same files, rows and counts.

The process is spawned (a fresh interpreter: no inherited threads or event loop), ignores
Ctrl-C (the run decides what happens to its files) and dies with the run (``PR_SET_PDEATHSIG``
on Linux; elsewhere, when the pipe closes), so a killed run leaves no writer behind to scribble
on the files the next run writes. Files are replaced, never truncated in place, for the same
reason.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from datagen.run_curation import Decontamination, StreamCuration
from datagen.run_files import _instance_rows, data_schema
from datagen.run_result import RowCounts
from datagen_core.records import GenRequest, GenResponse
from generators.methods.base import Method, MethodContext
from metrics.store import Store

#: answers parsed, curated and written together (one Parquet row group); a run that fills one
#: gets a writer process. ``DATAGEN_STREAM_BATCH`` changes it (tests use small batches).
BATCH = int(os.environ.get("DATAGEN_STREAM_BATCH", "4096"))
#: the run's DuckDB rows, gathered as Parquet beside its outputs and inserted at the end
DB_FILES = ("requests.parquet.tmp", "instances.parquet.tmp")
_REASON_KIND = re.compile(r"\s*#\d+.*$")

Batch = list[tuple[GenRequest, GenResponse]]


@dataclass
class WriterSetup:
    """Everything a writer is built from (pickled to the writer process)."""

    run_dir: Path
    store: Store
    run_id: str
    method: Method
    ctx: MethodContext
    curation_cfg: Any  # CurationConfig
    dec: Decontamination


class StreamWriter:
    """The run's files and DuckDB rows, a batch at a time (called from one thread at a time,
    in batch order): a small run's writer as is, a big run's inside :class:`ProcessWriter`."""

    def __init__(self, setup: WriterSetup) -> None:
        self.run_dir, self.store, self.run_id = setup.run_dir, setup.store, setup.run_id
        self.method, self.ctx = setup.method, setup.ctx
        self.curation = StreamCuration(setup.curation_cfg, setup.dec,
                                       setup.run_dir / ".dedup-spill")
        self.counts = RowCounts()
        self._db: list[Any] = []  # Parquet writers of the DuckDB rows
        self._parquet: Any = None
        self._files: dict[str, IO[bytes]] = {  # closed in _close()
            name: _fresh(self.run_dir / f"{name}.tmp") for name in ("data.jsonl", "rejected.jsonl")}

    def write(self, batch: Batch) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        method, ctx, c = self.method, self.ctx, self.counts
        instances = [method.parse(r.index, q, r, ctx) for q, r in batch]
        self.curation.curate(instances)
        valid = [x for x in instances if x.valid]
        rows = _instance_rows(valid)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(_unlinked(self.run_dir / "data.parquet.tmp"),
                                             data_schema())
        if rows:
            self._parquet.write_table(pa.Table.from_pylist(rows, schema=data_schema()))
        self._files["data.jsonl"].write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        self._files["rejected.jsonl"].write(b"".join(
            orjson.dumps(x.model_dump(mode="json")) + b"\n" for x in instances if not x.valid))
        responses = [r for _, r in batch]
        tables = self.store.row_tables(self.run_id, responses[0].index, responses,
                                       [q.messages for q, _ in batch], instances)
        if not self._db:
            self._db = [pq.ParquetWriter(_unlinked(self.run_dir / name), t.schema)
                        for name, t in zip(DB_FILES, tables)]
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

    def finish(self, seed_drops: dict[str, Any] | None) -> tuple[RowCounts, dict[str, Any]]:
        """Close every file (still ``.tmp``: :func:`publish` puts them in place); the counts
        and the curation record."""
        import pyarrow.parquet as pq

        try:
            if self._parquet is None:  # no answer at all: an empty data.parquet all the same
                self._parquet = pq.ParquetWriter(_unlinked(self.run_dir / "data.parquet.tmp"),
                                                 data_schema())
        finally:
            self._close()
        self.curation.seed_drops = seed_drops
        return self.counts, self.curation.report()

    def abort(self) -> None:
        """Close the files, leaving them as ``.tmp`` files (the next run replaces them)."""
        self._close()

    def _close(self) -> None:
        try:
            if self._parquet is not None:
                self._parquet.close()
            for w in self._db:
                w.close()
            for f in self._files.values():
                f.close()
        finally:
            self.curation.close()


def publish(run_dir: Path, store: Store, wrote: bool) -> None:
    """Insert a finished run's DuckDB rows (one transaction, from the Parquet files its writer
    wrote; ``wrote``: whether it wrote any) and put its outputs in place of the ``.tmp`` files.
    Done by the run's own process once the writer has finished (and, if a process, exited):
    the insert's memory then does not come on top of the writer's."""
    db = [run_dir / name for name in DB_FILES]
    if wrote:
        store.append_parquet(*db)
    for path in db:
        path.unlink(missing_ok=True)
    for name in ("data.parquet", "data.jsonl", "rejected.jsonl"):
        (run_dir / f"{name}.tmp").replace(run_dir / name)


class WriterProcessError(RuntimeError):
    """The writer process failed in a way that has no exception of its own to show."""


class ProcessWriter:
    """A :class:`StreamWriter` in a spawned process: each call is pickled through a pipe and
    answered before the next (calls block: make them from a worker thread)."""

    def __init__(self, setup: WriterSetup) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(setup, child), daemon=True,
                                 name="datagen-writer")
        self._proc.start()
        child.close()
        self._closed = False

    def _call(self, name: str, *args: Any) -> Any:
        try:
            self._conn.send((name, args))
            ok, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._proc.join(5)
            raise WriterProcessError(
                f"the run's writer process stopped (exit code {self._proc.exitcode}); "
                "run the same command again to resume") from None
        if not ok:
            raise value
        return value

    def write(self, batch: Batch) -> None:
        self._call("write", _pack(batch))

    def finish(self, seed_drops: dict[str, Any] | None) -> tuple[RowCounts, dict[str, Any]]:
        try:
            counts, report = self._call("finish", seed_drops)
            return counts, report
        finally:
            self._stop()

    def abort(self) -> None:
        try:
            if self._proc.is_alive():
                self._call("abort")
        except Exception:  # already failing: the first error is the one shown
            pass
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._conn.close()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


def _serve(setup: WriterSetup, conn: Any) -> None:
    """The writer process: build the writer, then answer calls until told to stop or the run
    goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle
    _die_with_parent()
    writer: StreamWriter | None = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the run is gone: leave the .tmp files for the next run to replace
        if msg is None:
            return
        name, args = msg
        try:
            if writer is None:
                writer = StreamWriter(setup)
                gc.freeze()  # as the run's process does (run_stream.few_collections)
                gc.set_threshold(50_000, 20, 100)
            if name == "write":
                args = (_unpack(args[0]),)
            value = getattr(writer, name)(*args)
            conn.send((True, value))
        except BaseException as exc:  # sent back to the run, which raises it
            conn.send((False, _portable(exc)))


def _pack(batch: Batch) -> list[tuple[Any, ...]]:
    """A batch as plain tuples: pickling the records themselves cost twice as much, in the
    run's own process (the one that keeps the requests going)."""
    return [([(m.role, m.content) for m in q.messages], q.sampling, q.response_schema, q.sample,
             q.meta, r.key, r.index, r.text, r.finish_reason, r.usage.prompt_tokens,
             r.usage.completion_tokens, r.latency_s, r.cost_usd, r.error, r.attempts, r.model,
             None if r.raw is None else orjson.dumps(r.raw), r.created_at)
            for q, r in batch]


def _unpack(packed: list[tuple[Any, ...]]) -> Batch:
    """:func:`_pack`'s tuples as records again (built, not re-validated: they were valid)."""
    from datagen_core.records import Message, Usage

    out: Batch = []
    for (msgs, sampling, schema, sample, meta, key, index, text, finish, pt, ct, latency, cost,
         error, attempts, model, raw, created) in packed:
        q = GenRequest.model_construct(
            messages=[Message.model_construct(role=role, content=content)
                      for role, content in msgs],
            sampling=sampling, response_schema=schema, sample=sample, meta=meta)
        r = GenResponse.model_construct(
            key=key, index=index, text=text, finish_reason=finish,
            usage=Usage.model_construct(prompt_tokens=pt, completion_tokens=ct),
            latency_s=latency, cost_usd=cost, error=error, attempts=attempts, model=model,
            raw=None if raw is None else orjson.loads(raw), created_at=created)
        out.append((q, r))
    return out


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a plain error with its message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # an exception class that cannot be rebuilt
        return WriterProcessError(f"{type(exc).__name__}: {exc}")


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        parent = multiprocessing.parent_process()
        if parent is not None and os.getppid() != parent.pid:  # it died before the line above
            os._exit(0)
    except (OSError, AttributeError):
        pass


def _unlinked(path: Path) -> Path:
    """``path``, with whatever file was there removed (a new file, never one truncated in
    place that something else might still hold open)."""
    path.unlink(missing_ok=True)
    return path


def _fresh(path: Path) -> IO[bytes]:
    return open(_unlinked(path), "wb")  # the caller closes it

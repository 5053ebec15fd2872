"""The workspace database: one DuckDB file, created and upgraded by :mod:`metrics.migrations`.

Connections are short-lived (open, work, close) because DuckDB lets one process hold a file at a
time; a second ``datagen`` process waits briefly for the lock instead of failing. The per-run
response logs stay the crash-safe truth; the database is a queryable copy synced at run end (and
re-synced by any later run), and the cross-run response cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from datagen_core.errors import DatagenError
from datagen_core.records import GenResponse, Instance, Message, Pair, RunManifest
from datagen_core.secrets import redact_many
from metrics.migrations import MIGRATIONS

_LOCK_WAIT_S = 30.0
#: a rejection's kind: its reason without the row it points at ("duplicate of seed #3" and
#: "#7" are one kind), so rejections count, and filter, by kind
REASON_KIND = "regexp_replace(reject_reason, '\\s*#\\d+.*$', '')"


_APPEND_MEMORY_MB = 128  # DuckDB's budget for a streaming run's final insert


class Store:
    """Read and write one workspace's ``datagen.duckdb``.

    ``read_only=True`` makes every connection read-only unless one asks to write
    (``connect(read_only=False)``): a viewer (``datagen serve``) then cannot change a run by
    mistake, and holds only the shared lock that lets other readers in.
    """

    def __init__(self, path: Path | str, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._migrated = False

    @classmethod
    def open_existing(cls, workspace: str | Path | None = None) -> Store:
        """The store of a workspace that has one; reading commands on a folder with none get
        one line saying how to make it, not an empty database."""
        from datagen_core.errors import InputError
        from datagen_core.workspace import Workspace

        ws = Workspace.resolve(workspace)
        if not ws.db_path.exists():
            raise InputError(f"no datagen workspace at {ws.root}: run `datagen generate` first "
                             "or pass --workspace")
        return cls(ws.db_path)

    @contextmanager
    def connect(self, read_only: bool | None = None) -> Iterator[Any]:
        import duckdb

        if read_only is None:
            read_only = self.read_only

        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                break
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() > deadline:
                    raise DatagenError(
                        f"cannot open {self.path}: {e}; is another datagen process using it?"
                    ) from None
                time.sleep(0.2)
            except OSError as e:  # not ours to write (a shared or read-only workspace)
                raise DatagenError(f"cannot open {self.path}: {e.strerror or e}") from None
        try:
            if not self._migrated and not read_only:
                self._migrate(con)
            yield con
        finally:
            con.close()

    # -- schema ------------------------------------------------------------------------------
    def _migrate(self, con: Any) -> None:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
        )
        done = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(sql)
                con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, _now()]
                )
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        self._migrated = True

    def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions now applied."""
        with self.connect() as con:
            rows = con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    # -- runs --------------------------------------------------------------------------------
    def upsert_run(self, manifest: RunManifest, status: str, **fields: Any) -> None:
        g = manifest.generator
        row = {
            "run_id": manifest.run_id,
            "created_at": datetime.fromtimestamp(manifest.created_at, UTC).replace(tzinfo=None),
            "updated_at": _now(),
            "status": status,
            "generator": g.display,
            "provider": g.provider,
            "model": g.model,
            "method": manifest.method,
            "method_version": manifest.method_version,
            "domain": manifest.domain,
            "source": manifest.source.uri if manifest.source else None,
            "manifest": manifest.model_dump_json(),
            **fields,
        }
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in ("run_id", "created_at"))
        with self.connect() as con:
            con.execute(
                f"INSERT INTO runs ({cols}) VALUES ({marks}) "
                f"ON CONFLICT (run_id) DO UPDATE SET {updates}",
                list(row.values()),
            )

    def list_runs(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.connect() as con:
            cur = con.execute(
                "SELECT run_id, created_at, status, generator, method, domain, n_requests, "
                "n_ok, n_failed, n_valid, prompt_tokens + completion_tokens AS tokens, cost_usd, "
                "curation FROM runs ORDER BY created_at DESC"
            )
            return _dicts(cur)

    def resolve_run(self, prefix: str) -> str:
        """A full run id from a unique prefix, like git (an empty prefix names no run)."""
        if not prefix.strip():
            from datagen_core.errors import ConfigError

            raise ConfigError("empty run id: give a run id or a unique prefix (see `datagen runs`)")
        with self.connect() as con:
            ids = [r[0] for r in con.execute(
                "SELECT run_id FROM runs WHERE starts_with(run_id, ?)", [prefix]
            ).fetchall()]
        if not ids:
            from datagen_core.errors import NotFoundError

            raise NotFoundError(f"no run {prefix!r} in {self.path.parent}: see `datagen runs`")
        if len(ids) > 1:
            raise DatagenError(f"run id {prefix!r} is ambiguous ({len(ids)} runs): give more of it")
        return str(ids[0])

    def run_state(self, run_id: str) -> tuple[str, int, int, int] | None:
        """(status, n_valid, n_instances, n_failed) of a run, or None if it is unknown."""
        if not self.path.exists():
            return None
        with self.connect() as con:
            row = con.execute("SELECT status, n_valid, n_instances, n_failed FROM runs "
                              "WHERE run_id = ?", [run_id]).fetchone()
        return None if row is None else (row[0], row[1] or 0, row[2] or 0, row[3] or 0)

    def instance_rows(self, run_id: str, include_rejected: bool = False) -> list[dict[str, Any]]:
        """A run's rows for export: chat messages, validity, reason and metadata, in order."""
        where = "" if include_rejected else " AND valid"
        with self.connect() as con:
            cur = con.execute(
                "SELECT instance_id, idx AS index, messages, valid, reject_reason, meta "
                f"FROM instances WHERE run_id = ?{where} ORDER BY idx", [run_id])
            rows = _dicts(cur)
        for r in rows:
            r["messages"] = orjson.loads(r["messages"])
            r["meta"] = orjson.loads(r["meta"]) if r["meta"] else {}
        return rows

    def pair_counts(self, run_id: str) -> list[dict[str, Any]]:
        """Per attribute: number of pairs and their margins (min, mean, max)."""
        with self.connect() as con:
            return _dicts(con.execute(
                "SELECT attribute, count(*) AS n, min(margin) AS min_margin, "
                "avg(margin) AS mean_margin, max(margin) AS max_margin FROM pairs "
                "WHERE run_id = ? GROUP BY attribute ORDER BY attribute", [run_id]))

    def run_summary(self, run_id: str) -> dict[str, Any]:
        with self.connect() as con:
            runs = _dicts(con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]))
            if not runs:
                from datagen_core.errors import NotFoundError

                raise NotFoundError(f"no run {run_id!r}: see `datagen runs`")
            summary = runs[0]
            summary["manifest"] = orjson.loads(summary["manifest"]) if summary["manifest"] else {}
            summary["errors"] = _dicts(con.execute(
                "SELECT error_type, any_value(error_message) AS example, count(*) AS n "
                "FROM requests WHERE run_id = ? AND status = 'error' GROUP BY 1 ORDER BY 3 DESC",
                [run_id],
            ))
            summary["rejections"] = _dicts(con.execute(
                f"SELECT {REASON_KIND} AS reject_reason, count(*) AS n FROM instances "
                "WHERE run_id = ? AND NOT valid GROUP BY 1 ORDER BY 2 DESC",
                [run_id],
            ))
            lat = con.execute(
                "SELECT median(latency_s), quantile_cont(latency_s, 0.95), sum(latency_s) "
                "FROM requests WHERE run_id = ?",
                [run_id],
            ).fetchone()
            # latency_sum_s: for a batched (in-process) backend each answer's latency is its
            # share of its batch's wall time, so the sum is the run's compute time
            (summary["latency_p50_s"], summary["latency_p95_s"],
             summary["latency_sum_s"]) = lat if lat else (None, None, None)
        return summary

    # -- requests and the cross-run cache -----------------------------------------------------
    def ingest_responses(self, run_id: str, responses: Sequence[GenResponse],
                         prompts: Sequence[Sequence[Message] | None] = ()) -> None:
        """Replace the run's request rows with ``responses`` (one per request index);
        ``prompts[i]``, when given, is the chat messages request i sent (shown beside the rows
        it produced)."""
        table = _request_table(run_id, responses, prompts, 0)
        with self.connect() as con:
            con.register("incoming", table)
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM requests WHERE run_id = ?", [run_id])
            con.execute(
                f"INSERT INTO requests ({', '.join(_REQUEST_COLUMNS)}) "
                f"SELECT {', '.join(_REQUEST_COLUMNS)} FROM incoming"
            )
            con.execute("COMMIT")

    # -- streaming runs: rows written in batches while the run goes on --------------------------
    def begin_streamed_run(self, run_id: str) -> bool:
        """Drop a run's request, instance and pair rows (a streaming run starts from none, so
        a resumed run that re-adds every row holds each exactly once); returns whether other
        runs' answers are stored (else the cache need not be asked). One connection."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            for table in ("requests", "instances", "pairs"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            con.execute("COMMIT")
            return con.execute("SELECT 1 FROM requests WHERE status = 'ok' LIMIT 1"
                               ).fetchone() is not None

    @staticmethod
    def row_tables(run_id: str, start: int, responses: Sequence[GenResponse],
                   prompts: Sequence[Sequence[Message] | None],
                   instances: Sequence[Instance]) -> tuple[Any, Any]:
        """One batch of a streaming run as Arrow tables (request rows ``start``, ``start + 1``,
        ... and their instances), built while generation goes on and written to the files
        :meth:`append_parquet` inserts at the end."""
        return (_request_table(run_id, responses, prompts, start),
                _instance_table(run_id, instances))

    def append_parquet(self, requests: Path, instances: Path) -> None:
        """Insert a streaming run's rows from the Parquet files it wrote (:meth:`row_tables`
        batches) in one transaction: DuckDB reads them in bounded memory, and the table is
        checkpointed once (a checkpoint after each of many small inserts grew with the table)."""
        cols = ", ".join(_REQUEST_COLUMNS)
        with self.connect() as con:
            # DuckDB's default cap is 80% of RAM, and this insert reads the whole run and
            # checks it against the primary-key index of every run. Capped, it spills to a temp
            # folder beside the database (5M rows there and 1M inserted: 180 MB RSS, 260 MB
            # uncapped; 64 MB still works), so a run's memory does not grow with the workspace.
            con.execute(f"SET memory_limit = '{_APPEND_MEMORY_MB}MB'")
            con.execute("BEGIN TRANSACTION")
            con.execute(f"INSERT INTO requests ({cols}) SELECT {cols} FROM read_parquet(?)",
                        [str(requests)])
            con.execute("INSERT INTO instances SELECT * FROM read_parquet(?)", [str(instances)])
            con.execute("COMMIT")

    def get_many(self, keys: Sequence[str]) -> dict[str, GenResponse]:
        """Successful answers stored by any run, by request key (the engine's cache)."""
        if not keys or not self.path.exists():
            return {}
        import pyarrow as pa

        wanted = pa.table({"key": list(keys)})
        with self.connect() as con:
            con.register("wanted", wanted)
            rows = con.execute(
                "SELECT key, arg_max(struct_pack(text, finish_reason, prompt_tokens, "
                "completion_tokens, latency_s, cost_usd, attempts, model, raw, created_at), "
                "created_at) AS r FROM requests "
                "WHERE status = 'ok' AND key IN (SELECT key FROM wanted) GROUP BY key"
            ).fetchall()
        out: dict[str, GenResponse] = {}
        for key, r in rows:
            out[key] = GenResponse(
                key=key, text=r["text"], finish_reason=r["finish_reason"],
                usage={"prompt_tokens": r["prompt_tokens"] or 0,
                       "completion_tokens": r["completion_tokens"] or 0},
                latency_s=r["latency_s"] or 0.0, cost_usd=r["cost_usd"] or 0.0,
                attempts=r["attempts"] or 1, model=r["model"],
                raw=orjson.loads(r["raw"]) if r["raw"] else None,
                created_at=r["created_at"] or 0.0,
            )
        return out

    # -- instances ---------------------------------------------------------------------------
    def write_instances(self, run_id: str, instances: Sequence[Instance]) -> None:
        table = _instance_table(run_id, instances)
        with self.connect() as con:
            con.register("incoming", table)
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM instances WHERE run_id = ?", [run_id])
            con.execute("INSERT INTO instances SELECT * FROM incoming")
            con.execute("COMMIT")

    # -- pairs -------------------------------------------------------------------------------
    def write_pairs(self, run_id: str, pairs: Sequence[Pair]) -> None:
        import pyarrow as pa

        def js(v: Any) -> str:
            return orjson.dumps(v).decode()

        table = pa.table({
            "run_id": pa.array([run_id] * len(pairs), pa.string()),
            "idx": pa.array([p.index for p in pairs], pa.int32()),
            "pair_id": pa.array([p.pair_id for p in pairs], pa.string()),
            "prompt": pa.array([js([m.model_dump() for m in p.prompt]) for p in pairs]),
            "chosen": pa.array([js([m.model_dump() for m in p.chosen]) for p in pairs]),
            "rejected": pa.array([js([m.model_dump() for m in p.rejected]) for p in pairs]),
            "attribute": pa.array([p.attribute for p in pairs], pa.string()),
            "margin": pa.array([p.margin for p in pairs], pa.float64()),
            "weight": pa.array([p.weight for p in pairs], pa.float64()),
            "evidence": pa.array([js(p.evidence) for p in pairs], pa.string()),
            "meta": pa.array([js(p.meta) for p in pairs], pa.string()),
        })
        with self.connect() as con:
            con.register("incoming", table)
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM pairs WHERE run_id = ?", [run_id])
            con.execute("INSERT INTO pairs SELECT * FROM incoming")
            con.execute("COMMIT")

    def read_pairs(self, run_id: str) -> list[Pair]:
        with self.connect() as con:
            cur = con.execute("SELECT * FROM pairs WHERE run_id = ? ORDER BY idx", [run_id])
            rows = _dicts(cur)
        return [Pair(index=r["idx"], pair_id=r["pair_id"], prompt=orjson.loads(r["prompt"]),
                     chosen=orjson.loads(r["chosen"]), rejected=orjson.loads(r["rejected"]),
                     attribute=r["attribute"], margin=r["margin"], weight=r["weight"],
                     evidence=orjson.loads(r["evidence"]), meta=orjson.loads(r["meta"]))
                for r in rows]


def _request_table(run_id: str, responses: Sequence[GenResponse],
                   prompts: Sequence[Sequence[Message] | None], start: int) -> Any:
    """The ``requests`` rows of ``responses`` (request ``start + i``), column by column, each
    text column redacted in one pass."""
    import pyarrow as pa

    n = len(responses)
    errs = [r.error for r in responses]
    sent = [prompts[i] if i < len(prompts) else None for i in range(n)]
    cols: dict[str, Any] = {
        "run_id": pa.array([run_id] * n, pa.string()),
        "idx": pa.array(range(start, start + n), pa.int64()),
        "key": [r.key for r in responses],
        "status": ["ok" if r.ok else "error" for r in responses],
        "error_kind": pa.array([e.kind if e else None for e in errs], pa.string()),
        "error_type": pa.array([e.type if e else None for e in errs], pa.string()),
        "error_message": pa.array(redact_many([e.message if e else None for e in errs]),
                                  pa.string()),
        "http_status": pa.array([e.status if e else None for e in errs], pa.int64()),
        "prompt_tokens": [r.usage.prompt_tokens for r in responses],
        "completion_tokens": [r.usage.completion_tokens for r in responses],
        "latency_s": pa.array([r.latency_s for r in responses], pa.float64()),
        "cost_usd": pa.array([r.cost_usd for r in responses], pa.float64()),
        "attempts": [r.attempts for r in responses],
        "finish_reason": pa.array([r.finish_reason for r in responses], pa.string()),
        "model": pa.array([r.model for r in responses], pa.string()),
        "text": pa.array(redact_many([r.text for r in responses]), pa.string()),
        # the same redactor as the response log: a gateway may echo request headers
        "raw": pa.array(redact_many([None if r.raw is None else orjson.dumps(r.raw).decode()
                                     for r in responses]), pa.string()),
        "created_at": pa.array([r.created_at for r in responses], pa.float64()),
        "prompt": pa.array(redact_many([
            None if m is None else orjson.dumps([{"role": x.role, "content": x.content}
                                                 for x in m]).decode() for m in sent]),
            pa.string()),
    }
    return pa.table(cols)


def _instance_table(run_id: str, instances: Sequence[Instance]) -> Any:
    import pyarrow as pa

    return pa.table({
        "run_id": pa.array([run_id] * len(instances), pa.string()),
        "idx": pa.array([x.index for x in instances], pa.int64()),
        "instance_id": pa.array([x.instance_id for x in instances], pa.string()),
        "messages": pa.array([orjson.dumps([{"role": m.role, "content": m.content}
                                            for m in x.messages]).decode()
                              for x in instances], pa.string()),
        "valid": pa.array([x.valid for x in instances], pa.bool_()),
        "reject_reason": pa.array([x.reject_reason for x in instances], pa.string()),
        "meta": pa.array([orjson.dumps(x.meta).decode() for x in instances], pa.string()),
    })


_REQUEST_COLUMNS = (
    "run_id", "idx", "key", "status", "error_kind", "error_type", "error_message", "http_status",
    "prompt_tokens", "completion_tokens", "latency_s", "cost_usd", "attempts", "finish_reason",
    "model", "text", "raw", "created_at", "prompt",
)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _dicts(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def run_decontaminated(curation: str | dict[str, Any] | None) -> bool:
    """Whether a run's stored curation record (JSON text or parsed) says its rows were checked
    against evaluation sets. Records written before the flag existed count as decontaminated
    when they hold per-set counts and no skip note."""
    if not curation:
        return False
    cur = orjson.loads(curation) if isinstance(curation, str) else curation
    if "decontaminated" in cur:
        return bool(cur["decontaminated"])
    return "skipped" not in cur and bool(cur.get("contaminated_by"))

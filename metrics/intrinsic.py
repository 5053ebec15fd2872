"""Intrinsic metrics of a run's data: what the data looks like before any student is trained.

A *metric family* (``stats``, ``judge``, ``reward``, ``perplexity``, ``diversity``) computes one or
more named values per run, and per instance where that makes sense, from the run's rows in the
workspace database. Families are registered like backends (``datagen.metrics`` entry points), so a
plug-in metric is computed, stored and ranked like a built-in one.

Every stored value carries its family's name, version and configuration. Its ``key`` hashes those
plus a fingerprint of the run's data (instances and request totals): asking again for a metric
whose key is stored does nothing, while re-curating a run, changing the judge or bumping a
family's version computes it afresh. Operational settings (batch sizes) are not in the key, as
they are not in request keys.

Which rows a metric sees: text metrics (judge, reward, perplexity, diversity) read the *accepted*
instances, i.e. what a student would be trained on; ``stats`` reads all of them. A preference run
without instances is read as (prompt, chosen) pairs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from datagen_core.errors import ConfigError, NotFoundError
from datagen_core.fingerprint import stable_hash
from datagen_core.records import validation_message
from datagen_core.registry import Registry
from datagen_core.workspace import Workspace
from metrics.store import Store

# Reject reasons written by curation ("curation: exact duplicate of #3", "duplicate of seed #1",
# "curation: contaminated by gsm8k #12 ...") and by validators that use the same words.
DUPLICATE_RE = r"^(curation: )?((exact|near) )?duplicate"
CONTAMINATED_RE = r"^(curation: )?contaminated"

# The user's last turn and the assistant's last turn of a chat ``messages`` JSON column.
_MSGS = "CAST(messages AS STRUCT(role VARCHAR, content VARCHAR)[])"
INSTRUCTION_SQL = f"list_filter({_MSGS}, lambda x: x.role = 'user')[-1].content"
RESPONSE_SQL = f"list_filter({_MSGS}, lambda x: x.role = 'assistant')[-1].content"


class MetricConfig(BaseModel):
    """Base of every family's settings. Fields named in ``operational`` change how fast a value
    is computed, not the value, and are left out of the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    operational: ClassVar[frozenset[str]] = frozenset()

    def semantic(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.operational))


@dataclass
class RunData:
    """The rows a text metric reads: accepted instances (or pairs), in index order."""

    run_id: str
    domain: str | None
    idx: list[int]
    instructions: list[str]
    responses: list[str]

    def __len__(self) -> int:
        return len(self.idx)


@dataclass
class MetricResult:
    """A family's output. ``values`` maps each metric name to (value, n items it is over);
    ``items`` maps a metric to per-instance rows (idx, value or None, note saying why missing);
    ``items_sql`` are SELECTs yielding (metric, idx, value, note), for items computed in DuckDB."""

    values: dict[str, tuple[float | None, int]]
    items: dict[str, list[tuple[int, float | None, str | None]]] = field(default_factory=dict)
    items_sql: list[tuple[str, list[Any]]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class MetricContext:
    """What a family may use besides the data: the store, the workspace (judge logs), injected
    backends for judge specs (tests, custom clients) by label, and progress display."""

    store: Store
    workspace: Workspace
    run_id: str
    backends: Mapping[str, Any] = field(default_factory=dict)
    progress: bool | None = None
    _data: RunData | None = None

    def data(self) -> RunData:
        if self._data is None:
            self._data = load_run_data(self.store, self.run_id)
        return self._data


class Metric(ABC):
    """A metric family. Subclasses set ``name``, ``version``, ``outputs`` and ``Config``."""

    name: ClassVar[str]
    version: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    Config: ClassVar[type[MetricConfig]]

    def __init__(self, config: MetricConfig) -> None:
        self.config = config

    @abstractmethod
    def compute(self, ctx: MetricContext) -> MetricResult: ...

    def fingerprint_extra(self, con: Any, run_id: str) -> str:
        """More of the run's data this family reads beyond :func:`data_fingerprint` (e.g. pair
        evidence), hashed into its key; empty (the default) leaves the key as it was."""
        return ""


METRICS: Registry[type[Metric]] = Registry("metric", "datagen.metrics")


def build_metric(name: str, config: MetricConfig | Mapping[str, Any] | None = None) -> Metric:
    """A family by name with its settings validated (unknown keys are an error)."""
    cls = METRICS.get(name)
    if isinstance(config, MetricConfig):
        if not isinstance(config, cls.Config):
            raise ConfigError(f"metric {name} takes {cls.Config.__name__}, "
                              f"not {type(config).__name__}")
        return cls(config)
    try:
        return cls(cls.Config.model_validate(dict(config or {})))
    except ValidationError as e:
        raise ConfigError(f"bad settings for metric {name}: {validation_message(e)}") from None


# -- the run's data --------------------------------------------------------------------------------
def run_info(con: Any, run_id: str) -> dict[str, Any]:
    row = con.execute("SELECT generator, method, domain FROM runs WHERE run_id = ?",
                      [run_id]).fetchone()
    if row is None:
        raise NotFoundError(f"no run {run_id!r}: see `datagen runs`")
    return {"generator": row[0], "method": row[1], "domain": row[2]}


def data_fingerprint(con: Any, run_id: str) -> str:
    """Changes whenever the run's instances (content, validity, reasons), pairs or request
    totals change; computed in DuckDB so it costs one scan of the run's rows."""
    inst = con.execute(
        "SELECT count(*), sum(hash(idx, instance_id, messages, valid, reject_reason)::HUGEINT)"
        " FROM instances WHERE run_id = ?", [run_id]).fetchone()
    pairs = con.execute(
        "SELECT count(*), sum(hash(idx, prompt, chosen)::HUGEINT) FROM pairs "
        "WHERE run_id = ?", [run_id]).fetchone()
    reqs = con.execute(  # cost in integer nano-dollars: a float sum's order is not fixed
        "SELECT count(*), sum(prompt_tokens), sum(completion_tokens), "
        "sum(CAST(round(cost_usd * 1e9) AS HUGEINT)) FROM requests WHERE run_id = ?",
        [run_id]).fetchone()
    return stable_hash([str(v) for v in (*(inst or ()), *(pairs or ()), *(reqs or ()))])


def load_run_data(store: Store, run_id: str) -> RunData:
    with store.connect() as con:
        info = run_info(con, run_id)
        rows = con.execute(
            f"SELECT idx, {INSTRUCTION_SQL}, {RESPONSE_SQL} FROM instances "
            "WHERE run_id = ? AND valid ORDER BY idx", [run_id]).fetchall()
        if not rows:
            rows = con.execute(
                "SELECT idx, list_filter(CAST(prompt AS STRUCT(role VARCHAR, content VARCHAR)[]),"
                " lambda x: x.role = 'user')[-1].content, "
                "CAST(chosen AS STRUCT(role VARCHAR, content VARCHAR)[])[-1].content "
                "FROM pairs WHERE run_id = ? ORDER BY idx", [run_id]).fetchall()
    return RunData(run_id=run_id, domain=info["domain"], idx=[r[0] for r in rows],
                   instructions=[r[1] or "" for r in rows], responses=[r[2] or "" for r in rows])


# -- store -----------------------------------------------------------------------------------------
def metric_key(metric: Metric, data_fp: str) -> tuple[dict[str, Any], str]:
    config = {"metric": metric.name, "version": metric.version,
              "config": metric.config.semantic()}
    return config, stable_hash({**config, "data": data_fp}, 16)


def is_stored(con: Any, run_id: str, metric: Metric, key: str) -> bool:
    row = con.execute(
        "SELECT count(DISTINCT metric) FROM intrinsic WHERE run_id = ? AND key = ?",
        [run_id, key]).fetchone()
    return bool(row and row[0] >= len(metric.outputs))


def write_result(store: Store, run_id: str, metric: Metric, config: dict[str, Any], key: str,
                 result: MetricResult) -> None:
    """Replace the rows of this (run, family, key) in one transaction."""
    import pyarrow as pa

    now = datetime.now(UTC).replace(tzinfo=None)
    names = list(result.values)
    summary = pa.table({
        "run_id": pa.array([run_id] * len(names), pa.string()),
        "metric": pa.array(names, pa.string()),
        "version": pa.array([metric.version] * len(names), pa.string()),
        "config": pa.array([orjson.dumps(config).decode()] * len(names), pa.string()),
        "key": pa.array([key] * len(names), pa.string()),
        "value": pa.array([result.values[m][0] for m in names], pa.float64()),
        "n": pa.array([result.values[m][1] for m in names], pa.int32()),
        "created_at": pa.array([now] * len(names), pa.timestamp("us")),
    })
    item_rows = [(m, i, v, note) for m, rows in result.items.items() for i, v, note in rows]
    items = pa.table({
        "run_id": pa.array([run_id] * len(item_rows), pa.string()),
        "metric": pa.array([r[0] for r in item_rows], pa.string()),
        "key": pa.array([key] * len(item_rows), pa.string()),
        "idx": pa.array([r[1] for r in item_rows], pa.int32()),
        "value": pa.array([r[2] for r in item_rows], pa.float64()),
        "note": pa.array([r[3] for r in item_rows], pa.string()),
    })
    with store.connect() as con:
        con.register("incoming_summary", summary)
        con.register("incoming_items", items)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM intrinsic_items WHERE run_id = ? AND key = ?", [run_id, key])
            con.execute("DELETE FROM intrinsic WHERE run_id = ? AND key = ?", [run_id, key])
            con.execute("INSERT INTO intrinsic SELECT * FROM incoming_summary")
            con.execute("INSERT INTO intrinsic_items SELECT * FROM incoming_items")
            for sql, params in result.items_sql:
                con.execute(
                    "INSERT INTO intrinsic_items SELECT ?, metric, ?, idx, value, note "
                    f"FROM ({sql})", [run_id, key, *params])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise


@dataclass
class IntrinsicResult:
    """What :func:`compute_intrinsic` did: ``computed`` is False when the key was stored."""

    run_id: str
    metric: str
    key: str
    computed: bool
    values: dict[str, tuple[float | None, int]]
    details: dict[str, Any] = field(default_factory=dict)


def compute_intrinsic(
    store: Store, run_id: str, metric: str | Metric, config: MetricConfig | Mapping[str, Any]
    | None = None, *, workspace: Workspace | None = None, backends: Mapping[str, Any] | None = None,
    force: bool = False, progress: bool | None = None,
) -> IntrinsicResult:
    """Compute one metric family for a run and store it, unless it is stored with this key."""
    m = metric if isinstance(metric, Metric) else build_metric(metric, config)
    ws = workspace or Workspace(store.path.parent)
    with store.connect() as con:
        run_info(con, run_id)  # a missing run is one clear line before any work
        data_fp, extra = data_fingerprint(con, run_id), m.fingerprint_extra(con, run_id)
        config_json, key = metric_key(m, stable_hash([data_fp, extra]) if extra else data_fp)
        stored = not force and is_stored(con, run_id, m, key)
    if stored:
        return IntrinsicResult(run_id, m.name, key, False, read_values(store, run_id, key))
    ctx = MetricContext(store=store, workspace=ws, run_id=run_id, backends=backends or {},
                        progress=progress)
    result = m.compute(ctx)
    missing = set(m.outputs) - set(result.values)
    if missing:
        raise RuntimeError(f"metric {m.name} did not produce {sorted(missing)}")
    write_result(store, run_id, m, config_json, key, result)
    return IntrinsicResult(run_id, m.name, key, True, result.values, result.details)


def read_values(store: Store, run_id: str, key: str | None = None
                ) -> dict[str, tuple[float | None, int]]:
    """Stored values of a run, by metric: those of one key, or the latest of each metric."""
    with store.connect() as con:
        if key is None:
            rows = con.execute("SELECT metric, value, n FROM intrinsic_latest WHERE run_id = ? "
                               "ORDER BY metric", [run_id]).fetchall()
        else:
            rows = con.execute("SELECT metric, value, n FROM intrinsic WHERE run_id = ? AND "
                               "key = ? ORDER BY metric", [run_id, key]).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def read_items(store: Store, run_id: str, metric: str) -> list[dict[str, Any]]:
    """Per-instance rows (idx, value, note) of a metric's latest computation."""
    with store.connect() as con:
        cur = con.execute(
            "SELECT idx, value, note FROM intrinsic_items WHERE run_id = ? AND metric = ? AND "
            "key = (SELECT arg_max(key, created_at) FROM intrinsic WHERE run_id = ? AND "
            "metric = ?) ORDER BY idx", [run_id, metric, run_id, metric])
        return [{"idx": r[0], "value": r[1], "note": r[2]} for r in cur.fetchall()]


def mean_of(values: Sequence[float | None]) -> tuple[float | None, int]:
    got = [v for v in values if v is not None]
    return (sum(got) / len(got) if got else None), len(got)


# -- stats: rates, lengths, tokens and cost from the tables ----------------------------------------
class StatsConfig(MetricConfig):
    pass


class RunStats(Metric):
    """Validity, duplicate and contamination rates (over all instances, from reject reasons),
    the share of accepted rows verified correct against their seeds (``accepted_correct``, for
    rows that record ``correct``: response generation on seeds with gold answers or tests),
    mean instruction and response lengths in characters (accepted instances, per item too), and
    tokens and cost per accepted instance (from the requests table). All in DuckDB: no row
    crosses into Python, so it costs one scan even for runs of millions of rows."""

    name = "stats"
    version = "2"  # 2: accepted_correct
    outputs = ("validity_rate", "duplicate_rate", "contamination_rate", "instruction_chars",
               "response_chars", "tokens_per_instance", "cost_per_instance", "accepted_correct")
    Config = StatsConfig

    def compute(self, ctx: MetricContext) -> MetricResult:
        run_id = ctx.run_id
        with ctx.store.connect() as con:
            row = con.execute(
                f"""SELECT count(*), count(*) FILTER (WHERE valid),
                    count(*) FILTER (WHERE regexp_matches(reject_reason, '{DUPLICATE_RE}')),
                    count(*) FILTER (WHERE regexp_matches(reject_reason, '{CONTAMINATED_RE}')),
                    avg(length({INSTRUCTION_SQL})) FILTER (WHERE valid),
                    avg(length({RESPONSE_SQL})) FILTER (WHERE valid),
                    count(*) FILTER (WHERE valid AND json_extract(meta, '$.correct') IS NOT NULL
                                     AND json_type(json_extract(meta, '$.correct')) = 'BOOLEAN'),
                    count(*) FILTER (WHERE valid
                                     AND json_extract(meta, '$.correct')::VARCHAR = 'true')
                FROM instances WHERE run_id = ?""", [run_id]).fetchone()
            req = con.execute(
                "SELECT sum(prompt_tokens + completion_tokens), sum(cost_usd) FROM requests "
                "WHERE run_id = ?", [run_id]).fetchone()
        assert row is not None and req is not None
        n, n_valid, n_dup, n_contam, instr_len, resp_len, n_checked, n_correct = row
        tokens, cost = req

        def rate(k: int) -> float | None:
            return k / n if n else None

        def per(total: Any) -> float | None:
            return float(total) / n_valid if n_valid and total is not None else None

        items_sql = (
            f"SELECT unnest(['instruction_chars', 'response_chars']) AS metric, idx, "
            f"unnest([length({INSTRUCTION_SQL}), length({RESPONSE_SQL})])::DOUBLE AS value, "
            "NULL AS note FROM instances WHERE run_id = ? AND valid")
        return MetricResult(
            values={
                "validity_rate": (rate(n_valid), n),
                "duplicate_rate": (rate(n_dup), n),
                "contamination_rate": (rate(n_contam), n),
                "instruction_chars": (instr_len, n_valid),
                "response_chars": (resp_len, n_valid),
                "tokens_per_instance": (per(tokens), n_valid),
                "cost_per_instance": (per(cost), n_valid),
                # accepted rows verified correct against their seed (gold answer, tests,
                # instruction checks), of those that could be checked
                "accepted_correct": (n_correct / n_checked if n_checked else None, n_checked),
            },
            items_sql=[(items_sql, [run_id])],
        )

"""What a run writes (``data.parquet``, ``data.jsonl``, ``rejected.jsonl``, ``pairs.jsonl``,
``rejected-pairs.jsonl``, each replaced atomically) and how its rows are exported."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson

from datagen_core.errors import ConfigError
from datagen_core.files import parquet_bytes, write_output
from datagen_core.records import Instance, Pair
from metrics.store import Store


def _instance_rows(instances: list[Instance]) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": m.role, "content": m.content} for m in x.messages],
         "instance_id": x.instance_id,
         "index": x.index, "meta": orjson.dumps(x.meta).decode()}
        for x in instances
    ]


def write_data(run_dir: Path, instances: list[Instance]) -> None:
    """data.parquet / data.jsonl (accepted rows, SFT-ready) and rejected.jsonl, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    valid = [x for x in instances if x.valid]
    tmp = run_dir / "data.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(_instance_rows(valid), schema=data_schema()), tmp)
    tmp.replace(run_dir / "data.parquet")
    _write_jsonl(run_dir / "data.jsonl", _instance_rows(valid))
    _write_jsonl(run_dir / "rejected.jsonl", [x.model_dump(mode="json") for x in instances
                                               if not x.valid])


def pair_rows(pairs: list[Pair]) -> list[dict[str, Any]]:
    """Pairs as TRL's DPOTrainer reads them: conversational prompt/chosen/rejected, plus
    provenance columns (attribute, margin, weight) that trainers ignore."""
    return [
        {"prompt": [m.model_dump() for m in p.prompt],
         "chosen": [m.model_dump() for m in p.chosen],
         "rejected": [m.model_dump() for m in p.rejected],
         "pair_id": p.pair_id, "attribute": p.attribute, "margin": p.margin, "weight": p.weight}
        for p in pairs
    ]


def write_pairs(run_dir: Path, pairs: list[Pair], dropped: list[Pair] | None = None) -> None:
    """pairs.jsonl (kept pairs) and rejected-pairs.jsonl (pairs curation dropped, the reason in
    ``meta.dropped``), atomically; a file with nothing to hold is not written."""
    for name, group in (("pairs.jsonl", pairs), ("rejected-pairs.jsonl", dropped or [])):
        if group:
            _write_jsonl(run_dir / name, [{**r, "evidence": p.evidence, "meta": p.meta}
                                          for r, p in zip(pair_rows(group), group)])
        elif name == "rejected-pairs.jsonl":
            (run_dir / name).unlink(missing_ok=True)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        for r in rows:
            f.write(orjson.dumps(r) + b"\n")
    tmp.replace(path)


@functools.cache
def data_schema() -> Any:
    """data.parquet's Arrow schema (built on first use: pyarrow is not imported at start-up)."""
    import pyarrow as pa

    msg = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([("messages", pa.list_(msg)), ("instance_id", pa.string()),
                      ("index", pa.int64()), ("meta", pa.string())])



EXPORT_FORMATS = ("jsonl", "parquet")


def export_run(
    run_id: str, out: str | Path, fmt: str | None = None, *,
    include_rejected: bool = False, workspace: str | Path | None = None,
) -> Path:
    """Write a run's instances (chat ``messages`` rows) as JSONL or Parquet to ``out``."""
    store = Store.open_existing(workspace)
    rid = store.resolve_run(run_id)
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".") or "jsonl"
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    rows = store.instance_rows(rid, include_rejected)
    if fmt == "jsonl":
        return write_output(out, (orjson.dumps(r) + b"\n" for r in rows))
    return write_output(out, parquet_bytes(_flat(rows)))


def _flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for columnar forms (parquet, the Hub): ``meta`` as JSON text, its shape varies."""
    return [{**r, "meta": orjson.dumps(r["meta"]).decode()} for r in rows]


def push_run(run_id: str, repo_id: str, *, include_rejected: bool = False,
             card_only: bool = False, workspace: str | Path | None = None) -> str:
    """Push a run's rows to the Hub dataset ``repo_id`` (``org/name``) with a dataset card
    (:mod:`datagen.hub`: generator, method, run, curation, decontamination, PGR);
    ``card_only`` updates just the card. Returns the repo id."""
    import datasets

    from datagen.hub import dataset_card, push, run_facts

    store = Store.open_existing(workspace)
    rid = store.resolve_run(run_id)
    rows = _flat(store.instance_rows(rid, include_rejected))
    if not include_rejected:  # every row is valid: the columns would say nothing
        rows = [{k: v for k, v in r.items() if k not in ("valid", "reject_reason")}
                for r in rows]
    if not rows:
        from datagen_core.errors import InputError

        raise InputError(f"run {rid} has no rows to push (see `datagen runs show {rid}`)")
    card = dataset_card(run_facts(rid, workspace), "rows", len(rows), name=repo_id, pushed=True)
    push(repo_id, None if card_only else datasets.Dataset.from_list(rows), card)
    return repo_id

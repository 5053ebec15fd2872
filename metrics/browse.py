"""Read-only queries behind ``datagen serve``: pages of a run's rows, one row beside the request
that produced it, pages of pairs, and the same seed row as answered by several runs.

Pages are cut in DuckDB, never in Python: rows page by key (``idx > after``, ``idx < before``,
the primary key's second column), so the thousandth page of a million-row run costs one page of
rows, and long texts are cut to previews in SQL, so a page of long answers stays small. Only
the row page reads a row's full text, its prompt and its raw response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from metrics.store import REASON_KIND, Store, _dicts

PREVIEW_CHARS = 300
COMPARE_CHARS = 4000
#: a row's seed, for lining up runs over the same seed set: the id the method kept (seed,
#: ALFA row, MACS source), else the first message; per attribute where the method makes one
#: row per attribute
SEED_KEY = ("coalesce(meta->>'$.seed_id', meta->>'$.row_id', meta->>'$.source_id', "
            "json_extract_string(messages, '$[0].content')) || coalesce(' · ' || "
            "(meta->>'$.attribute'), '')")
_TEXT = "array_to_string(json_extract_string(messages, '$[*].content'), chr(10))"


@dataclass
class Page:
    """One page of rows in ``idx`` order, where it starts among the ``total`` matching rows,
    and the keys of the neighbouring pages (None at either end)."""

    rows: list[dict[str, Any]]
    total: int
    start: int
    before: int | None  # pass as ``before=`` for the previous page
    after: int | None  # pass as ``after=`` for the next page


def _page(con: Any, table: str, cols: str, where: list[str], params: list[Any],
          after: int | None, before: int | None, limit: int) -> Page:
    cond = " AND ".join(where)
    rows: list[dict[str, Any]] = []
    if before is not None:
        rows = _dicts(con.execute(f"SELECT {cols} FROM {table} WHERE {cond} AND idx < ? "
                                  "ORDER BY idx DESC LIMIT ?", [*params, before, limit]))[::-1]
    if before is None or len(rows) < limit:  # the first page is always full
        rows = _dicts(con.execute(f"SELECT {cols} FROM {table} WHERE {cond} AND idx > ? "
                                  "ORDER BY idx LIMIT ?",
                                  [*params, -1 if after is None or before is not None else after,
                                   limit]))
    row = con.execute(f"SELECT count(*), count(*) FILTER (WHERE idx < ?), "
                      f"count(*) FILTER (WHERE idx > ?) FROM {table} WHERE {cond}",
                      [rows[0]["idx"] if rows else -1, rows[-1]["idx"] if rows else -1,
                       *params]).fetchone()
    total, start, later = row if row else (0, 0, 0)
    return Page(rows, total, start, rows[0]["idx"] if rows and start else None,
                rows[-1]["idx"] if rows and later else None)


def run_rows(store: Store) -> list[dict[str, Any]]:
    """Every run, newest first, with its counts, tokens, cost and source."""
    with store.connect() as con:
        return _dicts(con.execute(
            "SELECT run_id, created_at, status, generator, method, domain, source, n_requests, "
            "n_ok, n_failed, n_reused, n_instances, n_valid, n_pairs, "
            "prompt_tokens + completion_tokens AS tokens, cost_usd, error "
            "FROM runs ORDER BY created_at DESC, run_id"))


def instance_page(store: Store, run_id: str, *, valid: bool | None = True,
                  reason: str | None = None, search: str | None = None,
                  after: int | None = None, before: int | None = None,
                  limit: int = 50) -> Page:
    """A page of a run's rows (accepted, rejected or both), optionally of one rejection kind
    (as ``Store.run_summary`` counts them) and containing ``search`` (any case, in any
    message); each row with previews of its first and last message."""
    where: list[str] = ["run_id = ?"]
    params: list[Any] = [run_id]
    if valid is not None:
        where.append("valid = ?")
        params.append(valid)
    if reason:
        where.append(f"{REASON_KIND} = ?")
        params.append(reason)
    if search:
        where.append(f"contains(lower({_TEXT}), lower(?))")
        params.append(search)
    cols = (f"idx, valid, reject_reason, "
            f"left(json_extract_string(messages, '$[0].content'), {PREVIEW_CHARS}) AS first, "
            f"left(json_extract_string(messages, '$[#-1].content'), {PREVIEW_CHARS}) AS last, "
            "json_array_length(messages) AS n_messages")
    with store.connect() as con:
        return _page(con, "instances", cols, where, params, after, before, limit)


def instance_detail(store: Store, run_id: str, idx: int) -> dict[str, Any] | None:
    """One row in full, with the request that produced it (matched by the request key the
    method kept in the row's ``meta``): the prompt sent, the raw response, tokens, latency."""
    with store.connect() as con:
        rows = _dicts(con.execute(
            "SELECT i.idx, i.instance_id, i.messages, i.valid, i.reject_reason, i.meta, "
            "q.idx AS request_idx, q.prompt, q.text AS response, q.raw, q.status, "
            "q.finish_reason, q.error_type, q.error_message, q.prompt_tokens, "
            "q.completion_tokens, q.latency_s, q.cost_usd, q.model, q.attempts "
            "FROM instances i LEFT JOIN requests q ON q.run_id = i.run_id "
            "AND q.key = i.meta->>'$.key' WHERE i.run_id = ? AND i.idx = ? "
            "ORDER BY q.idx LIMIT 1", [run_id, idx]))
    if not rows:
        return None
    row = rows[0]
    for k in ("messages", "meta", "prompt", "raw"):
        row[k] = orjson.loads(row[k]) if row[k] is not None else None
    return row


def pair_page(store: Store, run_id: str, *, attribute: str | None = None,
              annotator: str | None = None, after: int | None = None,
              before: int | None = None, limit: int = 20) -> Page:
    """A page of a run's pairs, decoded, each with ``label``: ``annotator``'s label, if any."""
    where: list[str] = ["run_id = ?"]
    params: list[Any] = [run_id]
    if attribute:
        where.append("attribute = ?")
        params.append(attribute)
    with store.connect() as con:
        page = _page(con, "pairs", "*", where, params, after, before, limit)
        labels = dict(con.execute(
            "SELECT pair_id, label FROM labels WHERE run_id = ? AND annotator = ? "
            "AND list_contains(?, pair_id)",
            [run_id, annotator, [r["pair_id"] for r in page.rows]]).fetchall()
                      ) if annotator and page.rows else {}
    for r in page.rows:
        _decode_pair(r)["label"] = labels.get(r["pair_id"])
    return page


def neighbours(store: Store, table: str, run_id: str, idx: int) -> tuple[int | None, int | None]:
    """The indexes just before and after ``idx`` among a run's rows or pairs (None at an end),
    for previous/next links that hold when indexes have gaps."""
    if table not in ("instances", "pairs"):
        raise ValueError(f"no neighbours in {table!r}")
    with store.connect() as con:
        row = con.execute(f"SELECT max(idx) FILTER (WHERE idx < ?), min(idx) FILTER (WHERE "
                          f"idx > ?) FROM {table} WHERE run_id = ?", [idx, idx, run_id]).fetchone()
    return (row[0], row[1]) if row else (None, None)


def pair_at(store: Store, run_id: str, idx: int) -> dict[str, Any] | None:
    """One pair, decoded."""
    with store.connect() as con:
        rows = _dicts(con.execute("SELECT * FROM pairs WHERE run_id = ? AND idx = ?",
                                  [run_id, idx]))
    return _decode_pair(rows[0]) if rows else None


def _decode_pair(row: dict[str, Any]) -> dict[str, Any]:
    for k in ("prompt", "chosen", "rejected", "evidence", "meta"):
        row[k] = orjson.loads(row[k]) if row.get(k) is not None else None
    return row


def compare_page(store: Store, run_ids: Sequence[str], offset: int = 0, limit: int = 20
                 ) -> tuple[list[dict[str, Any]], int]:
    """Seeds answered by at least two of ``run_ids``, in the order the first run met them,
    each with every run's first row for it; and how many such seeds there are."""
    ids = list(run_ids)
    rows_sql = (f"SELECT run_id, idx, {SEED_KEY} AS seed, messages, valid, reject_reason "
                "FROM instances WHERE list_contains(?, run_id)")
    shared = "SELECT seed, min(idx) AS first FROM r GROUP BY seed HAVING count(DISTINCT run_id) > 1"
    with store.connect() as con:
        found = con.execute(f"WITH r AS ({rows_sql}) SELECT count(*) FROM ({shared})",
                            [ids]).fetchone()
        cur = con.execute(
            f"WITH r AS ({rows_sql}), s AS ({shared} ORDER BY first, seed LIMIT ? OFFSET ?) "
            "SELECT s.seed, s.first, r.run_id, arg_min(struct_pack("
            "idx := r.idx, valid := r.valid, reason := r.reject_reason, "
            "instruction := left(json_extract_string(r.messages, '$[0].content'), ?), "
            "answer := left(json_extract_string(r.messages, '$[#-1].content'), ?), "
            "n_messages := json_array_length(r.messages)), r.idx) AS x "
            "FROM s JOIN r USING (seed) GROUP BY ALL ORDER BY s.first, s.seed",
            [ids, limit, offset, COMPARE_CHARS, COMPARE_CHARS])
        got = cur.fetchall()
    seeds: dict[str, dict[str, Any]] = {}
    for seed, _first, run_id, x in got:
        entry = seeds.setdefault(seed, {"seed": seed, "instruction": x["instruction"],
                                        "answers": {}})
        entry["answers"][run_id] = x
    return list(seeds.values()), int(found[0]) if found else 0

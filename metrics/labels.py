"""People's labels on preference pairs (the ``labels`` table, migration 7).

A label says which side of a pair a person preferred, ``chosen``, ``rejected`` or ``tie``, in
the pair's own terms rather than as the A or B they saw: the labelling page shuffles the sides
per pair (``shown_first`` records which was A), so a label reads the same whatever the order,
and agreement with the method's judge is ``label = 'chosen'``. Labels are keyed by pair id, so
they survive a re-run that keeps the pair, and by annotator, so two people can label one run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from datagen_core.errors import ConfigError
from metrics.store import Store, _dicts

LABELS = ("chosen", "rejected", "tie")


def write_label(store: Store, *, run_id: str, pair_id: str, idx: int, annotator: str,
                label: str, shown_first: str) -> None:
    """Store (or replace) one annotator's label of one pair, at once."""
    if label not in LABELS or shown_first not in LABELS[:2]:
        raise ConfigError(f"a label is one of {', '.join(LABELS)} (got {label!r}) and the side "
                          f"shown first chosen or rejected (got {shown_first!r})")
    now = datetime.now(UTC).replace(tzinfo=None)
    with store.connect(read_only=False) as con:
        con.execute(
            "INSERT INTO labels (run_id, pair_id, idx, annotator, label, shown_first, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, pair_id, annotator) DO UPDATE "
            "SET idx = excluded.idx, label = excluded.label, shown_first = excluded.shown_first, "
            "created_at = excluded.created_at",
            [run_id, pair_id, idx, annotator, label, shown_first, now])


def first_unlabelled(store: Store, run_id: str, annotator: str) -> int | None:
    """The index of the run's first pair this annotator has not labelled (None: all are)."""
    with store.connect() as con:
        row = con.execute(
            "SELECT min(idx) FROM pairs WHERE run_id = ? AND pair_id NOT IN "
            "(SELECT pair_id FROM labels WHERE run_id = ? AND annotator = ?)",
            [run_id, run_id, annotator]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def label_counts(store: Store, run_id: str, annotator: str) -> dict[str, int]:
    """How many pairs the run has, and this annotator's labels of them by kind."""
    with store.connect() as con:
        row = con.execute(
            "SELECT count(*), count(l.label), count(*) FILTER (WHERE l.label = 'chosen'), "
            "count(*) FILTER (WHERE l.label = 'rejected'), count(*) FILTER (WHERE l.label = "
            "'tie') FROM pairs p LEFT JOIN labels l ON l.run_id = p.run_id AND "
            "l.pair_id = p.pair_id AND l.annotator = ? WHERE p.run_id = ?",
            [annotator, run_id]).fetchone()
    keys = ("pairs", "labelled", "chosen", "rejected", "tie")
    return dict(zip(keys, row or (0,) * len(keys)))


def read_labels(store: Store, run_id: str, annotator: str | None = None,
                pair_id: str | None = None) -> list[dict[str, Any]]:
    """The labels of a run's pairs (of one annotator, or all; of one pair, or all), in pair
    order."""
    where, params = "run_id = ?", [run_id]
    for column, value in (("annotator", annotator), ("pair_id", pair_id)):
        if value is not None:
            where += f" AND {column} = ?"
            params.append(value)
    with store.connect() as con:
        return _dicts(con.execute(
            "SELECT run_id, pair_id, idx, annotator, label, shown_first, created_at FROM labels "
            f"WHERE {where} ORDER BY idx, annotator", params))


def write_labels(store: Store, run_id: str, rows: list[dict[str, Any]], annotator: str) -> int:
    """Store (or replace) many labels of one annotator in one transaction (a file import):
    each row has ``pair_id``, ``idx``, ``label`` and ``shown_first``. Returns how many."""
    for r in rows:
        if r["label"] not in LABELS or r["shown_first"] not in LABELS[:2]:
            raise ConfigError(f"a label is one of {', '.join(LABELS)} (got {r['label']!r}) and "
                              f"the side shown first chosen or rejected (got "
                              f"{r['shown_first']!r})")
    now = datetime.now(UTC).replace(tzinfo=None)
    with store.connect(read_only=False) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            con.executemany(
                "INSERT INTO labels (run_id, pair_id, idx, annotator, label, shown_first, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, pair_id, "
                "annotator) DO UPDATE SET idx = excluded.idx, label = excluded.label, "
                "shown_first = excluded.shown_first, created_at = excluded.created_at",
                [[run_id, r["pair_id"], r["idx"], annotator, r["label"], r["shown_first"], now]
                 for r in rows])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return len(rows)


def labelled_runs(store: Store) -> list[str]:
    """Runs with at least one label of a pair that still exists, in id order (the learned
    routing predictor trains on all of them)."""
    with store.connect() as con:
        return [r[0] for r in con.execute(
            "SELECT DISTINCT l.run_id FROM labels l JOIN pairs p ON p.run_id = l.run_id AND "
            "p.pair_id = l.pair_id ORDER BY 1").fetchall()]


def consensus_labels(store: Store, run_id: str) -> dict[str, str]:
    """pair id -> the label of the majority of its annotators; a split vote with no single
    most common label is ``tie`` (people did not agree, so neither side is preferred)."""
    from collections import Counter

    votes: dict[str, Counter[str]] = {}
    for r in read_labels(store, run_id):
        votes.setdefault(r["pair_id"], Counter())[r["label"]] += 1
    out: dict[str, str] = {}
    for pid, c in votes.items():
        top = c.most_common()
        out[pid] = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else "tie"
    return out

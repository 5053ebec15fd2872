"""Ranking generators: per method x domain cell and overall, from the ``leaderboard`` views.

The views (migration 6) join three small tables, ``pgr`` (one row per run and task), ``runs``
(token and cost totals written at run end) and ``intrinsic`` (metrics computed per run), so a
leaderboard never scans the instances: its cost does not grow with the size of the data. The
overall view averages each generator's domain PGRs over the cells it was benchmarked in and takes
its CI from the mean of the cells' stored bootstrap replicates.

Each row says whether its data was decontaminated against the evaluation sets (every cell of
a generator, overall): a generator ranked on data never checked for leaks is marked.

Separability is decided here, in Python, from the same replicates: a row is marked as not
separable from the row ranked just above it when the 95% CI of their PGR difference contains 0.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from metrics.pgr import DOMAIN_TASK, difference_ci
from metrics.store import Store, run_decontaminated

# Metrics newer than the leaderboard views, read from ``intrinsic_latest`` beside them (per run;
# a generator's overall row averages its cells): the stats family's verified share, and the pair
# metrics that tell preference data apart (metrics.pair_metrics).
LATE_METRICS = ("accepted_correct", "margin_median", "chosen_longer_chars",
                "both_order_consistency", "judge_rm_agreement")

# Intrinsic columns shown beside PGR, in the order a reader scans them.
INTRINSIC_COLUMNS = ("quality", "difficulty", "accepted_correct", "reward", "perplexity",
                     "instruction_diversity",
                     "response_diversity", "distinct_2", "validity_rate", "duplicate_rate",
                     "contamination_rate", "response_chars", "tokens_per_instance",
                     "cost_per_instance", "margin_median", "chosen_longer_chars",
                     "both_order_consistency", "judge_rm_agreement")


def _dicts(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def cells(store: Store, method: str | None = None, domain: str | None = None
          ) -> list[dict[str, Any]]:
    """Rows of the ``leaderboard`` view (one per run), ranked within method x domain, each with
    ``separable`` (from the row ranked above it in its cell; None for a cell's first row)."""
    where, params = [], []
    if method:
        where.append("method = ?")
        params.append(method)
    if domain:
        where.append("domain = ?")
        params.append(domain)
    sql = "SELECT * FROM leaderboard"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY method, domain, rank, generator"
    with store.connect() as con:
        rows = _dicts(con.execute(sql, params))
        boots = dict(con.execute(
            "SELECT run_id, boot FROM pgr WHERE task = ? AND run_id IN (SELECT run_id FROM "
            "leaderboard)", [DOMAIN_TASK]).fetchall()) if rows else {}
        clean = {rid: run_decontaminated(cur) for rid, cur in con.execute(
            "SELECT run_id, curation FROM runs").fetchall()} if rows else {}
        late = _late_metrics(con) if rows else {}
    prev: dict[str, Any] | None = None
    for r in rows:
        r["decontaminated"] = clean.get(r["run_id"], False)
        for name in LATE_METRICS:
            r[name] = late.get(name, {}).get(r["run_id"])
        same_cell = prev is not None and (prev["method"], prev["domain"]) == (r["method"],
                                                                            r["domain"])
        r["separable"] = (_separable(boots[prev["run_id"]], boots[r["run_id"]])
                          if same_cell and prev is not None else None)
        prev = r
    return rows


def overall(store: Store) -> list[dict[str, Any]]:
    """Rows of the ``leaderboard_overall`` view (one per generator), ranked by mean PGR, each
    with ``separable`` from the generator ranked above it."""
    import numpy as np

    with store.connect() as con:
        rows = _dicts(con.execute("SELECT * FROM leaderboard_overall ORDER BY rank, generator"))
        cell_boots = con.execute("SELECT generator, boot FROM pgr WHERE task = ?",
                                 [DOMAIN_TASK]).fetchall()
        late = _late_metrics(con)
        run_of = con.execute("SELECT generator, run_id FROM pgr WHERE task = ?",
                             [DOMAIN_TASK]).fetchall()
        dirty = {g for g, cur in con.execute(
            "SELECT DISTINCT p.generator, r.curation FROM pgr p JOIN runs r USING (run_id) "
            "WHERE p.task = ?", [DOMAIN_TASK]).fetchall() if not run_decontaminated(cur)}
    by_gen: dict[str, list[Any]] = defaultdict(list)
    for gen, boot in cell_boots:
        by_gen[gen].append(np.array([np.nan if x is None else x for x in boot], dtype=float))
    reps = {}
    for g, vs in by_gen.items():  # as the view: replicate b of every cell, shortest length
        n = min(len(v) for v in vs)
        reps[g] = np.nanmean(np.vstack([v[:n] for v in vs]), axis=0) if len(vs) > 1 else vs[0]
    for i, r in enumerate(rows):
        r["separable"] = (_separable(reps[rows[i - 1]["generator"]], reps[r["generator"]])
                          if i else None)
        r["decontaminated"] = r["generator"] not in dirty  # every cell of it was
        for name in LATE_METRICS:
            got = late.get(name, {})
            vals = [got[rid] for g, rid in run_of if g == r["generator"] and rid in got]
            r[name] = sum(vals) / len(vals) if vals else None
    return rows


def _late_metrics(con: Any) -> dict[str, dict[str, float]]:
    """Per metric of :data:`LATE_METRICS`, per run, its latest value; read here rather than in
    the views, which predate them."""
    found: dict[str, dict[str, float]] = {}
    for metric, rid, v in con.execute(
            "SELECT metric, run_id, value FROM intrinsic_latest WHERE list_contains(?, metric) "
            "AND value IS NOT NULL", [list(LATE_METRICS)]).fetchall():
        found.setdefault(metric, {})[rid] = v
    return found


def _separable(a: Any, b: Any) -> bool:
    fa = [float("nan") if x is None else x for x in a]
    fb = [float("nan") if x is None else x for x in b]
    return difference_ci(fa, fb)[2]


def leaderboard(store: Store, by: str = "cell", method: str | None = None,
                domain: str | None = None) -> list[dict[str, Any]]:
    """``by="cell"``: per method x domain; ``by="overall"``: per generator."""
    if by == "overall":
        return overall(store)
    if by == "cell":
        return cells(store, method, domain)
    from datagen_core.errors import ConfigError

    raise ConfigError(f"unknown leaderboard grouping {by!r}: use cell or overall")

"""Performance Gap Recovered, with paired bootstrap confidence intervals over evaluation items.

    PGR = 100 * (score(student) - score(base)) / (score(reference) - score(base))

per task, where a score is the mean item score over the items that all three evaluations share
(an item one of them failed to score is left out of all three, so the three means are over the
same questions). A domain's PGR is the mean of its tasks' PGRs.

Confidence intervals: resample the shared item ids with replacement, recompute the three means
and the PGR, and take the 2.5th and 97.5th percentiles of ``n_boot`` replicates. The three
evaluations are resampled *together* (paired), which removes the item-difficulty variance they
share. The resampling is vectorised (a replicates x items index matrix, in chunks) and seeded
from (seed, task, item ids): two generators evaluated on the same items of a task get the same
index matrix, so the difference of their stored replicates is a paired bootstrap of the PGR
difference; when the item sets differ the replicates are independent and the difference is an
(unpaired, wider) bootstrap. A replicate where the reference and the base tie is undefined (NaN)
and is left out of the percentiles.

The replicates are stored with each row (``pgr.boot``), so the leaderboard's overall intervals
and "not separable" marks need no second pass over the item scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from datagen_core.errors import DatagenError, InputError, NotFoundError
from datagen_core.fingerprint import stable_hash
from metrics.store import Store

DOMAIN_TASK = "*"  # the task name of a run's domain-mean row
CI_LEVEL = 0.95
_CHUNK_CELLS = 4_000_000  # index-matrix entries per chunk: ~32 MB of int64


class DegeneratePGRError(DatagenError):
    """The reference does not differ from the base, so no gap exists to recover."""


@dataclass
class EvalScores:
    eval_id: str
    model: str | None
    task: str
    items: dict[str, float]


@dataclass
class TaskPGR:
    task: str
    pgr: float
    ci_low: float
    ci_high: float
    n_items: int
    student: EvalScores
    base: EvalScores
    reference: EvalScores
    student_score: float
    base_score: float
    reference_score: float
    items_key: str
    reps: Any = field(repr=False)  # numpy array of n_boot replicates (NaN = undefined)


@dataclass
class PGRResult:
    run_id: str
    generator: str
    method: str | None
    domain: str
    tasks: list[TaskPGR]
    pgr: float
    ci_low: float
    ci_high: float
    n_items: int
    #: tasks left out of the domain PGR, with why (no gap to recover, nothing scored)
    skipped: dict[str, str] = field(default_factory=dict)


# -- arithmetic ------------------------------------------------------------------------------------
def pgr_value(student: float, base: float, reference: float) -> float:
    return 100.0 * (student - base) / (reference - base)


def bootstrap_seed(seed: int, task: str, items_key: str) -> int:
    """The task's resampling seed: equal for evaluations over the same items, so bootstraps of
    different generators are paired."""
    return int(stable_hash([seed, task, items_key], 15), 16)


def bootstrap_pgr(student: Any, base: Any, reference: Any, *, n_boot: int, seed: int) -> Any:
    """``n_boot`` PGR replicates from item scores aligned by item (1-d arrays of equal length).

    Equivalent to the loop ``rng = default_rng(seed); for b in range(n_boot): idx =
    rng.integers(0, n, n); ...`` (the same stream of indices, drawn in chunks of rows)."""
    import numpy as np

    s, b, r = (np.asarray(x, dtype=np.float64) for x in (student, base, reference))
    n = len(s)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    rows = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, n_boot, rows):
        k = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        sm, bm, rm = s[idx].mean(axis=1), b[idx].mean(axis=1), r[idx].mean(axis=1)
        gap = rm - bm
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start: start + k] = np.where(gap != 0, 100.0 * (sm - bm) / gap, np.nan)
    return out


def percentile_ci(reps: Any, level: float = CI_LEVEL) -> tuple[float, float]:
    import numpy as np

    reps = np.asarray(reps, dtype=np.float64)
    if not np.isfinite(reps).any():
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(reps, [tail, 100 - tail])
    return float(lo), float(hi)


def difference_ci(reps_a: Any, reps_b: Any, level: float = CI_LEVEL
                  ) -> tuple[float, float, bool]:
    """CI of PGR(a) - PGR(b) from two replicate vectors, and whether it excludes 0 (separable).
    Vectors of different lengths (different ``n_boot``) are compared over the shorter one."""
    import numpy as np

    a, b = np.asarray(reps_a, dtype=np.float64), np.asarray(reps_b, dtype=np.float64)
    n = min(len(a), len(b))
    d = a[:n] - b[:n]
    lo, hi = percentile_ci(d, level)
    return lo, hi, bool(lo > 0 or hi < 0)


def task_pgr(student: EvalScores, base: EvalScores, reference: EvalScores, *, n_boot: int = 1000,
             seed: int = 0) -> TaskPGR:
    """PGR and its paired-bootstrap CI on one task; raises :class:`DegeneratePGRError`."""
    import numpy as np

    task = student.task
    if base.eval_id == reference.eval_id:
        raise DegeneratePGRError(
            f"PGR is undefined on {task}: the base and the reference are the same evaluation "
            f"({base.eval_id}); name a stronger reference student")
    shared = sorted(set(student.items) & set(base.items) & set(reference.items))
    if not shared:
        raise InputError(f"no item of {task} is scored in all of {student.eval_id}, "
                         f"{base.eval_id} and {reference.eval_id}: were they run on the same set?")
    s = np.array([student.items[i] for i in shared])
    b = np.array([base.items[i] for i in shared])
    r = np.array([reference.items[i] for i in shared])
    sm, bm, rm = float(s.mean()), float(b.mean()), float(r.mean())
    if abs(rm - bm) < 1e-12:
        raise DegeneratePGRError(
            f"PGR is undefined on {task}: the reference ({_label(reference)}) and the base "
            f"({_label(base)}) both score {bm:.4f} on the {len(shared)} shared items; name a "
            "reference that beats the base")
    if rm < bm:  # the "gap" would point the wrong way: a student worse than the base would
        # recover part of it, and one equal to the reference would score 100
        raise DegeneratePGRError(
            f"PGR is undefined on {task}: the reference ({_label(reference)}) scores {rm:.4f}, "
            f"below the base ({_label(base)}, {bm:.4f}) on the {len(shared)} shared items")
    items_key = stable_hash(shared, 16)
    reps = bootstrap_pgr(s, b, r, n_boot=n_boot, seed=bootstrap_seed(seed, task, items_key))
    lo, hi = percentile_ci(reps)
    return TaskPGR(task=task, pgr=pgr_value(sm, bm, rm), ci_low=lo, ci_high=hi,
                   n_items=len(shared), student=student, base=base, reference=reference,
                   student_score=sm, base_score=bm, reference_score=rm, items_key=items_key,
                   reps=reps)


def _label(e: EvalScores) -> str:
    return f"{e.model} [{e.eval_id}]" if e.model else e.eval_id


# -- reading evaluations ---------------------------------------------------------------------------
def load_eval(con: Any, eval_id: str) -> EvalScores | None:
    rows = con.execute(
        "SELECT item_id, avg(score), any_value(task) FROM item_scores WHERE eval_id = ? AND "
        "score IS NOT NULL GROUP BY item_id", [eval_id]).fetchall()
    if not rows:
        return None
    model = con.execute("SELECT any_value(model) FROM scores WHERE eval_id = ?",
                        [eval_id]).fetchone()
    return EvalScores(eval_id=eval_id, model=model[0] if model else None, task=rows[0][2],
                      items={str(r[0]): float(r[1]) for r in rows})


def resolve_evals(con: Any, names: Sequence[str], tasks: Sequence[str], role: str
                  ) -> dict[str, EvalScores]:
    """Per task, the evaluation that ``names`` (eval ids or model names) give for it: an eval
    id of that task, else the newest evaluation of a named model on it."""
    out: dict[str, EvalScores] = {}
    by_id = [e for e in (load_eval(con, n) for n in names) if e is not None]
    for task in tasks:
        hits = [e for e in by_id if e.task == task]
        if not hits:
            for name in names:
                row = con.execute(
                    "SELECT eval_id FROM scores WHERE model = ? AND task = ? "
                    "ORDER BY created_at DESC LIMIT 1", [name, task]).fetchone()
                if row:
                    got = load_eval(con, row[0])
                    if got is not None:
                        hits.append(got)
                        break
        if not hits:
            raise NotFoundError(f"no {role} evaluation of {task} among {', '.join(names)} "
                                "(give eval ids or model names that were evaluated on it)")
        if len({e.eval_id for e in hits}) > 1:
            raise InputError(f"several {role} evaluations of {task}: "
                             f"{', '.join(e.eval_id for e in hits)}; name one")
        out[task] = hits[0]
    return out


_UNSCORED = ("no item of {role}'s evaluation {eval_id} could be scored (e.g. a judge whose "
             "verdicts could not be read)")


def _unscored_task(con: Any, names: Sequence[str], task: str | None = None) -> str | None:
    """The task of an evaluation among ``names`` that exists but scored no item, or None."""
    for name in names:
        row = con.execute("SELECT any_value(task) FROM scores WHERE eval_id = ?",
                          [name]).fetchone()
        if row and row[0] and (task is None or row[0] == task):
            return str(row[0])
    return None


def _resolve_one(con: Any, names: Sequence[str], task: str, role: str) -> EvalScores:
    """:func:`resolve_evals` for one task; an evaluation of it that scored nothing leaves the
    task without a PGR (DegeneratePGRError) rather than failing the cell."""
    try:
        return resolve_evals(con, names, [task], role)[task]
    except NotFoundError:
        if _unscored_task(con, names, task) is not None:
            raise DegeneratePGRError(_UNSCORED.format(
                role=f"the {role}", eval_id=", ".join(names))) from None
        raise


def student_evals(con: Any, run_id: str) -> list[str]:
    """Evaluations of the students trained on ``run_id`` (via the students table)."""
    has = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = "
                      "'students'").fetchone()
    if not has or not has[0]:
        return []
    rows = con.execute(
        "SELECT DISTINCT s.eval_id FROM scores s JOIN students st USING (student_id) "
        "WHERE st.data_run_id = ? ORDER BY 1", [run_id]).fetchall()
    return [r[0] for r in rows]


# -- the computation -------------------------------------------------------------------------------
def compute_pgr(
    store: Store, run_id: str, *, base: str | Sequence[str], reference: str | Sequence[str],
    students: Sequence[str] | None = None, generator: str | None = None,
    method: str | None = None, domain: str | None = None, n_boot: int = 1000, seed: int = 0,
) -> PGRResult:
    """PGR of the students trained on run ``run_id`` (their eval ids; default: every evaluation
    of a student whose data is that run), per task and for the domain, against ``base`` and
    ``reference`` (eval ids or model names). Replaces the run's rows in the ``pgr`` table."""
    import numpy as np

    base_names = [base] if isinstance(base, str) else list(base)
    ref_names = [reference] if isinstance(reference, str) else list(reference)
    with store.connect() as con:
        run = con.execute("SELECT generator, method, domain FROM runs WHERE run_id = ?",
                          [run_id]).fetchone()
        generator = generator or (run[0] if run else None)
        method = method or (run[1] if run else None)
        domain = domain or (run[2] if run else None) or "general"
        if generator is None:
            raise NotFoundError(f"no run {run_id!r} in the workspace: pass generator= to "
                                "compute PGR for data made elsewhere")
        student_ids = list(students) if students is not None else student_evals(con, run_id)
        if not student_ids:
            raise NotFoundError(f"no evaluated student trained on run {run_id}: pass the "
                                "student evaluation ids")
        found = [load_eval(con, e) for e in student_ids]
        skipped: dict[str, str] = {}
        for e, f in zip(student_ids, found):
            if f is None:
                task = _unscored_task(con, [e])
                if task is None:
                    raise NotFoundError(f"no item scores for evaluation {e}")
                skipped[task] = _UNSCORED.format(role="the student", eval_id=e)
        studs = {e.task: e for e in found if e is not None}
        if len(studs) != len([f for f in found if f is not None]):
            raise InputError("two student evaluations of the same task: pass one per task")
        results = []
        for t in sorted(studs):
            try:
                b = _resolve_one(con, base_names, t, "base")
                r = _resolve_one(con, ref_names, t, "reference")
                results.append(task_pgr(studs[t], b, r, n_boot=n_boot, seed=seed))
            except DegeneratePGRError as e:
                skipped[t] = str(e)
    if not results:
        raise DegeneratePGRError("PGR is undefined on every task: " + "; ".join(
            f"{t}: {why}" for t, why in sorted(skipped.items())))
    reps = np.mean([t.reps for t in results], axis=0)
    lo, hi = percentile_ci(reps)
    out = PGRResult(run_id=run_id, generator=generator, method=method, domain=domain,
                    tasks=results, pgr=float(np.mean([t.pgr for t in results])), ci_low=lo,
                    ci_high=hi, n_items=sum(t.n_items for t in results), skipped=skipped)
    _write(store, out, reps, n_boot, seed)
    return out


def _write(store: Store, res: PGRResult, domain_reps: Any, n_boot: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa

    now = datetime.now(UTC).replace(tzinfo=None)

    def boot(x: Any) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in x]

    def joined(get: Any) -> str:
        return ",".join(str(get(t)) for t in res.tasks)

    rows: list[dict[str, Any]] = [{
        "task": t.task, "student_eval_id": t.student.eval_id, "base_eval_id": t.base.eval_id,
        "reference_eval_id": t.reference.eval_id, "base_model": t.base.model,
        "reference_model": t.reference.model, "student_score": t.student_score,
        "base_score": t.base_score, "reference_score": t.reference_score, "pgr": t.pgr,
        "ci_low": t.ci_low, "ci_high": t.ci_high, "n_items": t.n_items,
        "items_key": t.items_key, "boot": boot(t.reps),
    } for t in res.tasks]
    rows.append({
        "task": DOMAIN_TASK, "student_eval_id": joined(lambda t: t.student.eval_id),
        "base_eval_id": joined(lambda t: t.base.eval_id),
        "reference_eval_id": joined(lambda t: t.reference.eval_id),
        "base_model": ",".join(sorted({str(t.base.model) for t in res.tasks})),
        "reference_model": ",".join(sorted({str(t.reference.model) for t in res.tasks})),
        "student_score": None, "base_score": None, "reference_score": None, "pgr": res.pgr,
        "ci_low": res.ci_low, "ci_high": res.ci_high, "n_items": res.n_items,
        "items_key": stable_hash([t.items_key for t in res.tasks], 16), "boot": boot(domain_reps),
    })
    for r in rows:
        r.update(run_id=res.run_id, generator=res.generator, method=res.method,
                 domain=res.domain, n_boot=n_boot, seed=seed, created_at=now)
    cols = ["run_id", "generator", "method", "domain", "task", "student_eval_id", "base_eval_id",
            "reference_eval_id", "base_model", "reference_model", "student_score", "base_score",
            "reference_score", "pgr", "ci_low", "ci_high", "n_items", "items_key", "n_boot",
            "seed", "boot", "created_at"]
    table = pa.Table.from_pylist([{c: r[c] for c in cols} for r in rows], schema=pa.schema([
        *[(c, pa.string()) for c in cols[:10]],
        *[(c, pa.float64()) for c in cols[10:16]],
        ("n_items", pa.int32()), ("items_key", pa.string()), ("n_boot", pa.int32()),
        ("seed", pa.int64()), ("boot", pa.list_(pa.float64())), ("created_at", pa.timestamp("us")),
    ]))
    with store.connect() as con:
        con.register("incoming_pgr", table)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM pgr WHERE run_id = ?", [res.run_id])
            con.execute(f"INSERT INTO pgr ({', '.join(cols)}) SELECT * FROM incoming_pgr")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise


# -- comparing two runs ----------------------------------------------------------------------------
@dataclass
class Comparison:
    run_a: str
    run_b: str
    task: str
    diff: float
    ci_low: float
    ci_high: float
    separable: bool
    paired: bool


def compare(store: Store, run_a: str, run_b: str, task: str = DOMAIN_TASK) -> Comparison:
    """PGR(a) - PGR(b) on ``task`` (default: the domain mean) with its bootstrap CI, from the
    stored replicates; ``separable`` is False when the CI contains 0."""
    with store.connect() as con:
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT run_id, pgr, boot, items_key, n_boot, seed FROM pgr WHERE run_id IN (?, ?) "
            "AND task = ?", [run_a, run_b, task]).fetchall()}
    for rid in (run_a, run_b):
        if rid not in rows:
            raise NotFoundError(f"no PGR of run {rid} on {task}: compute it first")
    a, b = rows[run_a], rows[run_b]
    lo, hi, sep = difference_ci(_floats(a[1]), _floats(b[1]))
    return Comparison(run_a, run_b, task, a[0] - b[0], lo, hi, sep,
                      paired=a[2:] == b[2:])


def _floats(xs: Sequence[float | None]) -> list[float]:
    return [float("nan") if x is None else x for x in xs]

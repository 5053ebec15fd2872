"""PGR, paired-bootstrap CIs, separability, leaderboards and the PCA regression, against hand
computations on item scores planted in DuckDB."""

from __future__ import annotations

import numpy as np
import pytest

from datagen_core.errors import DatagenError
from datagen_core.workspace import Workspace
from metrics import facade as api
from metrics.analysis import TooFewRunsError, analyze
from metrics.leaderboard import cells, overall
from metrics.pgr import DegeneratePGRError, bootstrap_seed, compare, compute_pgr
from metrics.store import Store
from tests.metrics.planting import plant_benchmark, plant_eval, plant_run

N = 200
N_BOOT = 500
SEED = 7


@pytest.fixture
def store() -> Store:
    return Store(Workspace.resolve().ensure().db_path)


def scores(p: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(N) < p).astype(float)


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("pgr") / "datagen.duckdb")


@pytest.fixture(scope="module")
def planted(planted_store: Store) -> dict[str, dict[str, np.ndarray]]:
    """Two tasks; a base, a reference and three generators' students (A strong, B weak, C = B
    with four items flipped); item ids shuffled in storage order to catch alignment bugs.
    Planted once for the module (the tests only add evaluations of their own)."""
    store = planted_store
    rng = np.random.default_rng(0)
    data: dict[str, dict[str, np.ndarray]] = {}
    for task in ("gsm8k", "math500"):
        d = {"base": scores(0.3, rng), "ref": scores(0.8, rng), "A": scores(0.7, rng),
             "B": scores(0.45, rng)}
        d["C"] = d["B"].copy()
        d["C"][:4] = 1 - d["C"][:4]
        data[task] = d
        for who, vals in d.items():
            ids = [f"{task}-{i}" for i in range(N)]
            order = rng.permutation(N)
            plant_eval(store, f"{who}-{task}", f"model-{who}", task,
                       {ids[i]: float(vals[i]) for i in order})
    for who in ("A", "B", "C"):
        plant_run(store, f"run-{who}", [("q", "a", True, None)], generator=f"gen:{who}",
                  method="response-generation", domain="math", cost_usd=2.0)
        compute_pgr(store, f"run-{who}", students=[f"{who}-gsm8k", f"{who}-math500"],
                    base=["base-gsm8k", "base-math500"], reference="model-ref",
                    n_boot=N_BOOT, seed=SEED)
    return data


def loop_bootstrap(d: dict[str, np.ndarray], who: str, seed: int) -> np.ndarray:
    """The straightforward bootstrap: one resample of item positions per replicate (items in
    id order, the order the implementation resamples in)."""
    n = len(d["base"])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N_BOOT):
        idx = rng.integers(0, n, n)
        s, b, r = d[who][idx].mean(), d["base"][idx].mean(), d["ref"][idx].mean()
        out.append(100 * (s - b) / (r - b) if r != b else np.nan)
    return np.array(out)


def sorted_by_id(d: dict[str, np.ndarray], task: str) -> dict[str, np.ndarray]:
    ids = sorted(f"{task}-{i}" for i in range(N))
    pos = [int(i.rsplit("-", 1)[1]) for i in ids]
    return {k: v[pos] for k, v in d.items()}


def task_seed(task: str) -> int:
    from datagen_core.fingerprint import stable_hash

    return bootstrap_seed(SEED, task, stable_hash(sorted(f"{task}-{i}" for i in range(N)), 16))


def test_pgr_and_ci_match_a_hand_computation(planted_store: Store, planted) -> None:
    store = planted_store
    with store.connect() as con:
        rows = {(r[0], r[1]): r[2:] for r in con.execute(
            "SELECT run_id, task, pgr, ci_low, ci_high, n_items, base_model, reference_model "
            "FROM pgr").fetchall()}
    domain_reps = []
    for task in ("gsm8k", "math500"):
        d = planted[task]
        want = 100 * (d["A"].mean() - d["base"].mean()) / (d["ref"].mean() - d["base"].mean())
        pgr, lo, hi, n, base_model, ref_model = rows[("run-A", task)]
        assert pgr == pytest.approx(want, abs=1e-9)
        assert (n, base_model, ref_model) == (N, "model-base", "model-ref")
        reps = loop_bootstrap(sorted_by_id(d, task), "A", task_seed(task))
        assert (lo, hi) == pytest.approx(tuple(np.nanpercentile(reps, [2.5, 97.5])), abs=1e-9)
        assert lo < pgr < hi
        domain_reps.append(reps)
    pgr, lo, hi, n, *_ = rows[("run-A", "*")]
    assert pgr == pytest.approx(np.mean([rows[("run-A", t)][0] for t in ("gsm8k", "math500")]))
    assert n == 2 * N
    want_ci = np.nanpercentile(np.mean(domain_reps, axis=0), [2.5, 97.5])
    assert (lo, hi) == pytest.approx(tuple(want_ci), abs=1e-9)


def test_ranks_and_separability(planted_store: Store, planted) -> None:
    store = planted_store
    rows = cells(store)
    hand = {}
    for who in "ABC":
        hand[who] = np.mean([
            100 * (planted[t][who].mean() - planted[t]["base"].mean())
            / (planted[t]["ref"].mean() - planted[t]["base"].mean()) for t in planted])
    want_order = sorted("ABC", key=lambda w: -hand[w])
    assert [r["generator"] for r in rows] == [f"gen:{w}" for w in want_order]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["pgr_per_dollar"] == pytest.approx(hand[want_order[0]] / 2.0)
    # A is far above the rest; B and C differ by four items of 400: not separable.
    assert rows[0]["separable"] is None and rows[1]["separable"] is True
    assert rows[2]["separable"] is False
    # The same verdicts from an independent paired loop over both tasks.
    for a, b, separable in ((want_order[0], want_order[1], True), ("B", "C", False)):
        diffs = np.mean([loop_bootstrap(sorted_by_id(planted[t], t), a, task_seed(t))
                         - loop_bootstrap(sorted_by_id(planted[t], t), b, task_seed(t))
                         for t in planted], axis=0)
        lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
        assert bool(lo > 0 or hi < 0) is separable
        cmp = compare(store, f"run-{a}", f"run-{b}")
        assert cmp.paired and cmp.separable is separable
        assert (cmp.ci_low, cmp.ci_high) == pytest.approx((lo, hi), abs=1e-9)
    over = overall(store)
    assert [r["generator"] for r in over] == [f"gen:{w}" for w in want_order]
    assert over[0]["n_cells"] == 1 and over[0]["pgr"] == pytest.approx(hand[want_order[0]])
    # One cell per generator: the overall CI (the view's SQL over stored replicates) is the
    # cell's CI (numpy over the same replicates).
    for o, c in zip(over, rows):
        assert (o["ci_low"], o["ci_high"]) == pytest.approx((c["ci_low"], c["ci_high"]))


def test_degenerate_reference_equal_to_base_is_a_clear_error(planted_store: Store,
                                                             planted) -> None:
    store = planted_store
    with pytest.raises(DegeneratePGRError) as e:
        compute_pgr(store, "run-A", students=["A-gsm8k"], base="base-gsm8k",
                    reference="base-gsm8k")
    assert "same evaluation" in str(e.value) and "\n" not in str(e.value)
    # A different evaluation with the same mean score: also undefined, no ZeroDivisionError.
    plant_eval(store, "base-twin", "base-twin", "gsm8k",
               {f"gsm8k-{i}": v for i, v in enumerate(planted["gsm8k"]["base"][::-1])})
    with pytest.raises(DegeneratePGRError, match=r"both score 0\.\d+ on the 200 shared items"):
        compute_pgr(store, "run-A", students=["A-gsm8k"], base="base-gsm8k",
                    reference="base-twin")
    assert issubclass(DegeneratePGRError, DatagenError)


def test_only_items_scored_in_all_three_evaluations_count(store: Store) -> None:
    plant_eval(store, "b", "base", "t", {"x": 0.0, "y": 0.0, "z": 1.0, "w": 0.0})
    plant_eval(store, "r", "ref", "t", {"x": 1.0, "y": 1.0, "z": 1.0, "w": 1.0})
    plant_eval(store, "s", "stu", "t", {"x": 1.0, "y": 0.0, "z": 1.0, "w": None, "extra": 1.0})
    res = compute_pgr(store, "some-run", students=["s"], base="b", reference="r",
                      generator="gen", domain="general", n_boot=50)
    # shared: x, y, z -> student 2/3, base 1/3, reference 1 -> PGR 50
    assert res.tasks[0].n_items == 3 and res.pgr == pytest.approx(50.0)


def test_pca_regression_refuses_with_too_few_runs_and_reports_r2(store: Store) -> None:
    plant_run(store, "lonely", [("q", "a", True, None)])
    with pytest.raises(TooFewRunsError, match=r"at least 4 runs .* has 0"):
        analyze(store, n_components=2)
    runs = plant_benchmark(store)
    # Two cells per generator: the overall view's CI is over the mean of their replicates.
    with store.connect() as con:
        boots = con.execute("SELECT generator, boot FROM pgr WHERE task = '*'").fetchall()
    for row in overall(store):
        reps = np.mean([b for g, b in boots if g == row["generator"]], axis=0)
        assert row["n_cells"] == 2
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            tuple(np.percentile(reps, [2.5, 97.5])))
    res = analyze(store, n_components=2)
    assert len(res.runs) == len(runs) == 8
    assert 0.0 <= res.r2 <= 1.0 and len(res.coefficients) == 2
    assert "validity_rate" in res.metrics and sum(res.explained_variance_ratio) <= 1.0
    with pytest.raises(TooFewRunsError, match=r"at least 9 runs .* has 8"):
        analyze(store, n_components=7)
    assert api.analyze(2).r2 == pytest.approx(res.r2)


def test_a_task_without_a_gap_is_left_out_of_the_domain_pgr_and_said_so(store: Store) -> None:
    """A domain PGR averages the tasks where it is defined: a task whose reference does not
    beat the base (equal, or below: the gap would point the wrong way) and a task nothing of
    which could be scored (a judge with unreadable verdicts) are left out, by name."""
    items = ["x", "y", "z", "w"]
    for task, base, ref, stu in (("good", 0.0, 1.0, 0.5), ("flat", 0.5, 0.5, 1.0),
                                 ("inverted", 1.0, 0.0, 0.0)):
        for who, p in (("b", base), ("r", ref), ("s", stu)):
            plant_eval(store, f"{who}-{task}", who, task,
                       {i: float(k < 4 * p) for k, i in enumerate(items)})
    plant_eval(store, "s-judged", "s", "judged", dict.fromkeys(items))  # nothing judged
    for who in ("b", "r"):
        plant_eval(store, f"{who}-judged", who, "judged", dict.fromkeys(items, 1.0))
    res = compute_pgr(store, "run", generator="gen", domain="general", n_boot=50,
                      students=["s-good", "s-flat", "s-inverted", "s-judged"],
                      base=["b-good", "b-flat", "b-inverted", "b-judged"],
                      reference=["r-good", "r-flat", "r-inverted", "r-judged"])
    assert [t.task for t in res.tasks] == ["good"] and res.pgr == pytest.approx(50.0)
    assert set(res.skipped) == {"flat", "inverted", "judged"}
    assert "both score 0.5000" in res.skipped["flat"]
    assert "below the base" in res.skipped["inverted"]  # without the rule: PGR 100
    assert "could be scored" in res.skipped["judged"]
    with pytest.raises(DegeneratePGRError, match=r"undefined on every task: flat: .*; inverted"):
        compute_pgr(store, "run", generator="gen", domain="general", n_boot=50,
                    students=["s-flat", "s-inverted"], base=["b-flat", "b-inverted"],
                    reference=["r-flat", "r-inverted"])

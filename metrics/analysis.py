"""Which intrinsic properties of data predict PGR? PCA over the metrics, then a regression.

As in AgoraBench: the intrinsic metrics of every benchmarked run are standardised (zero mean, unit
variance; they live on very different scales: rates, 1-5 judge scores, perplexities), reduced to
a few principal components, and PGR is regressed on the components by ordinary least squares.
R^2 says how much of the spread in PGR the data's measurable properties explain; the loadings
say which properties each component stands for.

Only metrics known for every run enter (a metric measured on some runs only would drop the
others), as do only metrics that vary. With k components, a regression with an intercept has
k + 1 parameters, so fewer than k + 2 runs would fit exactly (R^2 = 1 and meaningless): the
analysis refuses then, with the count.
"""

from __future__ import annotations

from dataclasses import dataclass

from datagen_core.errors import DatagenError
from metrics.pgr import DOMAIN_TASK
from metrics.store import Store


class TooFewRunsError(DatagenError):
    """Not enough benchmarked runs for the analysis asked for."""


@dataclass
class Analysis:
    runs: list[str]
    metrics: list[str]
    n_components: int
    explained_variance_ratio: list[float]
    loadings: dict[str, list[float]]  # metric -> one weight per component
    coefficients: list[float]  # PGR points per unit of each component
    intercept: float
    r2: float
    scores: list[list[float]]  # each run's component values
    pgr: list[float]


def analysis_table(store: Store) -> tuple[list[str], list[str], list[list[float]], list[float]]:
    """(run ids, metric names, metric matrix, PGR) over runs with a domain PGR."""
    with store.connect() as con:
        pgr = dict(con.execute("SELECT run_id, pgr FROM pgr WHERE task = ? ORDER BY run_id",
                               [DOMAIN_TASK]).fetchall())
        rows = con.execute("SELECT run_id, metric, value FROM intrinsic_latest WHERE value IS "
                           "NOT NULL AND isfinite(value)").fetchall()
    values: dict[str, dict[str, float]] = {}
    for run_id, metric, value in rows:
        if run_id in pgr:
            values.setdefault(metric, {})[run_id] = value
    runs = sorted(pgr)
    metrics = sorted(m for m, per in values.items()
                     if len(per) == len(runs) and len(set(per.values())) > 1)
    matrix = [[values[m][r] for m in metrics] for r in runs]
    return runs, metrics, matrix, [float(pgr[r]) for r in runs]


def analyze(store: Store, n_components: int = 2) -> Analysis:
    """PCA (standardised metrics) + OLS of PGR on the components; see the module docstring."""
    runs, metrics, matrix, pgr = analysis_table(store)
    need = n_components + 2
    if len(runs) < need:
        raise TooFewRunsError(
            f"the PCA regression with {n_components} components needs at least {need} runs "
            f"with both PGR and intrinsic metrics; the workspace has {len(runs)}")
    if len(metrics) < n_components:
        raise TooFewRunsError(
            f"the PCA regression with {n_components} components needs at least {n_components} "
            f"intrinsic metrics measured on every run (and varying); found {len(metrics)}")
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(matrix, dtype=float))
    pca = PCA(n_components=n_components, random_state=0)
    comps = pca.fit_transform(x)
    y = np.asarray(pgr, dtype=float)
    reg = LinearRegression().fit(comps, y)
    return Analysis(
        runs=runs, metrics=metrics, n_components=n_components,
        explained_variance_ratio=[float(v) for v in pca.explained_variance_ratio_],
        loadings={m: [float(pca.components_[k, j]) for k in range(n_components)]
                  for j, m in enumerate(metrics)},
        coefficients=[float(c) for c in reg.coef_], intercept=float(reg.intercept_),
        r2=float(reg.score(comps, y)), scores=comps.tolist(), pgr=pgr,
    )


def describe(a: Analysis) -> str:
    """One paragraph for terminals and reports."""
    parts = []
    for k in range(a.n_components):
        top = sorted(a.loadings, key=lambda m: -abs(a.loadings[m][k]))[:3]
        parts.append(f"PC{k + 1} ({a.explained_variance_ratio[k]:.0%} of variance; "
                     + ", ".join(f"{m} {a.loadings[m][k]:+.2f}" for m in top)
                     + f"): {a.coefficients[k]:+.1f} PGR per unit")
    return (f"PGR ~ {a.n_components} principal components of {len(a.metrics)} intrinsic "
            f"metrics over {len(a.runs)} runs: R^2 = {a.r2:.2f}. " + "; ".join(parts) + ".")

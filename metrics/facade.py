"""The Python API of benchmarking: intrinsic metrics, PGR, leaderboards, analysis, reports.

Each function takes an optional ``workspace`` (default: ``$DATAGEN_WORKSPACE`` or
``./datagen-workspace``) and is what the matching ``datagen`` command calls::

    from datagen import api   # the same functions, re-exported by the facade
    api.compute_metrics(run_id, ["stats", "diversity"])
    api.compute_metrics(run_id, ["judge"], judge="openai:gpt-4o-mini")
    api.compute_metrics(run_id, ["issue-bias"], judge="openai:gpt-4o-mini")  # stance judge
    api.compute_pgr(run_id, students=["ev-student"], base="ev-base", reference="ev-ref")
    api.leaderboard(by="overall")
    api.write_report("report.html")

Everything is stored in the workspace database, keyed by its configuration: asking twice costs
nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datagen_core.records import GeneratorSpec
from datagen_core.workspace import Workspace
from metrics.analysis import Analysis
from metrics.intrinsic import IntrinsicResult
from metrics.pgr import Comparison, PGRResult
from metrics.store import Store

DEFAULT_METRICS = ("stats", "diversity")


def _store(workspace: str | Path | None) -> tuple[Workspace, Store]:
    return Workspace.resolve(workspace), Store.open_existing(workspace)


def compute_metrics(
    run_id: str, metrics: Sequence[str] = DEFAULT_METRICS, *,
    judge: str | GeneratorSpec | None = None, reward_model: str | None = None,
    perplexity_model: str | None = None, configs: Mapping[str, Mapping[str, Any]] | None = None,
    backends: Mapping[str, Any] | None = None, force: bool = False,
    progress: bool | None = None, workspace: str | Path | None = None,
) -> list[IntrinsicResult]:
    """Compute intrinsic metric families for a run (id or unique prefix) and store them.

    ``judge``, ``reward_model`` and ``perplexity_model`` fill the main setting of the ``judge``
    (and ``issue-bias``: its stance judge), ``reward`` and ``perplexity`` families; ``configs``
    gives any family's full settings (e.g. ``{"diversity": {"sample": 500}}``). ``backends``
    maps a judge spec's label to a ready backend (tests, custom clients). A family already
    stored with the same configuration and data is not recomputed unless ``force``.
    """
    from metrics.intrinsic import compute_intrinsic

    ws, store = _store(workspace)
    rid = store.resolve_run(run_id)
    settings: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (configs or {}).items()}
    for family, key, value in (("judge", "judge", judge), ("issue-bias", "judge", judge),
                               ("reward", "model", reward_model),
                               ("perplexity", "model", perplexity_model)):
        if value is not None:
            settings.setdefault(family, {})[key] = value
    return [compute_intrinsic(store, rid, name, settings.get(name), workspace=ws,
                              backends=backends, force=force, progress=progress)
            for name in metrics]


def intrinsic_values(run_id: str, workspace: str | Path | None = None
                     ) -> dict[str, tuple[float | None, int]]:
    """The latest stored value (and item count) of every intrinsic metric of a run."""
    from metrics.intrinsic import read_values

    _, store = _store(workspace)
    return read_values(store, store.resolve_run(run_id))


def pair_margin_histogram(run_id: str, bins: int = 5, workspace: str | Path | None = None
                          ) -> list[tuple[float, float, int]]:
    """(low, high, count) buckets of a run's pair margins from its latest ``pairs`` metric
    computation (empty before one)."""
    from metrics.pair_metrics import margin_histogram

    _, store = _store(workspace)
    return margin_histogram(store, store.resolve_run(run_id), bins)


def issue_table(run_id: str, workspace: str | Path | None = None) -> list[dict[str, Any]]:
    """Per issue of a run, from its latest ``issue-bias`` computation: judged responses, the
    share of each stance, the tendency (pro minus con share) and whether it is one-sided."""
    from metrics import issue_bias

    _, store = _store(workspace)
    return issue_bias.issue_table(store, store.resolve_run(run_id))


def compute_pgr(
    run_id: str, *, base: str | Sequence[str], reference: str | Sequence[str],
    students: Sequence[str] | None = None, generator: str | None = None,
    method: str | None = None, domain: str | None = None, n_boot: int = 1000, seed: int = 0,
    workspace: str | Path | None = None,
) -> PGRResult:
    """PGR of run ``run_id``'s students against a base and a reference (eval ids or model
    names), per task and for the domain, with 95% paired-bootstrap CIs; stored in ``pgr``.
    See :func:`metrics.pgr.compute_pgr`."""
    from metrics import pgr

    _, store = _store(workspace)
    with store.connect() as con:
        known = con.execute("SELECT count(*) FROM runs WHERE starts_with(run_id, ?)",
                            [run_id]).fetchone()
    rid = store.resolve_run(run_id) if known and known[0] else run_id
    return pgr.compute_pgr(store, rid, base=base, reference=reference, students=students,
                           generator=generator, method=method, domain=domain, n_boot=n_boot,
                           seed=seed)


def compare(run_a: str, run_b: str, task: str = "*", workspace: str | Path | None = None
            ) -> Comparison:
    """PGR(a) - PGR(b) with its CI; ``separable`` is False when the CI contains 0."""
    from metrics import pgr

    _, store = _store(workspace)
    return pgr.compare(store, store.resolve_run(run_a), store.resolve_run(run_b), task)


def leaderboard(by: str = "cell", method: str | None = None, domain: str | None = None,
                workspace: str | Path | None = None) -> list[dict[str, Any]]:
    """Ranked rows: ``by="cell"`` per method x domain, ``by="overall"`` per generator; each
    with PGR, CI, ``separable`` (from the row above), intrinsic metrics, cost, PGR per dollar."""
    from metrics import leaderboard as lb

    _, store = _store(workspace)
    return lb.leaderboard(store, by, method, domain)


def analyze(n_components: int = 2, workspace: str | Path | None = None) -> Analysis:
    """PCA of the standardised intrinsic metrics and an OLS of PGR on the components (R^2);
    raises :class:`metrics.analysis.TooFewRunsError` with fewer than components + 2 runs."""
    from metrics import analysis

    _, store = _store(workspace)
    return analysis.analyze(store, n_components)


def write_report(out: str | Path, title: str = "datagen benchmark report",
                 workspace: str | Path | None = None) -> Path:
    """A self-contained HTML report (plots with CIs, intrinsic metrics, cost vs PGR)."""
    from metrics import report

    _, store = _store(workspace)
    return report.write_report(store, out, title)

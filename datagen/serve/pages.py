"""Pages for looking: the leaderboard, the runs, one run's rows, one row, a run's files, and
the same seed row across runs.

Handlers are plain functions (Starlette runs them in worker threads); each reads the database
afresh through :class:`~datagen.serve.data.ServedWorkspace`, so a reload shows a run or a
score stored a second ago. Page positions come from the address (``after``/``before`` row
keys), so every page is a link that can be shared or reloaded.
"""

from __future__ import annotations

import mimetypes
from collections import defaultdict
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from datagen.runs import true_status
from datagen.serve.data import ServedWorkspace
from datagen.serve.render import page
from datagen_core.errors import ConfigError, DatagenError, NotFoundError
from metrics import browse
from metrics import leaderboard as lb
from metrics.intrinsic import read_values

ROWS_PER_PAGE = 50
SEEDS_PER_PAGE = 20
TABS = {"accepted": True, "rejected": False, "all": None}
_TEXT_FILES = (".json", ".jsonl", ".txt", ".log", ".yaml", ".csv")


def data_of(request: Request) -> ServedWorkspace:
    data: ServedWorkspace = request.app.state.data
    return data


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def linker(request: Request) -> Any:
    """``link(after=7, before=None)``: this page's address with those query values changed
    (None drops one), the others kept (tab, filter, search)."""
    def link(**changes: Any) -> str:
        url = request.url.remove_query_params([k for k, v in changes.items() if v is None])
        keep = {k: v for k, v in changes.items() if v is not None}
        url = url.include_query_params(**keep) if keep else url
        return f"{url.path}?{url.query}" if url.query else url.path
    return link


def leaderboard(request: Request) -> Response:
    """Overall ranking and per-cell rankings with CIs and "not separable" marks, plus the
    report's plots, from the database as it is now."""
    from metrics.report import figures

    data = data_of(request)
    over, cells = data.query(lb.overall), data.query(lb.cells)
    figs: dict[str, Any] = {}
    if over:
        try:
            from metrics.analysis import analyze

            analysis = data.query(analyze)
        except (DatagenError, ImportError):  # too few runs for the PCA, or no scikit-learn
            analysis = None
        figs = figures(over, cells, analysis)
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in cells:
        by_cell[(r["method"] or "-", r["domain"] or "-")].append(r)
    return page("leaderboard.html", request=request, nav="leaderboard", overall=over,
                cells=dict(by_cell), figures=figs)


def runs(request: Request) -> Response:
    """Every run with status, counts, tokens, cost and failures; pick runs to compare."""
    data = data_of(request)
    rows = [true_status(data.workspace, r) for r in data.query(browse.run_rows)]
    return page("runs.html", request=request, nav="runs", runs=rows,
                workspace=str(data.workspace.root))


def run(request: Request) -> Response:
    """One run: its summary, failures, rejections by kind, intrinsic metrics and files, and a
    page of its accepted or rejected rows (filter by rejection kind, search the text)."""
    data = data_of(request)
    run_id = request.path_params["run_id"]
    summary = data.run(run_id)
    tab = request.query_params.get("show", "accepted")
    if tab not in TABS:
        raise ConfigError(f"show is one of {', '.join(TABS)}, got {tab!r}")
    reason = request.query_params.get("reason") or None
    search = request.query_params.get("q") or None
    rows = data.query(browse.instance_page, run_id, valid=TABS[tab],
                      reason=reason if tab != "accepted" else None, search=search,
                      after=int_param(request, "after"), before=int_param(request, "before"),
                      limit=ROWS_PER_PAGE)
    return page("run.html", request=request, nav="runs", run=summary, tab=tab, reason=reason,
                search=search or "", rows=rows, link=linker(request),
                intrinsic=data.query(read_values, run_id), files=data.run_files(run_id))


def row(request: Request) -> Response:
    """One row in full: its messages, validity and reason, metadata, the prompt that produced
    it and the raw response."""
    data = data_of(request)
    run_id, idx = request.path_params["run_id"], request.path_params["idx"]
    summary = data.run(run_id)
    detail = data.query(browse.instance_detail, run_id, idx)
    if detail is None:
        raise NotFoundError(f"run {run_id} has no row {idx}")
    prev_idx, next_idx = data.query(browse.neighbours, "instances", run_id, idx)
    return page("row.html", request=request, nav="runs", run=summary, row=detail,
                prev_idx=prev_idx, next_idx=next_idx)


def run_file(request: Request) -> Response:
    """A file of a run's folder, as text when it is text (never rendered as HTML)."""
    data = data_of(request)
    name = request.path_params["name"]
    path = data.run_file(request.path_params["run_id"], name)
    if path.suffix in _TEXT_FILES:
        return FileResponse(path, media_type="text/plain; charset=utf-8")
    return FileResponse(path, filename=name, media_type=mimetypes.guess_type(name)[0]
                        or "application/octet-stream")


def compare(request: Request) -> Response:
    """The same seed rows as answered by two or more runs, side by side; with fewer than two
    runs chosen, a form to choose them (runs over the same method, domain and seed set)."""
    data = data_of(request)
    chosen = list(dict.fromkeys(request.query_params.getlist("run")))
    if len(chosen) < 2 or request.query_params.get("pick"):
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in data.query(browse.run_rows):
            if r["n_instances"]:
                groups[(r["method"] or "-", r["domain"] or "-", r["source"] or "-")].append(r)
        return page("compare_pick.html", request=request, nav="compare", groups=dict(groups),
                    chosen=chosen)
    summaries = [data.run(r) for r in chosen]
    start = max(int_param(request, "offset", 0) or 0, 0)
    seeds, total = data.query(browse.compare_page, chosen, start, SEEDS_PER_PAGE)
    return page("compare.html", request=request, nav="compare", runs=summaries, seeds=seeds,
                total=total, start=start, per_page=SEEDS_PER_PAGE, link=linker(request))

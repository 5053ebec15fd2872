"""Pages for pairs: a run's pairs side by side with the evidence for their order, and the
labelling page, where a person says which side is better (``a``, ``b`` or ``t`` for a tie).

The labelling page is blind: it does not show the judge's verdicts, and it shows the chosen
side as A or as B by a coin fixed per pair (:func:`chosen_first`), so neither the method's
order nor position bias leads the person. A label is stored the moment it is given (a JSON
``POST`` from the page's script), in the pair's own terms (chosen, rejected, tie), and the
page moves on to the first pair not yet labelled: closing the tab and coming back resumes
there. Any run with pairs can be labelled (ALFA and MACS runs make them).
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from datagen.serve.pages import data_of, int_param, linker
from datagen.serve.render import page
from datagen_core.errors import ConfigError, NotFoundError
from metrics import browse
from metrics import labels as lab
from metrics.store import Store

PAIRS_PER_PAGE = 10


def chosen_first(pair_id: str) -> bool:
    """Whether the labelling page shows a pair's chosen side as A: a fixed coin per pair, so a
    reload shows the same order and half the pairs start with the rejected side."""
    return hashlib.sha256(pair_id.encode()).digest()[0] % 2 == 0


def pair_runs(request: Request) -> Response:
    """Runs that made pairs, with links to their pairs and their labelling page."""
    data = data_of(request)
    rows = [r for r in data.query(browse.run_rows) if r["n_pairs"]]
    counts = {r["run_id"]: data.query(lab.label_counts, r["run_id"], data.annotator)
              for r in rows}
    return page("pair_runs.html", request=request, nav="pairs", runs=rows, counts=counts,
                annotator=data.annotator)


def pairs(request: Request) -> Response:
    """A page of a run's pairs: prompt, chosen and rejected side by side, the attribute,
    margin and weight, the judge's verdicts in both orders or the evaluators' ratings, and the
    person's label when there is one."""
    data = data_of(request)
    run_id = request.path_params["run_id"]
    summary = data.run(run_id)
    attribute = request.query_params.get("attribute") or None
    rows = data.query(browse.pair_page, run_id, attribute=attribute, annotator=data.annotator,
                      after=int_param(request, "after"), before=int_param(request, "before"),
                      limit=PAIRS_PER_PAGE)
    return page("pairs.html", request=request, nav="pairs", run=summary, pairs=rows,
                attribute=attribute, link=linker(request),
                attributes=data.query(Store.pair_counts, run_id),
                counts=data.query(lab.label_counts, run_id, data.annotator),
                annotator=data.annotator)


def resume(request: Request) -> Response:
    """The first pair this annotator has not labelled yet; when none is left, the tally."""
    data = data_of(request)
    run_id = request.path_params["run_id"]
    summary = data.run(run_id)
    nxt = data.query(lab.first_unlabelled, run_id, data.annotator)
    if nxt is not None:
        return RedirectResponse(f"/pairs/{run_id}/label/{nxt}", status_code=303)
    counts = data.query(lab.label_counts, run_id, data.annotator)
    if not counts["pairs"]:
        raise NotFoundError(f"run {run_id} has no pairs to label")
    return page("label_done.html", request=request, nav="pairs", run=summary, counts=counts,
                annotator=data.annotator)


def label_page(request: Request) -> Response:
    """One pair to label: the prompt, side A and side B (order per :func:`chosen_first`)."""
    data = data_of(request)
    run_id, idx = request.path_params["run_id"], request.path_params["idx"]
    summary = data.run(run_id)
    pair = data.query(browse.pair_at, run_id, idx)
    if pair is None:
        raise NotFoundError(f"run {run_id} has no pair {idx}")
    first = chosen_first(pair["pair_id"])
    sides = (pair["chosen"], pair["rejected"]) if first else (pair["rejected"], pair["chosen"])
    given = data.query(lab.read_labels, run_id, data.annotator, pair["pair_id"])
    shown = None
    if given:  # the label in the letters this page uses
        shown = {"tie": "tie", "chosen": "a" if first else "b",
                 "rejected": "b" if first else "a"}[given[0]["label"]]
    prev_idx, next_idx = data.query(browse.neighbours, "pairs", run_id, idx)
    return page("label.html", request=request, nav="pairs", run=summary, pair=pair,
                side_a=sides[0], side_b=sides[1], given=shown, prev_idx=prev_idx,
                next_idx=next_idx, counts=data.query(lab.label_counts, run_id, data.annotator),
                annotator=data.annotator)


def _same_origin(request: Request) -> None:
    """Only this app's own pages may write: a page elsewhere that posts to the loopback is
    refused (its Origin names another host, or the browser marks the request cross-site)."""
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is not None and urlsplit(origin).netloc != host:
        raise PermissionError("cross-origin request")
    if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        raise PermissionError("cross-site request")


async def store_label(request: Request) -> Response:
    """``POST {"pair_id": ..., "choice": "a" | "b" | "tie"}``: store the label of pair ``idx``
    now; answers ``{"label": "chosen" | "rejected" | "tie", "next": URL}``."""
    try:
        _same_origin(request)
    except PermissionError as e:
        return JSONResponse({"error": str(e)}, status_code=403)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"error": "send JSON"}, status_code=415)
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    if not isinstance(body, dict) or body.get("choice") not in ("a", "b", "tie"):
        return JSONResponse({"error": "choice is a, b or tie"}, status_code=400)
    data = data_of(request)
    run_id, idx = request.path_params["run_id"], request.path_params["idx"]

    def store() -> dict[str, Any]:
        data.run(run_id)
        pair = data.query(browse.pair_at, run_id, idx)
        if pair is None or pair["pair_id"] != body.get("pair_id"):
            raise ConfigError(f"pair {idx} of run {run_id} is not the pair shown (the run "
                              "changed): reload the page")
        first = "chosen" if chosen_first(pair["pair_id"]) else "rejected"
        other = "rejected" if first == "chosen" else "chosen"
        label = {"a": first, "b": other, "tie": "tie"}[body["choice"]]
        data.query(lab.write_label, run_id=run_id, pair_id=pair["pair_id"], idx=idx,
                   annotator=data.annotator, label=label, shown_first=first)
        nxt = data.query(lab.first_unlabelled, run_id, data.annotator)
        return {"label": label,
                "next": f"/pairs/{run_id}/label" + ("" if nxt is None else f"/{nxt}")}

    try:
        return JSONResponse(await run_in_threadpool(store))
    except (ConfigError, NotFoundError) as e:
        return JSONResponse({"error": str(e)}, status_code=409 if isinstance(
            e, ConfigError) else 404)

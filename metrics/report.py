"""The benchmark report: one self-contained HTML file (plotly.js inlined; works offline).

Sections: overall ranking (PGR with 95% CIs), PGR per method x domain cell, intrinsic metrics per
run (a heatmap of standardised values; the raw value on hover), cost against PGR, and the PCA
regression of PGR on the intrinsic metrics when there are enough runs for it, plus the tables.

Every figure is drawn by one script that records, on ``<body>``, how many plots Plotly finished
(``data-plots``), the number expected (``data-expected``) and any script error
(``data-errors``): a headless browser's DOM dump then shows whether the report really rendered
(see tests/metrics/test_report.py and scripts/screenshot_report.sh).
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from datagen_core.errors import DatagenError
from metrics.leaderboard import INTRINSIC_COLUMNS, cells, overall
from metrics.store import Store

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1200px;color:#222;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid
#ddd;padding-bottom:4px}.meta{color:#666;font-size:13px}.plot{width:100%;height:420px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{padding:3px 8px;border-bottom:
1px solid #eee;text-align:right}th{background:#f6f6f6}.t{text-align:left}
.note{color:#555;font-size:14px}
"""

_BOOT = """
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(String(e.message));
  document.body.dataset.errors = window.__errors.join(' | ');
});
"""

_DRAW = """
(function () {
  var figs = JSON.parse(document.getElementById('figures').textContent);
  var ids = Object.keys(figs);
  document.body.dataset.expected = ids.length;
  document.body.dataset.plots = 0;
  var done = 0;
  Promise.all(ids.map(function (id) {
    var f = figs[id];
    return Plotly.newPlot(id, f.data, f.layout, {displaylogo: false, responsive: true})
      .then(function () { done += 1; document.body.dataset.plots = done; });
  })).then(function () { document.body.dataset.ready = '1'; })
    .catch(function (e) {
      window.__errors.push(String(e));
      document.body.dataset.errors = window.__errors.join(' | ');
    });
})();
"""


def _num(v: Any, fmt: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> str:
    head = "".join(f"<th{'' if fmt else ' class=t'}>{html.escape(label)}</th>"
                   for _, label, fmt in cols)
    body = []
    for r in rows:
        tds = []
        for key, _, fmt in cols:
            v = r.get(key)
            text = _num(v, fmt) if fmt else ("-" if v is None else str(v))
            tds.append(f"<td{'' if fmt else ' class=t'}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _ci_bar(x: list[str], rows: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    return {
        "type": "bar", "x": x, "y": [r["pgr"] for r in rows], "name": name,
        "error_y": {"type": "data", "symmetric": False,
                    "array": [_gap(r["ci_high"], r["pgr"]) for r in rows],
                    "arrayminus": [_gap(r["pgr"], r["ci_low"]) for r in rows]},
        "hovertemplate": "%{x}: PGR %{y:.1f}<extra></extra>",
    }


def _gap(a: Any, b: Any) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return max(a - b, 0.0)


def figures(over: list[dict[str, Any]], cell_rows: list[dict[str, Any]],
            analysis: Any | None) -> dict[str, dict[str, Any]]:
    """Plotly figure specs (plain dicts) by element id."""
    figs: dict[str, dict[str, Any]] = {}
    layout = {"margin": {"t": 40, "l": 60, "r": 20, "b": 80}, "template": "plotly_white"}
    figs["fig-overall"] = {
        "data": [_ci_bar([r["generator"] for r in over], over)],
        "layout": {**layout, "title": {"text": "Overall PGR (mean over cells, 95% CI)"},
                   "yaxis": {"title": {"text": "PGR"}}},
    }
    cell_names = sorted({f"{r['method']} / {r['domain']}" for r in cell_rows})
    traces = []
    for gen in sorted({r["generator"] for r in cell_rows}):
        rs = [r for r in cell_rows if r["generator"] == gen]
        traces.append(_ci_bar([f"{r['method']} / {r['domain']}" for r in rs], rs, gen))
    figs["fig-cells"] = {
        "data": traces,
        "layout": {**layout, "barmode": "group", "title": {"text": "PGR per method / domain"},
                   "xaxis": {"categoryorder": "array", "categoryarray": cell_names},
                   "yaxis": {"title": {"text": "PGR"}}},
    }
    metrics = [m for m in INTRINSIC_COLUMNS if any(r.get(m) is not None for r in cell_rows)]
    if metrics:
        labels = [f"{r['generator']} · {r['method']}/{r['domain']}" for r in cell_rows]
        z, text = [], []
        for r in cell_rows:
            z.append([_zscore(r.get(m), [q.get(m) for q in cell_rows]) for m in metrics])
            text.append([_num(r.get(m), ".3g") for m in metrics])
        figs["fig-intrinsic"] = {
            "data": [{"type": "heatmap", "z": z, "x": metrics, "y": labels, "text": text,
                      "texttemplate": "%{text}", "colorscale": "RdBu", "zmid": 0,
                      "colorbar": {"title": {"text": "z"}},
                      "hovertemplate": "%{y}<br>%{x} = %{text}<extra></extra>"}],
            "layout": {**layout, "title": {"text": "Intrinsic metrics (colour: z-score across "
                                                   "runs; text: value)"},
                       "margin": {"t": 40, "l": 20, "r": 20, "b": 140},
                       "yaxis": {"automargin": True}, "xaxis": {"automargin": True},
                       "height": max(320, 60 + 40 * len(labels))},
        }
    figs["fig-cost"] = {
        "data": [{
            "type": "scatter", "mode": "markers+text", "x": [r["cost_usd"] or 0 for r in over],
            "y": [r["pgr"] for r in over], "text": [r["generator"] for r in over],
            "textposition": "top center", "marker": {"size": 12}, "cliponaxis": False,
            "error_y": {"type": "data", "symmetric": False,
                        "array": [_gap(r["ci_high"], r["pgr"]) for r in over],
                        "arrayminus": [_gap(r["pgr"], r["ci_low"]) for r in over]},
            "hovertemplate": "%{text}: $%{x:.4f}, PGR %{y:.1f}<extra></extra>"}],
        "layout": {**layout, "title": {"text": "Cost of the data vs PGR"},
                   "margin": {"t": 40, "l": 60, "r": 120, "b": 60},
                   "xaxis": {"title": {"text": "generation cost (USD, all cells)"}},
                   "yaxis": {"title": {"text": "PGR"}}},
    }
    if analysis is not None:
        figs["fig-pca"] = {
            "data": [{"type": "bar", "name": f"PC{k + 1}", "x": analysis.metrics,
                      "y": [analysis.loadings[m][k] for m in analysis.metrics]}
                     for k in range(analysis.n_components)],
            "layout": {**layout, "barmode": "group",
                       "title": {"text": f"PCA loadings (PGR regression R² = {analysis.r2:.2f})"},
                       "margin": {"t": 40, "l": 60, "r": 20, "b": 140}},
        }
    return figs


def _zscore(v: Any, column: list[Any]) -> float | None:
    vals = [x for x in column if x is not None and math.isfinite(x)]
    if v is None or not vals or not math.isfinite(v):
        return None
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((x - mean) ** 2 for x in vals) / len(vals))
    return (v - mean) / sd if sd > 0 else 0.0


def build_report(store: Store, title: str = "datagen benchmark report") -> str:
    """The report's HTML text."""
    from plotly.offline import get_plotlyjs

    from metrics.analysis import analyze, describe

    over, cell_rows = overall(store), cells(store)
    if not over:
        raise DatagenError("nothing to report: no PGR computed yet (see `datagen pgr`)")
    try:
        analysis = analyze(store)
        analysis_text = describe(analysis)
    except DatagenError as e:
        analysis, analysis_text = None, f"No PCA regression: {e}."
    figs = figures(over, cell_rows, analysis)
    data = orjson.dumps(figs, option=orjson.OPT_SERIALIZE_NUMPY).decode().replace("</", "<\\/")
    sep = {True: "yes", False: "no (CI of the difference contains 0)", None: ""}
    for r in [*over, *cell_rows]:
        r["sep"] = sep[r["separable"]]
        r["clean"] = "yes" if r.get("decontaminated") else "NO: not decontaminated"
    overall_table = _table(over, [
        ("rank", "rank", "d"), ("generator", "generator", ""), ("pgr", "PGR", ".1f"),
        ("ci_low", "CI low", ".1f"), ("ci_high", "CI high", ".1f"),
        ("sep", "separable from the one above", ""), ("n_cells", "cells", "d"),
        ("cost_usd", "cost $", ".4f"), ("pgr_per_dollar", "PGR per $", ".1f"),
        ("clean", "decontaminated", "")])
    cell_table = _table(cell_rows, [
        ("method", "method", ""), ("domain", "domain", ""), ("rank", "rank", "d"),
        ("generator", "generator", ""), ("pgr", "PGR", ".1f"), ("ci_low", "CI low", ".1f"),
        ("ci_high", "CI high", ".1f"), ("sep", "separable", ""), ("base_model", "base", ""),
        ("reference_model", "reference", ""), ("quality", "quality", ".2f"),
        ("difficulty", "difficulty", ".2f"), ("validity_rate", "valid", ".2f"),
        ("cost_usd", "cost $", ".4f"), ("clean", "decontaminated", "")])
    sections = [
        ("Overall ranking", "fig-overall", overall_table),
        ("PGR per method and domain", "fig-cells", cell_table),
        ("Intrinsic metrics", "fig-intrinsic", ""),
        ("Cost and PGR", "fig-cost", ""),
        ("What predicts PGR", "fig-pca", f"<p class='note'>{html.escape(analysis_text)}</p>"),
    ]
    body = []
    for heading, fig_id, extra in sections:
        if fig_id not in figs and not extra:
            continue
        body.append(f"<h2>{html.escape(heading)}</h2>")
        if fig_id in figs:
            height = figs[fig_id]["layout"].get("height", 420)
            body.append(f"<div class='plot' id='{fig_id}' style='height:{height}px'></div>")
        body.append(extra)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script>{_BOOT}</script><script>{get_plotlyjs()}</script></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(str(store.path))} · {now} · "
        "PGR = 100 × (student − base) / (reference − base); 95% paired bootstrap CIs over "
        "evaluation items</p>" + "".join(body)
        + f"<script type='application/json' id='figures'>{data}</script>"
        f"<script>{_DRAW}</script></body></html>"
    )


def write_report(store: Store, out: Path | str, title: str = "datagen benchmark report") -> Path:
    from datagen_core.files import write_output

    return write_output(out, build_report(store, title).encode("utf-8"))

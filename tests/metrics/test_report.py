"""The HTML report renders every plot in headless Chromium without script errors, and the
ranking commands print what the leaderboard holds.

Chromium is a system package (CI: ``apt-get install -y chromium``); without it the rendering
tests skip with that hint. scripts/screenshot_report.sh does the same check by hand.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen_core.errors import DatagenError
from datagen_core.workspace import Workspace
from metrics import facade as api
from metrics.store import Store
from tests.metrics.planting import BENCH_GENERATORS, plant_benchmark, plant_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: apt-get update && apt-get install -y "
    "chromium (CI installs it)")
EXPECTED_PLOTS = 5  # overall, cells, intrinsic heatmap, cost vs PGR, PCA loadings


@pytest.fixture(scope="module")
def benchmark_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a small finished benchmark, planted once for the module (read only)."""
    ws = Workspace(tmp_path_factory.mktemp("bench-ws")).ensure()
    plant_benchmark(Store(ws.db_path), n_items=40)
    return ws.root


def chromium(url: str, profile: Path, *extra: str) -> str:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", *extra, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def body_data(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, "no <body> in the dumped DOM"
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1)))


@needs_chromium
def test_report_renders_every_plot_without_errors(benchmark_ws: Path, tmp_path: Path) -> None:
    out = api.write_report(tmp_path / "report.html", title="test report", workspace=benchmark_ws)
    text = out.read_text()
    assert "<script src" not in text  # self-contained: plotly.js is inlined
    for gen in BENCH_GENERATORS:
        assert gen in text
    dom = chromium(out.as_uri(), tmp_path / "profile", "--dump-dom")
    data = body_data(dom)
    assert "errors" not in data, data.get("errors")
    assert data["expected"] == data["plots"] == str(EXPECTED_PLOTS)
    assert data.get("ready") == "1"
    assert dom.count('class="plot js-plotly-plot"') == EXPECTED_PLOTS
    assert dom.count('class="main-svg"') >= EXPECTED_PLOTS
    assert "R² = " in dom  # the PCA regression ran: 8 runs >= 2 components + 2

    shot = tmp_path / "report.png"
    chromium(out.as_uri(), tmp_path / "profile", f"--screenshot={shot}",
             "--window-size=1280,2000")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1280 and len(png) > 50_000  # not blank


@needs_chromium
def test_a_script_error_is_reported_in_the_dom(benchmark_ws: Path, tmp_path: Path) -> None:
    """The check above can fail: a report whose figure data is broken says so."""
    out = api.write_report(tmp_path / "report.html", workspace=benchmark_ws)
    broken = tmp_path / "broken.html"
    broken.write_text(out.read_text().replace("<script type='application/json' id='figures'>",
                                              "<script type='application/json' id='figures'>{"))
    data = body_data(chromium(broken.as_uri(), tmp_path / "profile", "--dump-dom"))
    assert "errors" in data and data.get("plots", "0") == "0"


def test_report_needs_pgr_rows(tmp_path: Path) -> None:
    store = Store(Workspace.resolve().ensure().db_path)
    plant_run(store, "r", [("q", "a", True, None)])
    with pytest.raises(DatagenError, match="nothing to report"):
        api.write_report(tmp_path / "r.html")


def test_rank_report_metrics_and_pgr_commands(benchmark_ws: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAGEN_WORKSPACE", str(benchmark_ws))
    runner = CliRunner()
    res = runner.invoke(app, ["rank", "--by", "overall"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    order = [r["generator"] for r in api.leaderboard(by="overall")]
    lines = [ln for ln in res.output.splitlines() if any(g in ln for g in order)]
    assert [next(g for g in order if g in ln) for ln in lines] == order
    res = runner.invoke(app, ["rank", "--domain", "math"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "response-generation" in res.output
    assert "code" not in res.output.replace("generation", "")

    res = runner.invoke(app, ["metrics", "run-0-math"])
    assert res.exit_code == 0 and "validity_rate" in res.output and "stored" in res.output

    res = runner.invoke(app, ["pgr", "run-1-code", "-b", "base-model", "-r", "reference-model",
                              "-s", "student-1-mbpp", "--n-boot", "200"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "mbpp" in res.output and "domain mean" in res.output

    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "-o", str(out)])
    assert res.exit_code == 0 and out.stat().st_size > 1_000_000

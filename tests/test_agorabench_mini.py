"""The offline twin of the flagship suite, end to end: every cell type (three AgoraBench methods
x math, code and general; six tasks) goes through generate, curate, train, evaluate and PGR with
the embedded SmolLM2 as generator, reference and judge. Well over an hour on 2 cores, so it has its
own marker (``pytest -m mini``), outside CI's time budget.

SmolLM2-135M cannot produce valid data for most cells (see the suite file), so this pins what a
user sees: every step runs, every cell either is ranked or stops with a named reason, the cells
SmolLM2 can serve (response generation on math) are ranked, every run is decontaminated against
the suite's own evaluation sets, and local generation has a cost."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from datagen.api import bench
from datagen.suite import load_suite
from metrics.store import Store

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bench" / "agorabench-mini.yaml"
REASONS = ("kept no row", "PGR is undefined on every task")


@pytest.mark.mini
@pytest.mark.timeout(7200)
def test_agorabench_mini_runs_every_cell_type_end_to_end(tmp_path: Path) -> None:
    result = bench(load_suite(CONFIG), workspace=tmp_path / "ws", progress=False)
    assert len(result.cells) == 18 and not result.baseline_errors
    for cell in result.cells:  # ranked, or stopped with a reason a user can act on
        assert cell.pgr is not None or any(r in (cell.error or "") for r in REASONS), cell
    ranked = {(c.generator, c.method, c.domain) for c in result.cells if c.pgr is not None}
    for g in ("smollm2-t0.7", "smollm2-t1.0"):
        assert (g, "response-generation", "math") in ranked
    assert {r["generator"] for r in result.leaderboard} == {"smollm2-t0.7", "smollm2-t1.0"}
    store = Store(result.workspace / "datagen.duckdb")
    with store.connect() as con:
        runs = con.execute("SELECT curation, cost_usd, n_requests FROM runs").fetchall()
    for cur, cost, n in runs:
        rec = orjson.loads(cur)
        assert rec["decontaminated"] is True
        assert set(rec["contaminated_by"]) == {
            "gsm8k", "math500", "mbpp", "humaneval", "ifeval", "builtin:general-eval"}
        assert n and cost > 0  # CPU time at the suite's price per hour
    assert result.report_path is not None and result.report_path.is_file()

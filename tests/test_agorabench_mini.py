"""The offline twin of the flagship suite, end to end: every cell type (three AgoraBench methods
x math, code and general, six tasks) generates with the embedded SmolLM2, is curated against the
evaluation sets, trains a scratch student, is evaluated and lands in the leaderboard, with a
cost for the local generators. Slow (see README for how long): run by ``pytest -m slow``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from datagen.cli import app
from metrics.store import Store

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bench" / "agorabench-mini.yaml"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_agorabench_mini_ranks_every_cell(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    r = CliRunner().invoke(app, ["-w", str(ws), "bench", str(CONFIG)],
                           env={"COLUMNS": "200"}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    store = Store(ws / "bench" / "agorabench-mini" / "datagen.duckdb")
    with store.connect() as con:
        cells = con.execute(
            "SELECT generator, method, domain, pgr, cost_usd, run_id FROM leaderboard").fetchall()
        runs = con.execute("SELECT run_id, curation, cost_usd FROM runs").fetchall()
    # 2 generators x 3 methods x 3 domains, every one ranked with a PGR
    assert len(cells) == 18
    assert {(m, d) for _, m, d, *_ in cells} == {
        (m, d) for m in ("instance-generation", "response-generation", "quality-enhancement")
        for d in ("math", "code", "general")}
    assert all(pgr is not None for _, _, _, pgr, _, _ in cells)
    # every run was decontaminated against the suite's own evaluation sets
    for _, cur, _ in runs:
        rec = orjson.loads(cur)
        assert rec["decontaminated"] is True
        assert set(rec["contaminated_by"]) == {
            "gsm8k", "math500", "mbpp", "humaneval", "ifeval", "builtin:general-eval"}
    # local generators have a cost (CPU time at the suite's price per hour)
    assert all(cost > 0 for _, _, _, _, cost, _ in cells)
    assert (ws / "bench" / "agorabench-mini" / "report.html").is_file()

"""A suite's ``select``: every cell also trains on k rows of its run chosen by RDS+ and on k
random rows (the matched-budget control); the dry run shows them; a re-run reuses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from datagen.api import bench, plan_bench
from datagen.suite import parse_suite
from datagen_core.errors import ConfigError
from datagen_core.records import RunManifest
from datagen_core.workspace import Workspace
from tests.test_bench import _backends, _suite
from tests.tiny_embedder import build_tiny_embedder

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


def test_selection_cells_train_on_k_rows_of_each_run_and_are_reused(tiny: Path) -> None:
    suite = parse_suite(_suite(select={"method": "rds", "k": 6, "model": str(tiny)}))
    plan = plan_bench(suite)
    assert len(plan.students) == 2 + 4  # two cells, each with an rds and a random twin
    assert any("right+rds · response-generation · arithmetic: 6 of its 12 rows" in s
               for s, _ in plan.students)
    assert any("select:" in n and "task:arithmetic" in n for n in plan.notes)

    result = bench(suite, backends=_backends())
    assert not result.failed, [(c.label, c.error) for c in result.failed]
    by_name = {c.generator: c for c in result.cells}
    assert set(by_name) == {"right", "wrong", "right+rds", "right+random", "wrong+rds",
                            "wrong+random"}
    assert all(c.pgr is not None for c in result.cells)
    ws = Workspace.resolve(result.workspace)
    for name in ("right+rds", "right+random"):
        cell = by_name[name]
        assert cell.method == "response-generation" and cell.run_id is not None
        manifest = RunManifest.model_validate_json(
            (ws.run_dir(cell.run_id) / "run.json").read_text())
        assert manifest.parents == [by_name["right"].run_id] and manifest.n == 6
        assert manifest.method == "select" and manifest.generator.display == name
    assert {r["generator"] for r in result.overall} >= {"right+rds", "wrong+random"}

    again = bench(suite, backends=_backends())
    select_steps = [r for r in again.steps if r.step == "select"]
    assert len(select_steps) == 4 and {r.status for r in select_steps} == {"reused"}


@pytest.mark.parametrize(("select", "message"), [
    ({"k": 12}, "k=12 is not below the domain's n=12"),
    ({"k": 4, "target": "task:gsm9k"}, "select: unknown task"),
    ({"k": 4, "method": "best"}, "select.method"),
])
def test_a_bad_select_block_is_one_line(select: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_suite(_suite(select=select))

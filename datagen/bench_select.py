"""The selection cells of a bench: a student trained on k rows chosen from a cell's run.

For each cell of a domain with ``select`` (:meth:`datagen.suite.Suite.selections`), after the
cell's own steps: select (RDS+, or random for the control) -> train a student -> evaluate it ->
PGR, each step keyed like the others (the selection is a run whose id fingerprints its parent
and arguments), so a killed bench resumes here too. The selected runs show as generators
``NAME+rds`` / ``NAME+random`` with method ``select``: every such student trains on k rows, the
matched budget that makes "with and without selection" a fair comparison.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datagen_core.errors import DatagenError

if TYPE_CHECKING:
    from datagen.bench import CellResult, _Runner
    from datagen.select import SelectConfig

STEPS = ["select", "train student", "evaluate student", "PGR"]


async def run_select_cell(runner: _Runner, parent: CellResult, cfg: SelectConfig,
                          cell: CellResult, baseline: tuple[list[str], list[str]] | None,
                          baseline_error: str | None) -> None:
    """Select, train, evaluate and score one selection cell (raises nothing: a failure is
    recorded on ``cell`` and its later steps are skipped)."""
    label = f"{cell.generator} · {cell.method} · {cell.domain}"
    if parent.run_id is None:  # its generate step failed
        cell.error, cell.failed_step = "the cell's run failed", "select"
        runner.skip(label, STEPS, "the cell's generate step failed")
        return
    current = STEPS[0]
    try:
        with runner.step(label, current) as rec:
            cell.run_id = await _select(runner, parent.run_id, cfg, rec)
        current = STEPS[1]
        with runner.step(label, current) as rec:
            cell.student_id = await runner.train_student(cell.run_id, rec)
        current = STEPS[2]
        with runner.step(label, current) as rec:
            cell.eval_ids = await runner.evaluate(cell.student_id, cell.domain, rec,
                                                  cell.student_id)
        current = STEPS[3]
        with runner.step(label, current) as rec:
            runner.pgr(cell, rec, baseline, baseline_error)
    except runner.StepFailed as e:
        cell.error, cell.failed_step = str(e), current
        runner.skip(label, STEPS[STEPS.index(current) + 1:], f"{current} failed")


async def _select(runner: _Runner, run_id: str, cfg: SelectConfig, rec: Any) -> str:
    from datagen.select import aselect

    result = await aselect([run_id], cfg, workspace=runner.ws.root)
    if result.reused:
        rec.status = "reused"
    rec.detail = (f"run {result.run_id}: {result.k} of {result.n_pool} rows by {cfg.method}"
                  + (f", {result.embedded} embedded" if result.embedded else ""))
    if not result.k:
        raise DatagenError(f"selection {result.run_id} kept no row")
    return result.run_id

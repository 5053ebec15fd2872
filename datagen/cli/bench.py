"""``datagen bench SUITE.yaml``: run a benchmark suite, or show its plan with ``--dry-run``.

A thin layer over :func:`datagen.api.bench` and :func:`datagen.api.plan_bench`: it
prints one line per step as the bench goes (cell, step, overall count), then the leaderboard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _count(n: int) -> str:
    """12,345 -> 12.3k: plan tables stay readable in 80 columns."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _money(v: float | None) -> str:
    return "?" if v is None else f"${v:,.2f}"


def _print_plan(plan: Any) -> None:
    from rich import box
    from rich.table import Table

    from datagen.cli.console import out

    t = Table(box=box.SIMPLE_HEAD, title=f"suite {plan.suite}: generation plan",
              title_justify="left", pad_edge=False, collapse_padding=True)
    for c in ("generator", "method", "domain", "reqs", "in tok", "out tok ≤", "cost ≤"):
        t.add_column(c, justify="left" if c in ("generator", "method", "domain") else "right",
                     no_wrap=c != "generator", overflow="fold",
                     min_width=12 if c == "generator" else None)
    for c in plan.cells:
        t.add_row(c.generator, c.method, c.domain, _count(c.requests) + ("" if c.exact else "+"),
                  _count(c.prompt_tokens), _count(c.max_completion_tokens),
                  "local" if c.local else _money(c.cost_usd))
    out.print(t)
    specs = dict.fromkeys(f"{c.generator} = {c.spec}" for c in plan.cells)
    out.print("generators: " + "; ".join(specs))
    for note in dict.fromkeys(c.note for c in plan.cells if c.note):  # once each, in order
        out.print(f"  note: {note}")
    out.print(f"generation: {plan.requests:,} requests, "
              f"≈{_count(sum(c.prompt_tokens for c in plan.cells))} prompt tokens, "
              f"≤{_count(sum(c.max_completion_tokens for c in plan.cells))} output tokens, "
              f"cost ≤ {_money(plan.cost_usd)} at list prices"
              + (f" (no price known for {', '.join(plan.unpriced)})" if plan.unpriced else ""))
    if plan.judge_requests:
        out.print(f"judge metric: about {plan.judge_requests:,} judge requests")
    recipes = sorted({r for _, r in plan.students})
    out.print(f"students to train: {len(plan.students)} ({', '.join(recipes)})")
    by_model: dict[str, int] = {}
    unknown = False
    for e in plan.evaluations:
        by_model[e.model] = by_model.get(e.model, 0) + (e.items or 0)
        unknown = unknown or e.items is None
    n_items = sum(by_model.values())
    out.print(f"evaluations: {len(plan.evaluations)} (model x task), {n_items:,} items"
              + (" plus tasks of unknown size" if unknown else ""))
    for note in plan.notes:
        out.print(f"  note: {note}")
    out.print(f"workspace: {plan.workspace}")


def bench_command(
    suite_file: Annotated[Path, typer.Argument(
        metavar="SUITE", help="Suite YAML file (see configs/bench/).")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan, request counts, token and cost estimates; call "
        "nothing.")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Train students on this Ray cluster (Jobs API) instead of a "
        "local Ray.")] = None,
) -> None:
    """Compare generator LMs end to end: generate, curate, score, train a student per cell,
    evaluate, PGR, leaderboard and HTML report. Killed? Run it again: finished steps are reused."""

    from datagen.api import bench
    from datagen.bench import StepRecord, bench_workspace
    from datagen.cli.console import err, out, state, styled
    from datagen.cli.metrics import leaderboard_notes, leaderboard_table
    from datagen.suite import load_suite

    suite = load_suite(suite_file)
    if dry_run:
        from datagen.api import plan_bench

        _print_plan(plan_bench(suite, state.workspace))
        return
    ws = bench_workspace(suite, state.workspace)
    err.print(styled("bench ", (suite.name, "bold"), f": {len(suite.cells())} cells in {ws.root}"))

    def report(rec: StepRecord, started: bool) -> None:
        w = len(str(rec.total))
        head = f"[{rec.index:>{w}}/{rec.total}] {rec.cell} · {rec.step}"
        if started:
            err.print(styled(("▶", "cyan"), f" {head}"))
            return
        mark = {"done": ("✓", "green"), "reused": ("↺", "green"), "failed": ("✗", "red"),
                "skipped": ("-", "yellow"), "interrupted": ("■", "yellow")}.get(rec.status, "?")
        tail = (rec.error if rec.status == "failed" else rec.detail) or ""
        secs = f" ({rec.seconds:.0f} s)" if rec.status in ("done", "failed") else ""
        err.print(styled(mark, f" {head}{secs}" + (f": {tail}" if tail else "")))

    result = bench(suite, workspace=state.workspace, ray_address=ray_address,
                   progress=False if state.quiet else None, reporter=report)
    if result.leaderboard:
        t, _ = leaderboard_table(result.leaderboard, "cell", out.width)
        t.title = f"per cell: {t.title}" if t.title else "per cell"
        t.title_justify = "left"
        out.print(t)
        shown = list(result.leaderboard)
        if len({r["generator"] for r in result.overall}) > 1 and len(result.leaderboard) > len(
                result.overall):
            t2, _ = leaderboard_table(result.overall, "overall", out.width)
            t2.title, t2.title_justify = "overall", "left"
            out.print(t2)
            shown += result.overall
        for line in leaderboard_notes(shown):
            err.print(line)
    for d, e in result.baseline_errors.items():
        err.print(styled((f"baselines of {d} failed", "red"), f": {e}"))
    for c in result.failed:
        err.print(styled(("cell failed", "red"), f" {c.label} at {c.failed_step}: {c.error or ''}"))
    if result.report_path:
        err.print(f"report: {result.report_path}")
    if result.failed or result.baseline_errors:
        raise typer.Exit(1)

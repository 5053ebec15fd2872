"""The benchmarking commands: ``datagen metrics``, ``datagen pgr``, ``datagen rank``,
``datagen report``. Thin layers over :mod:`datagen.api`; wired into the app in
:mod:`datagen.cli`. Imports stay light: the metrics modules load when a command runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from datagen.cli.console import err, out, state, styled


def _f(v: Any, fmt: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def metrics_command(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    stats: Annotated[bool, typer.Option(
        "--stats/--no-stats", help="Validity, duplicate and contamination rates, lengths, "
        "tokens and cost per instance.")] = True,
    diversity: Annotated[bool, typer.Option(
        "--diversity", help="Embedding diversity (instructions, responses) and distinct-n.")
    ] = False,
    judge: Annotated[str | None, typer.Option(
        "--judge", help="Judge spec (provider:model or a YAML file): instruction difficulty and "
        "response quality, 1-5.")] = None,
    judge_items: Annotated[int | None, typer.Option(
        help="Judge a seeded sample of at most this many rows.")] = None,
    issue_bias: Annotated[str | None, typer.Option(
        "--issue-bias", help="Stance judge spec: issue bias of a template-expansion run "
        "(IssueBench), per issue and overall.")] = None,
    reward: Annotated[str | None, typer.Option(
        "--reward", help="Reward model (folder or hub id) for a reward score per row.")] = None,
    perplexity: Annotated[str | None, typer.Option(
        "--perplexity", help="Scoring LM for response perplexity, e.g. smollm2 (a student's "
        "base model).")] = None,
    pairs: Annotated[bool | None, typer.Option(
        "--pairs/--no-pairs", help="Preference-pair metrics: margins, length bias, both-order "
        "consistency, judge vs reward model, per-aspect means (default: when the run has "
        "pairs).")] = None,
    force: Annotated[bool, typer.Option(help="Recompute even if stored.")] = False,
) -> None:
    """Compute intrinsic metrics of a run's data and store them (stored ones are reused)."""
    from datagen import api
    from generators.specs import load_spec

    st = state
    if pairs is None:
        pairs = bool(api.pair_counts(run_id, workspace=st.workspace))
    families = (["stats"] if stats else []) + (["diversity"] if diversity else []) + (
        ["pairs"] if pairs else [])
    configs: dict[str, dict[str, Any]] = {}
    if judge:
        families.append("judge")
        configs["judge"] = {"judge": load_spec(judge), "max_items": judge_items}
    if issue_bias:
        families.append("issue-bias")
        configs["issue-bias"] = {"judge": load_spec(issue_bias), "max_items": judge_items}
    if reward:
        families.append("reward")
        configs["reward"] = {"model": reward}
    if perplexity:
        families.append("perplexity")
        configs["perplexity"] = {"model": perplexity}
    if not families:
        err.print("nothing to compute: add --diversity, --pairs, --judge, --issue-bias, "
                  "--reward or --perplexity")
        raise typer.Exit(2)
    results = api.compute_metrics(run_id, families, configs=configs, force=force,
                                  progress=False if st.quiet else None, workspace=st.workspace)
    t = Table(box=None)
    for col in ("family", "metric", "value", "n", ""):
        t.add_column(col, justify="right" if col in ("value", "n") else "left")
    for r in results:
        for name, (value, n) in r.values.items():
            t.add_row(r.metric, name, _f(value, ".4g"), str(n),
                      "computed" if r.computed else "stored")
        missing = r.details.get("missing")
        if missing:
            t.add_row("", styled(("missing", "dim")), "", str(sum(missing.values())),
                      ", ".join(f"{k}: {v}" for k, v in missing.items()))
    out.print(t)
    if pairs:
        hist = api.pair_margin_histogram(run_id, workspace=st.workspace)
        if hist:
            h = Table(box=None, title="pair margins", title_justify="left")
            for col in ("from", "to", "pairs"):
                h.add_column(col, justify="right")
            for lo, hi, n in hist:
                h.add_row(_f(lo, ".3g"), _f(hi, ".3g"), str(n))
            out.print(h)
    if issue_bias:
        out.print(issue_table(api.issue_table(run_id, workspace=st.workspace)))


def issue_table(rows: list[dict[str, Any]]) -> Table:
    """Per issue: how many responses were judged, the share of each stance, the tendency
    (pro minus con share) and whether one side holds more than two thirds."""
    t = Table(box=None, title="stance per issue (1 pro ... 5 con)", title_justify="left")
    for col in ("issue", "n", "1", "2", "3", "4", "5", "refusal", "tendency", ""):
        t.add_column(col, justify="left" if col in ("issue", "") else "right")
    for r in rows:
        sh = r["shares"]
        t.add_row(r["issue"], str(r["n"]), *(_f(sh[k]) for k in ("1", "2", "3", "4", "5")),
                  _f(sh["refusal"]), _f(r["tendency"], "+.2f"),
                  "one-sided" if r["one_sided"] else "")
    return t


def pgr_command(
    run_id: Annotated[str, typer.Argument(help="The run whose students are scored.")],
    base: Annotated[list[str], typer.Option(
        "--base", "-b", help="Base student: eval id(s) or model name (repeatable).")],
    reference: Annotated[list[str], typer.Option(
        "--reference", "-r", help="Reference student: eval id(s) or model name.")],
    student: Annotated[list[str] | None, typer.Option(
        "--student", "-s", help="Eval id of the run's student, one per task (default: every "
        "evaluation of a student trained on the run).")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """PGR of a run's student per task and for its domain, with 95% bootstrap CIs."""
    from datagen import api

    res = api.compute_pgr(run_id, base=base, reference=reference, students=student,
                          n_boot=n_boot, seed=seed, workspace=state.workspace)
    t = Table(title=f"PGR of {res.generator} ({res.method}, {res.domain})", box=None)
    for col in ("task", "student", "base", "reference", "PGR", "95% CI", "items"):
        t.add_column(col, justify="left" if col == "task" else "right")
    for x in res.tasks:
        t.add_row(x.task, _f(x.student_score, ".3f"), _f(x.base_score, ".3f"),
                  _f(x.reference_score, ".3f"), _f(x.pgr, ".1f"),
                  f"[{_f(x.ci_low, '.1f')}, {_f(x.ci_high, '.1f')}]", str(x.n_items))
    t.add_row(styled(("domain mean", "bold")), "", "", "", styled((_f(res.pgr, ".1f"), "bold")),
              f"[{_f(res.ci_low, '.1f')}, {_f(res.ci_high, '.1f')}]", str(res.n_items))
    out.print(t)


def rank_command(
    by: Annotated[str, typer.Option(
        "--by", help="cell (per method x domain) or overall (per generator).")] = "cell",
    method: Annotated[str | None, typer.Option("--method", "-m")] = None,
    domain: Annotated[str | None, typer.Option("--domain", "-d")] = None,
) -> None:
    """Rank generators by PGR, with CIs, intrinsic metrics, cost and PGR per dollar."""
    from datagen import api

    rows = api.leaderboard(by, method, domain, workspace=state.workspace)
    if not rows:
        err.print("no PGR computed yet: see `datagen pgr`")
        return
    t, _ = leaderboard_table(rows, by, out.width)
    out.print(t)
    for line in leaderboard_notes(rows):
        err.print(line)


def leaderboard_notes(rows: list[dict[str, Any]]) -> list[str]:
    """The footnotes a leaderboard needs: ≈ ties and † data never decontaminated."""
    notes = []
    if any(r["separable"] is False for r in rows):
        notes.append("≈ not separable from the row above: the 95% CI of their PGR difference "
                     "contains 0")
    if any(r.get("decontaminated") is False for r in rows):
        notes.append("† not decontaminated: this data was never checked against the evaluation "
                     "sets (see `datagen runs show RUN`)")
    return notes


# Pair metrics shown beside PGR for preference data (column -> metric): the judge's median
# margin, the chosen side's length advantage, both-order consistency, judge vs reward model.
PAIR_COLUMNS = {"margin": "margin_median", "longer": "chosen_longer_chars",
                "consistent": "both_order_consistency", "judge~RM": "judge_rm_agreement"}


def leaderboard_table(rows: list[dict[str, Any]], by: str = "cell", width: int = 200
                      ) -> tuple[Table, bool]:
    """The leaderboard as a rich table, and whether any row is not separable from the one above
    (``datagen rank`` and ``datagen bench`` print the same table). Below 120 columns of
    terminal the intrinsic columns are left out, so the names and PGRs stay readable."""
    from rich import box

    wide = width >= 120
    t = Table(box=box.SIMPLE_HEAD)
    one_cell = by == "cell" and len({(r["method"], r["domain"]) for r in rows}) == 1
    show_cell = by == "cell" and (wide or not one_cell)
    if one_cell and not show_cell and rows:
        t.title, t.title_justify = f"{rows[0]['method']} · {rows[0]['domain']}", "left"
    cols = ["#", "generator"] + (["method", "domain"] if show_cell else
                                 ["cells"] if by != "cell" else [])
    cols += ["PGR", "95% CI", ""]
    bias = wide and any(r.get("issue_bias") is not None for r in rows)
    correct = wide and any(r.get("accepted_correct") is not None for r in rows)
    pair = wide and any(r.get("chosen_longer_chars") is not None for r in rows)
    cols += ["quality", "difficulty", "diversity"] + (["issue bias"] if bias else []) + (
        ["correct"] if correct else []) + (list(PAIR_COLUMNS) if pair else []) + [
        "valid", "cost $", "PGR/$"] if wide else ["valid", "cost $"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("generator", "method", "domain", "") else
                     "right", no_wrap=c != "generator")
    ties = False
    for r in rows:
        sep = "" if r["separable"] is not False else "≈"
        ties = ties or bool(sep)
        dirty = r.get("decontaminated") is False
        head = [str(r["rank"]), r["generator"] + (" †" if dirty else "")]
        head += ([r["method"] or "-", r["domain"] or "-"] if show_cell else
                 [str(r["n_cells"])] if by != "cell" else [])
        head += [_f(r["pgr"], ".1f"), f"[{_f(r['ci_low'], '.1f')}, {_f(r['ci_high'], '.1f')}]",
                 sep]
        if wide:
            t.add_row(*head, _f(r.get("quality")), _f(r.get("difficulty")),
                      _f(r.get("response_diversity"), ".3f"),
                      *([_f(r.get("issue_bias"))] if bias else []),
                      *([_f(r.get("accepted_correct"))] if correct else []),
                      *([_f(r.get(k)) for k in PAIR_COLUMNS.values()] if pair else []),
                      _f(r.get("validity_rate")),
                      _f(r.get("cost_usd"), ".4f"), _f(r.get("pgr_per_dollar"), ".1f"))
        else:
            t.add_row(*head, _f(r.get("validity_rate")), _f(r.get("cost_usd"), ".4f"))
    return t, ties


def report_command(
    output: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "datagen-report.html"),
    title: Annotated[str, typer.Option(help="Report title.")] = "datagen benchmark report",
) -> None:
    """Write a self-contained HTML report (works offline): PGR with CIs, intrinsic metrics,
    cost vs PGR, and what predicts PGR."""
    from datagen import api

    path = api.write_report(output, title, workspace=state.workspace)
    err.print(f"wrote {path}")

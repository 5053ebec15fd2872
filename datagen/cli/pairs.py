"""``datagen pairs``: count a run's preference pairs, export them for DPO training, and route the
ones the judge is least sure of to people (``route``, ``import-labels``, ``agreement``).

It imports only typer and rich at module level (the export code loads on use), so ``datagen
--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from datagen.cli.console import err, out, state

pairs_app = typer.Typer(
    help="Preference pairs of a run: counts per attribute, export for TRL's DPOTrainer, routing "
    "to human annotators and their labels.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@pairs_app.command("export")
def pairs_export(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    output: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output file (a folder for --format hf).")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="trl (DPOTrainer JSONL), jsonl, parquet or hf.")] = "trl",
    attribute: Annotated[str | None, typer.Option(
        help="Only pairs about this attribute.")] = None,
    min_margin: Annotated[float | None, typer.Option(
        help="Only pairs with at least this margin.")] = None,
    push_to_hub: Annotated[str | None, typer.Option(
        help="Also push to the HF Hub as ORG/NAME.")] = None,
    ignore_labels: Annotated[bool, typer.Option(
        "--ignore-labels", help="Export the judge's pairs as they are, without people's "
        "labels.")] = False,
) -> None:
    """Export a run's pairs (prompt/chosen/rejected chat messages) for preference training.
    People's labels, where a pair has them, win over the judge's: a swap when they preferred
    the rejected side, dropped on a tie."""
    from datagen.pairs import export_pairs, final_pairs

    where = export_pairs(run_id, output, fmt, attribute=attribute, min_margin=min_margin,
                         workspace=state.workspace, push_to_hub=push_to_hub,
                         use_labels=not ignore_labels)
    pairs, sources, ties = final_pairs(run_id, attribute=attribute, min_margin=min_margin,
                                       use_labels=not ignore_labels, workspace=state.workspace)
    n = len(pairs)
    human = sources.count("human")
    if human or ties:
        swapped = sum(1 for p in pairs if p.meta.get("swapped_by_people"))
        err.print(f"{human} pairs labelled by people ({swapped} swapped), {ties} dropped as "
                  f"ties, {n - human} with the judge's label")
    if output is not None:
        err.print(f"wrote {n} pairs to {output}")
    if push_to_hub is not None:
        err.print(f"pushed {n} pairs to {where if output is None else push_to_hub}")


@pairs_app.command("list")
def pairs_list(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
) -> None:
    """Pairs per attribute, with their margins."""
    from datagen.pairs import pair_counts

    rows = pair_counts(run_id, state.workspace)
    if not rows:
        err.print("this run has no preference pairs")
        return
    t = Table()
    t.add_column("attribute")
    for name in ("pairs", "min margin", "mean margin", "max margin"):
        t.add_column(name, justify="right")
    for r in rows:
        t.add_row(str(r["attribute"]), str(r["n"]), _f(r["min_margin"]), _f(r["mean_margin"]),
                  _f(r["max_margin"]))
    out.print(t)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


@pairs_app.command("route")
def pairs_route(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    budget: Annotated[float, typer.Option(
        help="Share of the run's pairs to route (0-1], or a number of pairs above 1.")] = 0.2,
    output: Annotated[Path | None, typer.Option(
        "--out", "-o", help="File for annotators (default routed-RUN.EXT here).")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="jsonl, csv or label-studio (JSON task import).")] = "jsonl",
) -> None:
    """Write the pairs the judge is least reliable on for people to label (Hybrid Preferences):
    blind A/B order, nothing saying which side the judge chose. Labels already given are not
    asked again; once people have labelled enough pairs, a model learnt from them scores."""
    from datagen.routing import default_route_path, route_pairs, write_routed

    res = route_pairs(run_id, budget, None, fmt, workspace=state.workspace)
    path = write_routed(res, output if output is not None else default_route_path(res))
    t = Table(box=None, title="least reliable first (features: higher = less reliable)",
              title_justify="left")
    for col in ("#", "pair", "score", *FEATURE_COLUMNS.values()):
        t.add_column(col, justify="left" if col == "pair" else "right", no_wrap=True)
    for i, r in enumerate(res.pairs[:10], start=1):
        t.add_row(str(i), r.pair_id, _f(r.score), *(_f(r.features[k]) for k in FEATURE_COLUMNS))
    if res.pairs:
        out.print(t)
    err.print(f"routed {len(res.pairs)} of {res.n_pairs} pairs ({res.n_labelled} already "
              f"labelled) to {path}; score: {res.scorer} ({res.note})")
    if res.config_path is not None:
        err.print(f"Label Studio labelling config: {res.config_path}")
    err.print(f"read the labels back with: datagen pairs import-labels {res.run_id} FILE")


# routing feature -> its column: the two orders disagree, small margin, aspects conflict,
# the reward model disagrees
FEATURE_COLUMNS = {"order_disagree": "orders", "small_margin": "margin",
                   "aspect_conflict": "aspects", "rm_disagree": "RM"}


@pairs_app.command("import-labels")
def pairs_import_labels(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    file: Annotated[Path, typer.Argument(help="Labelled file: jsonl or csv from `route`, or a "
                                         "Label Studio JSON / JSON-MIN export.")],
    annotator: Annotated[str | None, typer.Option(
        help="Whose labels these are (default human; label-studio for its exports).")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", help="jsonl, csv or label-studio (default: by the file's "
        "suffix).")] = None,
) -> None:
    """Store people's A/B/tie labels as chosen/rejected/tie (the blind order mapped back)."""
    from datagen.routing import import_labels

    res = import_labels(run_id, file, annotator, fmt, workspace=state.workspace)
    c = res.counts
    who = ", ".join(res.annotators) or "-"
    err.print(f"stored {res.n_labels} labels of run {res.run_id} by {who}: "
              f"{c['chosen']} agree with the judge, {c['rejected']} prefer the rejected side, "
              f"{c['tie']} ties; {res.n_unlabelled} rows without a label skipped")


@pairs_app.command("agreement")
def pairs_agreement(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
) -> None:
    """Judge-human agreement on labelled pairs, overall and per feature bucket, with counts."""
    from datagen.routing import label_agreement

    rows = label_agreement(run_id, workspace=state.workspace)
    t = Table(box=None)
    for col in ("feature", "bucket", "labelled", "agree", "disagree", "tie", "agreement"):
        t.add_column(col, justify="left" if col in ("feature", "bucket") else "right")
    for r in rows:
        t.add_row(r.feature, r.bucket, str(r.n), str(r.agree), str(r.disagree), str(r.tie),
                  _f(r.agreement))
    out.print(t)
    err.print("agreement = agree / (agree + disagree): the share of people's decided labels "
              "that side with the judge; ties apart")

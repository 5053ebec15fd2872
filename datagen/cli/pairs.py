"""``datagen pairs``: count a run's preference pairs and export them for DPO training.

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
    help="Preference pairs of a run: counts per attribute, export for TRL's DPOTrainer.",
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
) -> None:
    """Export a run's pairs (prompt/chosen/rejected chat messages) for preference training."""
    from datagen.pairs import export_pairs, load_pairs

    where = export_pairs(run_id, output, fmt, attribute=attribute, min_margin=min_margin,
                         workspace=state.workspace, push_to_hub=push_to_hub)
    n = len(load_pairs(run_id, attribute=attribute, min_margin=min_margin,
                       workspace=state.workspace))
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

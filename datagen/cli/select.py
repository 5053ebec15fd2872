"""``datagen select``: k rows of runs (or data sets) for a target set, written as a new run.

Mounted by :mod:`datagen.cli`; a thin layer over :func:`datagen.api.select`.
"""

from __future__ import annotations

from typing import Annotated

import typer


def select_command(
    sources: Annotated[list[str], typer.Argument(
        help="Runs (ids or unique prefixes) or data sets (.jsonl/.parquet/..., hf://..., "
        "builtin:NAME) to select from; their rows together are the pool.")],
    k: Annotated[int, typer.Option("-k", help="Rows to select.")],
    target: Annotated[list[str] | None, typer.Option(
        "--target", "-t", help="Target set (rds): a data set, or task:NAME (the prompts of an "
        "evaluation task's last --target-n items). Repeat for a multi-task round-robin.")] = None,
    method: Annotated[str, typer.Option(
        "--method", "-m", help="rds (RDS+: similarity to the target, round-robin over its "
        "items) or random.")] = "rds",
    model: Annotated[str, typer.Option(
        help="Embedding model (the student's base model): smollm2, a folder or a hub id.")
    ] = "smollm2",
    max_length: Annotated[int | None, typer.Option(help="Tokens embedded per row.")] = None,
    target_n: Annotated[int | None, typer.Option(
        help="Items of a task:NAME target (default 32).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per forward pass.")] = None,
    seed: Annotated[int | None, typer.Option(help="random: the seed of the draw.")] = None,
) -> None:
    """Select k rows for a target set (RDS+ or random) as a new run that records its parents."""
    from datagen.api import select
    from datagen.cli.console import err, out, state, styled

    result = select(sources, k=k, target=target or None, method=method, model=model,
                    max_length=max_length, target_n=target_n, batch_size=batch_size,
                    seed=seed, workspace=state.workspace)
    what = ("found (already selected)" if result.reused else
            f"{result.embedded} rows embedded, {result.cached} from the cache, "
            f"{result.seconds:.1f} s")
    out.print(styled(("run ", "bold"), (result.run_id, "bold"),
                     f": {result.k} of {result.n_pool} rows by {result.method} "
                     f"from {', '.join(result.parents)}"))
    err.print(f"{what}; {result.data_path}")

"""``datagen eval``: score a model or a trained student on evaluation tasks, print a table.

Mounted by :mod:`datagen.cli`; the root options come from :mod:`datagen.cli.console`.
"""

from __future__ import annotations

from typing import Annotated

import typer


def eval_command(
    model: Annotated[str, typer.Argument(
        help="A generator spec (hf:PATH, hf:smollm2, openai:MODEL, vllm:PATH, ...) or a "
        "student id (its model is WORKSPACE/students/ID/model).")],
    task: Annotated[list[str] | None, typer.Option(
        "--task", "-t", help="Task, repeatable: gsm8k, math500, mbpp, humaneval, ifeval, "
        "arithmetic, winrate (needs --judge).")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", "-n", help="Only the first N items of each task (a fixed slice).")] = None,
    judge: Annotated[str | None, typer.Option(
        "--judge", "-j", help="Judge LM spec for judge tasks, e.g. openai:gpt-4o-mini.")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        help="Generation budget per answer (default: each task's own).")] = None,
    arg: Annotated[list[str] | None, typer.Option(
        "--arg", "-a", help="Task argument KEY=VALUE (YAML value) for every task given, "
        "repeatable: -a category_field=category -a agreement=labels.jsonl")] = None,
) -> None:
    """Evaluate a model or student: greedy answers through the cached engine, then scores."""
    from rich import box
    from rich.table import Table

    from datagen.api import evaluate
    from datagen.cli.console import err, out, parse_key_values, state, styled
    from datagen_core.errors import ConfigError
    from students.tasks import TASKS, get_task

    if not task:
        raise ConfigError(f"give at least one --task: {', '.join(TASKS.names())}")
    args = parse_key_values(arg or [])
    if max_tokens is not None:
        args["max_tokens"] = max_tokens
    tasks = [get_task(name, **args) for name in task]
    result = evaluate(model, tasks, workspace=state.workspace, limit=limit, judge=judge,
                      progress=False if state.quiet else None)
    who = f"student {result.student_id} ({result.model})" if result.student_id else result.model
    t = Table(box=box.SIMPLE_HEAD, title=who, title_justify="left")
    t.add_column("task", no_wrap=True)
    t.add_column("metric", no_wrap=True)
    t.add_column("value", justify="right", no_wrap=True)
    t.add_column("n", justify="right", no_wrap=True)
    t.add_column("eval", no_wrap=True)
    for r in result.tasks:
        state_note = "stored" if r.cached else ("new" if r.complete else "incomplete")
        names = [r.primary_metric, *sorted(m for m in r.metrics if m != r.primary_metric)]
        for i, name in enumerate(names):
            value = f"{r.metrics[name]:.4f}"
            t.add_row(r.task if i == 0 else "", styled((name, "bold")) if i == 0 else name,
                      styled((value, "bold")) if i == 0 else value, str(r.n) if i == 0 else "",
                      f"{r.eval_id} ({state_note})" if i == 0 else "")
    out.print(t)
    incomplete = [r.task for r in result.tasks if not r.complete]
    if incomplete:
        err.print(f"not stored (requests failed, run again to retry): {', '.join(incomplete)}")

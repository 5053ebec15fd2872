"""``datagen train`` and ``datagen students``: train a student on a run, list and show students.

Mounted by :mod:`datagen.cli`; the root options come from :mod:`datagen.cli.console`. Nothing
heavy is imported until a command runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

students_app = typer.Typer(help="List trained students, or show one.", rich_markup_mode=None)


def train_command(
    data: Annotated[str, typer.Argument(
        help="A run id (or unique prefix) whose data to train on, or a data file "
        "(.jsonl/.parquet with chat `messages`; prompt/chosen/rejected for DPO).")],
    recipe: Annotated[str, typer.Option(
        "--recipe", "-r", help="Preset (tiny-llama, smollm2-lora, sft, dpo, tiny-llama-dpo, "
        "smollm2-lora-dpo) or a recipe .yaml file.")] = "tiny-llama",
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", envvar="RAY_ADDRESS", help="Submit to this Ray cluster's Jobs API "
        "(http://HEAD:8265); default: a private local Ray.")] = None,
    no_ray: Annotated[bool, typer.Option(
        "--no-ray", help="Train in this process, without Ray.")] = False,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-device batch size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed.")] = None,
    base_model: Annotated[str | None, typer.Option(
        help="Base model: hub id, local folder, smollm2 or scratch.")] = None,
    num_cpus: Annotated[float | None, typer.Option(help="CPUs per training task.")] = None,
    num_gpus: Annotated[float | None, typer.Option(help="GPUs per training task.")] = None,
    timeout: Annotated[float | None, typer.Option(
        help="Give up (and cancel the training) after this many seconds.")] = None,
) -> None:
    """Train a student LM on a run's data (SFT on messages, or DPO on pairs) as a Ray job."""
    from datagen.cli.console import err, state, styled
    from datagen.training import train
    from students.recipes import load_recipe

    r = load_recipe(recipe, epochs=epochs, max_steps=max_steps, learning_rate=learning_rate,
                    batch_size=batch_size, seed=seed, base_model=base_model,
                    resources={"num_cpus": num_cpus, "num_gpus": num_gpus})
    if not state.quiet:
        where = "in this process" if no_ray else (f"on Ray at {ray_address}" if ray_address
                                                   else "on a local Ray")
        err.print(f"training {r.label} on {data} {where} ...")
    rec = train(data, r, state.workspace, ray_address, use_ray=not no_ray, timeout_s=timeout)
    err.print(styled("student ", (rec.student_id, "bold"), f": {rec.steps} steps, "
                     f"{_f(rec.train_seconds, '.1f')} s, final loss {_f(rec.final_loss, '.4f')}"))
    err.print(f"model: {rec.path}")


@students_app.callback(invoke_without_command=True)
def students_default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        students_list()


@students_app.command("list")
def students_list() -> None:
    """Students in the workspace, newest first."""
    from rich import box
    from rich.table import Table

    from datagen.cli.console import err, out, state
    from datagen.training import list_students

    rows = list_students(state.workspace)
    if not rows:
        err.print("no students yet: try `datagen train RUN_ID`")
        return
    t = Table(box=box.SIMPLE_HEAD)
    t.add_column("student", no_wrap=True, min_width=16)
    t.add_column("status", no_wrap=True)
    t.add_column("recipe", no_wrap=True)
    t.add_column("base model", overflow="ellipsis", no_wrap=True)
    t.add_column("run", no_wrap=True)
    t.add_column("seconds", justify="right", no_wrap=True)
    t.add_column("loss", justify="right", no_wrap=True)
    for r in rows:
        t.add_row(r["student_id"], r["status"], f"{r['recipe_name'] or '-'} ({r['kind']})",
                  r["base_model"], r["data_run_id"] or "(file)",
                  _f(r["train_seconds"], ".1f"), _f(r["final_loss"], ".4f"))
    out.print(t)


@students_app.command("show")
def students_show(
    student: Annotated[str, typer.Argument(help="Student id or a unique prefix.")],
) -> None:
    """One student: recipe, data, timing, loss and where its model is."""
    from rich.table import Table

    from datagen.cli.console import out, state, styled
    from datagen.training import show_student

    rec = show_student(student, state.workspace)
    r = rec.recipe
    t = Table(show_header=False, box=None)
    rows: list[tuple[str, Any]] = [
        ("student", rec.student_id), ("status", rec.status),
        ("recipe", f"{r.label} ({r.kind}{', LoRA r=' + str(r.lora.r) if r.lora else ''})"),
        ("base model", r.base_model),
        ("data", f"run {rec.data.run_id}" if rec.data.run_id else rec.data.path),
        ("examples", rec.n_examples), ("steps", rec.steps),
        ("schedule", f"{r.epochs:g} epochs, lr {r.learning_rate:g} {r.scheduler}, batch "
                     f"{r.batch_size} x {r.grad_accum}, max length {r.max_length}"),
        ("train time", f"{_f(rec.train_seconds, '.1f')} s on {rec.device or '-'}"),
        ("loss", f"final {_f(rec.final_loss, '.4f')}, mean {_f(rec.train_loss, '.4f')}"),
        ("parameters", rec.n_params), ("model", rec.path),
    ]
    if rec.error:
        rows.append(("error", rec.error))
    for k, v in rows:
        t.add_row(styled((k, "bold")), "-" if v is None else str(v))
    out.print(t)


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)

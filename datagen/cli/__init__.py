"""The ``datagen`` command: a thin layer over the Python API (:mod:`datagen.api`).

Each command module (``runs``, ``select``, ``pairs``, ``students``, ``eval``, ``metrics``,
``bench``, ``serve``) is thin functions over the API and imports only
:mod:`datagen.cli.console`, which holds the output consoles and the root options; this module
mounts them and is imported by nothing. Errors a user can fix print one line and exit
non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from datagen.cli.bench import bench_command
from datagen.cli.console import err, state, styled
from datagen.cli.eval import eval_command
from datagen.cli.metrics import metrics_command, pgr_command, rank_command, report_command
from datagen.cli.pairs import pairs_app
from datagen.cli.runs import export, generate, runs_app
from datagen.cli.select import select_command
from datagen.cli.serve import serve_command
from datagen.cli.students import students_app, train_command
from datagen_core.errors import DatagenError
from datagen_core.secrets import install_log_filter, redact

INTERRUPTED = "interrupted: answers received so far are saved; run the same command again to resume"


class _Group(TyperGroup):
    """Ctrl-C anywhere: say what was kept and how to resume (typer would exit 130 silently)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print(INTERRUPTED)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    help="Generate synthetic training data with any LM, and benchmark the LMs that generate it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help text is plain: `hf://org/name[/config]` is not a closing tag
)


@app.callback()
def _main(
    workspace: Annotated[Path | None, typer.Option(
        "--workspace", "-w", envvar="DATAGEN_WORKSPACE",
        help="Workspace folder (default ./datagen-workspace).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    state.debug, state.workspace, state.quiet = debug, workspace, quiet
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not debug and not quiet:
        # datagen's own notices ("converting the model once ...") without library chatter
        logging.getLogger("datagen").setLevel(logging.INFO)
    install_log_filter()


# The workflow, in the order a user meets it: data, students, scores, ranking.
app.command()(generate)
app.add_typer(runs_app, name="runs")
app.command()(export)
app.command("select")(select_command)
app.add_typer(pairs_app, name="pairs")
app.command("train")(train_command)
app.add_typer(students_app, name="students")
app.command("eval")(eval_command)
app.command("metrics")(metrics_command)
app.command("pgr")(pgr_command)
app.command("rank")(rank_command)
app.command("report")(report_command)
app.command("bench")(bench_command)
app.command("serve")(serve_command)


def main() -> None:
    """Entry point: run the app, turning errors into one line unless --debug."""
    try:
        app()
    except DatagenError as e:
        if state.debug:
            raise
        err.print(styled(("error:", "red"), " ", redact(str(e))))
        sys.exit(e.exit_code)
    except OSError as e:  # the machine's state, not a bug: a path not ours to read or write
        if state.debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        err.print(styled(("error:", "red"), f" {redact(e.strerror or str(e))}{where}"))
        sys.exit(1)
    except KeyboardInterrupt:
        err.print(INTERRUPTED)
        sys.exit(130)
    except Exception as e:
        if state.debug:
            raise
        err.print(styled(("internal error:", "red"), f" {type(e).__name__}: {redact(str(e))} "
                         "(run with --debug for the traceback)"))
        sys.exit(1)


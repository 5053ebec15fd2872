"""``datagen serve``: open the workspace in the browser. A thin layer over
:func:`datagen.api.serve`; the web app (starlette, uvicorn) loads only when the command runs."""

from __future__ import annotations

from typing import Annotated

import typer

from datagen.cli.console import err, state


def serve_command(
    port: Annotated[int, typer.Option("--port", "-p", help="Port (0: any free port).")] = 8765,
    host: Annotated[str, typer.Option(
        help="Address to bind. Anything but the loopback needs --expose.")] = "127.0.0.1",
    expose: Annotated[bool, typer.Option(
        "--expose", help="Allow a non-loopback --host: anyone who can reach it can read the "
        "workspace and write labels (there is no login); a warning says so.")] = False,
    annotator: Annotated[str, typer.Option(
        help="Name the labelling page stores labels under.")] = "local",
) -> None:
    """A local web app over the workspace: leaderboard, runs and their rows, comparison of
    generators on the same seeds, pairs, and a keyboard-driven labelling page (Ctrl-C stops)."""
    from datagen import api

    def announce(url: str) -> None:
        where = state.workspace or "the workspace"
        err.print(f"serving {where} at {url} (Ctrl-C to stop)")

    api.serve(state.workspace, host=host, port=port, expose=expose, annotator=annotator,
              announce=announce)

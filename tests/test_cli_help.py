"""``--help`` works for every command and subcommand of the ``datagen`` CLI.

The command tree is read from the Typer app itself, so a new command is covered without editing
this file. A help text that fails to render (e.g. rich markup in a help string) fails here, named
by its command path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from datagen.cli import app

ROOT_COMMAND = typer.main.get_command(app)


def _is_group(cmd: Any) -> bool:
    # Recent typer releases vendor click (typer._click): duck-type rather than isinstance.
    return callable(getattr(cmd, "list_commands", None))


def _command_paths() -> list[tuple[str, ...]]:
    """Every command path below the root, groups included: ("runs",), ("runs", "show"), ..."""
    paths: list[tuple[str, ...]] = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        if not _is_group(cmd):
            return
        ctx = cmd.context_class(cmd, info_name=path[-1] if path else "datagen")
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, (path, name)
            paths.append((*path, name))
            walk(sub, (*path, name))

    walk(ROOT_COMMAND, ())
    return paths


COMMAND_PATHS = _command_paths()


def _resolve(path: tuple[str, ...]) -> Any:
    cmd: Any = ROOT_COMMAND
    for name in path:
        assert _is_group(cmd), path
        sub = cmd.get_command(cmd.context_class(cmd), name)
        assert sub is not None, path
        cmd = sub
    return cmd


def _flat(text: str) -> str:
    """Help text with rich's box drawing and line wrapping removed, for substring checks."""
    for ch in "│╭╮╰╯─":
        text = text.replace(ch, " ")
    return " ".join(text.split())


def _check_help(path: tuple[str, ...], exit_code: int, output: str) -> None:
    name = " ".join(("datagen", *path))
    assert exit_code == 0, f"`{name} --help` exited {exit_code}:\n{output}"
    assert "Traceback" not in output, output
    flat = _flat(output)
    assert f"Usage: {name}" in flat, f"`{name} --help` has no usage line:\n{output}"
    assert "--help" in flat, output
    cmd = _resolve(path)
    if _is_group(cmd):  # a group's help lists its subcommands
        for sub in cmd.list_commands(cmd.context_class(cmd)):
            assert sub in flat, f"`{name} --help` does not list `{sub}`:\n{output}"


def test_the_tree_has_the_documented_commands():
    top = {p[0] for p in COMMAND_PATHS}
    for name in ("generate", "runs", "export", "pairs", "train", "students", "eval", "metrics",
                 "pgr", "rank", "report", "bench"):
        assert name in top, sorted(top)
    assert ("runs", "show") in COMMAND_PATHS and ("pairs", "export") in COMMAND_PATHS


@pytest.mark.parametrize("path", [(), *COMMAND_PATHS],
                         ids=lambda p: " ".join(("datagen", *p)))
def test_help(path: tuple[str, ...], tmp_path: Path):
    # A fresh workspace that does not exist: --help must not need one.
    res = CliRunner().invoke(app, ["-w", str(tmp_path / "ws"), *path, "--help"],
                             env={"COLUMNS": "100", "NO_COLOR": "1"}, prog_name="datagen")
    output = res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        output += "".join(traceback.format_exception(res.exception))
    _check_help(path, res.exit_code, output)


def _console_script() -> str:
    """The installed ``datagen`` entry point of this interpreter's environment."""
    beside = Path(sys.executable).parent / "datagen"
    found = str(beside) if beside.exists() else shutil.which("datagen")
    if found is None:
        pytest.fail("the `datagen` console script is not installed (pip install -e .)")
    return found


@pytest.mark.parametrize("path", [(), ("generate",), ("bench",), ("runs", "show")],
                         ids=lambda p: " ".join(("datagen", *p)))
def test_help_through_the_console_script(path: tuple[str, ...], tmp_path: Path):
    """The installed entry point, in a fresh process: what a user types after the install."""
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1", DATAGEN_WORKSPACE=str(tmp_path / "ws"))
    r = subprocess.run([_console_script(), *path, "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    _check_help(path, r.returncode, r.stdout + r.stderr)

"""The CLI's two consoles (rich markup switched off) and the root options every command reads.

Everything the CLI prints carries user text: paths, run and generator names, column names, error
messages, model output. With markup on, ``[/q]`` in any of them crashes the print and
``data[red].jsonl`` silently loses a part, so markup is off everywhere and emphasis is given as
styles on :class:`rich.text.Text` spans (:func:`styled`), never parsed out of strings.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

out = Console(markup=False, highlight=False, emoji=False)
err = Console(stderr=True, markup=False, highlight=False, emoji=False, soft_wrap=True)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Plain strings and ``(text, style)`` pairs: ``styled(("error:", "red"), " ", msg)``."""
    return Text.assemble(*parts)


class State:
    """The root options (``--workspace``, ``--debug``, ``--quiet``), set before any command runs:
    the one place commands read them from."""

    debug = False
    workspace: Path | None = None
    quiet = False


state = State()

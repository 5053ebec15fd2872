"""The CLI's two consoles (rich markup switched off) and the root options every command reads.

Everything the CLI prints carries user text: paths, run and generator names, column names, error
messages, model output. With markup on, ``[/q]`` in any of them crashes the print and
``data[red].jsonl`` silently loses a part, so markup is off everywhere and emphasis is given as
styles on :class:`rich.text.Text` spans (:func:`styled`), never parsed out of strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def parse_key_values(items: list[str]) -> dict[str, Any]:
    """``--arg KEY=VALUE`` options as a dict, each value read as YAML (``k=5`` is an int)."""
    import yaml

    from datagen_core.errors import ConfigError

    found: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad --arg {item!r}: use KEY=VALUE, e.g. -a k=5")
        try:
            found[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"bad --arg {item!r}: the value is not valid YAML ({first}); "
                              "quote it, e.g. -a 'k=\"[1,2\"'") from None
    return found

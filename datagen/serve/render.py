"""HTML out of templates: one Jinja2 environment with autoescape on for everything it renders.

Every string a page shows is data, model output above all (a generated answer may hold
``<script>``, a prompt injection, broken markup): templates print values with ``{{ }}``, which
escapes them, and nothing in this package marks user text safe. The one exception is
:func:`json_script`, which makes JSON for a ``<script type="application/json">`` block inert by
escaping ``<``, ``>`` and ``&`` as JSON ``\\u`` escapes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2
import orjson
from markupsafe import Markup
from starlette.responses import HTMLResponse

TEMPLATES = Path(__file__).parent / "templates"


def num(v: Any, fmt: str = ".2f") -> str:
    """A number for a table cell; "-" for missing and non-finite values."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def pretty(v: Any) -> str:
    """JSON, indented, for a ``<pre>`` (escaped by the template like any text)."""
    return orjson.dumps(v, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                        | orjson.OPT_NON_STR_KEYS).decode()


def json_script(v: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: no ``</script>`` can end it."""
    text = orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(num=num, pretty=pretty, json_script=json_script)
    return env


ENV = _env()


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A rendered template as a response."""
    return HTMLResponse(ENV.get_template(template).render(**context), status_code=status_code)

"""Judge rubrics (string.Template, ``$instruction`` / ``$response``), one file per aspect x domain:
``difficulty-<domain>.txt`` rates an instruction alone, ``quality-<domain>.txt`` a response to it.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from datagen_core.errors import ConfigError

HERE = Path(__file__).resolve().parent
DOMAINS = ("math", "code", "general")


def load(aspect: str, domain: str) -> Template:
    path = HERE / f"{aspect}-{domain}.txt"
    if not path.is_file():
        raise ConfigError(f"no {aspect} rubric for domain {domain!r}: use one of "
                          f"{', '.join(DOMAINS)}")
    return Template(path.read_text())

"""Question attributes (clarity, focus, ...) for the attribute-variants method.

An attribute is data, not code: a name, a definition and an anchored 1-5 scale. The built-ins
ship in ``generators/attributes.yaml``; a user adds their own in a YAML file of the same shape
(``attributes: [{name, definition, scale: {1: ..., 5: ...}}]``, or a bare list), so a new
attribute needs no plug-in. An entry in the user's file with a built-in's name replaces it: a
team that disagrees with our anchors can swap them without forking the package.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datagen_core.errors import ConfigError, InputError
from datagen_core.records import validation_message

BUILTIN_FILE = "attributes.yaml"


class Attribute(BaseModel):
    """One attribute: what more of it means, and what each score from 1 to 5 looks like."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    definition: str = Field(min_length=10)
    scale: dict[int, str]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_\-]*", v):
            raise ValueError(f"bad attribute name {v!r}: use lowercase letters, digits, - and _")
        return v

    @field_validator("scale")
    @classmethod
    def _five_levels(cls, v: dict[int, str]) -> dict[int, str]:
        if sorted(v) != [1, 2, 3, 4, 5]:
            raise ValueError(f"scale needs exactly the levels 1-5, got {sorted(v)}")
        if any(not text.strip() for text in v.values()):
            raise ValueError("every scale level needs a description")
        return {k: v[k].strip() for k in sorted(v)}

    def scale_text(self) -> str:
        """The scale as prompt lines: ``1: ...`` to ``5: ...``."""
        return "\n".join(f"{k}: {text}" for k, text in self.scale.items())


def _parse(data: Any, where: str) -> dict[str, Attribute]:
    entries = data.get("attributes") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected 'attributes:' with a list of "
                          "{name, definition, scale} entries")
    out: dict[str, Attribute] = {}
    for i, entry in enumerate(entries, 1):
        try:
            attr = Attribute.model_validate(entry)
        except ValidationError as e:
            raise ConfigError(f"{where}: attribute #{i}: {validation_message(e)}") from None
        if attr.name in out:
            raise ConfigError(f"{where}: attribute {attr.name!r} is defined twice")
        out[attr.name] = attr
    return out


@lru_cache(maxsize=1)
def builtin_attributes() -> dict[str, Attribute]:
    """The attributes shipped with datagen, by name, in file order."""
    text = (Path(__file__).parent / BUILTIN_FILE).read_text(encoding="utf-8")
    return _parse(yaml.safe_load(text), f"generators/{BUILTIN_FILE}")


def read_attribute_file(path: str | Path) -> dict[str, Attribute]:
    """User-defined attributes from a YAML file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"no such attributes file: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return _parse(data, str(path))


def known_attributes(file: str | Path | None = None) -> dict[str, Attribute]:
    """Built-ins, then the file's entries (which replace built-ins of the same name)."""
    known = dict(builtin_attributes())
    if file is not None:
        known.update(read_attribute_file(file))
    return known


def resolve_attributes(names: list[str] | None,
                       file: str | Path | None = None) -> list[Attribute]:
    """The attributes to use: ``names`` in order, or every known one (built-ins and the file's).

    Unknown names are one error listing what is available, before any request is sent.
    """
    known = known_attributes(file)
    if names is None:
        return list(known.values())
    if not names:
        raise ConfigError("attributes is empty: name at least one, or leave it out for all")
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"unknown attribute(s) {', '.join(map(repr, missing))}: choose from "
                          f"{', '.join(known)} or define them in attributes_file")
    return [known[n] for n in dict.fromkeys(names)]

"""Generator specs from what users write: ``provider:model[@url]``, a generator YAML file, a
dict, or a spec, with sampling, limits and price merged over it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from datagen_core.errors import ConfigError, NotFoundError
from datagen_core.records import GeneratorSpec, validation_message
from datagen_core.workspace import Workspace

#: ``student:<student id>``: a student trained in the workspace, as a generator
STUDENT_PROVIDER = "student"


def load_spec(spec: str | GeneratorSpec | dict[str, Any], **overrides: Any) -> GeneratorSpec:
    """A spec from ``provider:model[@url]``, a YAML file of one, a dict, or a spec; ``overrides``
    (e.g. ``sampling={"temperature": 0}``, ``limits={"rpm": 60}``) are merged over it."""
    if isinstance(spec, GeneratorSpec):
        base: dict[str, Any] = spec.model_dump(exclude_unset=True)
    elif isinstance(spec, dict):
        base = dict(spec)
    elif spec.endswith((".yaml", ".yml")):
        base = _generator_file(spec)
    else:
        base = GeneratorSpec.parse(spec).model_dump(exclude_unset=True)
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(base.get(name), dict | None):
            base[name] = {**(base.get(name) or {}), **{k: v for k, v in value.items()
                                                     if v is not None}}
        else:
            base[name] = value
    try:
        return GeneratorSpec.model_validate(base)
    except ValidationError as e:
        raise ConfigError(f"bad generator settings: {validation_message(e)}") from None


def _generator_file(path: str) -> dict[str, Any]:
    """A generator YAML file's fields: ``spec: provider:model[@url]`` plus settings. A setting
    that the spec already fixes (``provider: openai`` beside ``spec: fake``) is an error, not a
    silent switch of provider."""
    from datagen_core.sources import read_yaml_mapping

    data = read_yaml_mapping(path, "generator", "a mapping with 'spec: provider:model' and "
                             "settings (sampling, limits, price, options)")
    text = data.pop("spec", None)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{path}: 'spec' must be a string such as openai:gpt-4o-mini, got "
                          f"{text!r}")
    fixed = GeneratorSpec.parse(text).model_dump(exclude_unset=True)
    for key in ("provider", "model", "base_url"):
        if key in data and data[key] != fixed.get(key):
            raise ConfigError(f"{path}: {key}: {data[key]!r} conflicts with spec {text!r}; give "
                              "it in one place")
    for key in ("sampling", "limits", "price", "options"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            raise ConfigError(f"{path}: {key}: expected a mapping, got {data[key]!r}")
    return {**fixed, **data}


def student_generator(spec: GeneratorSpec, workspace: Path | None) -> GeneratorSpec:
    """A ``student:<id>`` spec -> an ``hf`` spec serving ``<workspace>/students/<id>/model``,
    keeping its sampling, limits and options (so a generator YAML file with ``spec:
    student:<id>`` sets how the student samples). Any other spec is returned as is.

    The folder layout is the workspace's, so this needs nothing from ``students`` (a layer
    above). The ``hf`` backend loads a local folder as it loads a hub id; the spec's model is
    the folder's path, as when a student is evaluated, and its name stays ``student:<id>``.
    With no workspace (a dry run, which loads nothing) the default workspace gives the path and
    the folder is not checked.
    """
    if spec.provider != STUDENT_PROVIDER:
        return spec
    sid = spec.model.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", sid) or spec.base_url:
        raise ConfigError(f"bad student spec {spec.label!r}: use student:<student id> (see "
                          "datagen students list)")
    folder = Workspace.resolve(workspace).student_model_dir(sid)
    if workspace is not None and not (folder / "config.json").is_file():
        raise NotFoundError(f"student {sid}: no trained model at {folder}; train it first "
                            "(datagen train) or check --workspace")
    return spec.model_copy(update={"provider": "hf", "model": str(folder),
                                   "name": spec.name or f"student:{sid}"})

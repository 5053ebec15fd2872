"""One registry mechanism for backends, methods, evaluators and tasks.

Built-ins are declared once, as entry points in pyproject.toml, exactly like third-party
plug-ins, so the plug-in path is exercised by every run (a bare checkout needs ``pip install -e .``
for its entry points). Objects can also be registered in-process with the
decorator (tests, notebooks). Entries are imported only when first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from datagen_core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._loaded: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self._loaded[name] = obj
            return obj

        return deco

    def _targets(self) -> dict[str, str]:
        return {ep.name: ep.value for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted(set(self._targets()) | set(self._loaded))

    def get(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        target = self._targets().get(name)
        if target is None:
            raise ConfigError(
                f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}"
            )
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        obj: Any = module
        for part in attr.split(".") if attr else []:  # "pkg.module" names the module itself
            obj = getattr(obj, part)
        self._loaded[name] = obj
        return obj

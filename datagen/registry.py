"""One registry mechanism for backends, methods, evaluators and tasks.

Built-ins are declared as entry points in pyproject.toml, exactly like third-party plug-ins, so
the plug-in path is exercised by every run. Objects can also be registered in-process with the
decorator (tests, notebooks). Entries are imported only when first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from datagen.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtins: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.group = group
        # "module:attr" targets used when the package metadata is not installed (e.g. a bare
        # checkout on sys.path); installed entry points take precedence.
        self._builtins = dict(builtins or {})
        self._loaded: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self._loaded[name] = obj
            return obj

        return deco

    def _targets(self) -> dict[str, str]:
        targets = dict(self._builtins)
        for ep in entry_points(group=self.group):
            targets[ep.name] = ep.value
        return targets

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
        for part in attr.split("."):
            obj = getattr(obj, part)
        self._loaded[name] = obj
        return obj

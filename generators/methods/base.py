"""Methods: recipes that turn seed rows into requests, and responses into records.

A method is registered by name with a version; its arguments are a pydantic model (unknown
arguments are errors) and only the non-default ones enter the run id, so adding an argument with a
default does not invalidate existing runs. Bump ``version`` when a method's output changes.
Parsing reads stored raw responses, so changing ``parse`` and bumping the version re-parses old
answers from the cache without a single API call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from datagen.errors import ConfigError
from datagen.records import GenRequest, GenResponse, Instance, validation_message
from datagen.registry import Registry


class MethodArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Method(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    Args: ClassVar[type[MethodArgs]] = MethodArgs

    def __init__(self, **args: Any) -> None:
        try:
            self.args = self.Args(**args)
        except ValidationError as e:
            raise ConfigError(f"method {self.name}: {validation_message(e)}") from None

    def non_default_args(self) -> dict[str, Any]:
        return self.args.model_dump(mode="json", exclude_defaults=True)

    @abstractmethod
    def requests(self, rows: list[dict[str, Any]], source: str) -> list[GenRequest]:
        """One request per record to produce; ``meta`` carries what parse needs."""

    @abstractmethod
    def parse(self, index: int, request: GenRequest, response: GenResponse) -> Instance:
        """A record from a stored response; failures are rejected records, never exceptions."""


METHODS: Registry[type[Method]] = Registry(
    "method", "datagen.methods", builtins={"prompt": "generators.methods.prompt:PromptMethod"}
)

"""Methods: recipes that turn seed rows into requests, and responses into records.

A method is registered by name with a version; its arguments are a pydantic model (unknown
arguments are errors) and only the non-default ones enter the run id, so adding an argument with a
default does not invalidate existing runs. Bump ``version`` when a method's output changes.
Parsing reads stored raw responses, so changing ``parse`` and bumping the version re-parses old
answers from the cache without a single API call.

Most methods are one round: :meth:`Method.requests`, then :meth:`Method.parse` per response. A
method that feeds its own outputs back (instance generation with accepted demonstrations)
overrides :meth:`Method.run` and calls ``ctx.generate`` once per round; since every round's
requests are a deterministic function of earlier (cached) answers, a resumed run replays the same
rounds and pays only for what is missing.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from datagen_core.errors import ConfigError, InputError
from datagen_core.records import (
    GeneratorSpec,
    GenRequest,
    GenResponse,
    Instance,
    Pair,
    validation_message,
)
from datagen_core.registry import Registry


class MethodArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


Generate = Callable[[list[GenRequest]], Awaitable[list[GenResponse]]]


@dataclass
class MethodContext:
    """What a method run gets: its rows, domain, target count and a way to call the generator.

    ``generate_with(spec)`` gives a ``generate`` for another LM (a judge, an editor) that is
    cached, logged (``runs/<id>/responses-<spec hash>.jsonl``) and resumable like the main one.
    """

    rows: list[dict[str, Any]]
    source: str
    n: int | None
    domain: str | None
    generate: Generate
    generate_with: Callable[[GeneratorSpec | str], Generate] | None = None
    #: the run's generator label (``provider:model``), for methods that record who wrote what
    generator: str | None = None
    #: the run's workspace root, for methods that read its other contents (a trained student's
    #: model folder); None in a dry run
    workspace: Path | None = None


@dataclass
class Produced:
    """Everything a method run made, index-aligned: request i got response i and instance i."""

    requests: list[GenRequest] = field(default_factory=list)
    responses: list[GenResponse] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    #: preference pairs, for methods that make them (not index-aligned with requests)
    pairs: list[Pair] = field(default_factory=list)
    #: responses from other LMs (judges, editors), stored after the main ones
    extra_responses: list[GenResponse] = field(default_factory=list)


class Method(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    Args: ClassVar[type[MethodArgs]] = MethodArgs
    #: "rows": ``n`` limits the seed rows read; "outputs": ``n`` is how many items to make.
    n_means: ClassVar[str] = "rows"
    #: whether the domain matters (agora methods) or not (plain prompting)
    uses_domain: ClassVar[bool] = False
    #: whether the method writes preference pairs (what a DPO suite's cells must make)
    makes_pairs: ClassVar[bool] = False
    #: whether outputs are new instructions (dedup against seeds makes sense)
    new_instructions: ClassVar[bool] = False
    #: seed set used when the user names none (e.g. ``builtin:alfa``); None: the api's default
    default_source: ClassVar[str | None] = None
    #: whether a dry run (every answer missing) sees every request; False when later rounds
    #: depend on answers (judging, editing), so a dry run's count is a lower bound
    dry_run_exact: ClassVar[bool] = True
    #: whether a run can stream (:meth:`iter_requests`, then :meth:`parse` per response, and
    #: nothing that needs all rows at once): such runs read rows lazily and write as they go,
    #: in memory that does not grow with the input. Methods with rounds over earlier outputs
    #: (instance generation, judging, editing) run in memory.
    streams: ClassVar[bool] = False

    def __init__(self, **args: Any) -> None:
        try:
            self.args = self.Args(**args)
        except ValidationError as e:
            raise ConfigError(f"method {self.name}: {validation_message(e)}") from None

    def non_default_args(self) -> dict[str, Any]:
        return self.args.model_dump(mode="json", exclude_defaults=True)

    def requests(self, ctx: MethodContext) -> list[GenRequest]:
        """One request per record to produce; ``meta`` carries what parse needs."""
        raise NotImplementedError(f"{self.name} implements neither requests() nor run()")

    def iter_requests(self, rows: Iterable[dict[str, Any]], ctx: MethodContext
                      ) -> Iterator[GenRequest]:
        """:meth:`requests` one row at a time, for streaming runs (``streams``)."""
        raise NotImplementedError(f"{self.name} does not stream; it runs in memory")

    def parse(self, index: int, request: GenRequest, response: GenResponse,
              ctx: MethodContext) -> Instance:
        """A record from a stored response; failures are rejected records, never exceptions."""
        raise NotImplementedError(f"{self.name} implements neither parse() nor run()")

    async def run(self, ctx: MethodContext) -> Produced:
        requests = self.requests(ctx)
        responses = await ctx.generate(requests)
        instances = [self.parse(i, q, r, ctx)
                     for i, (q, r) in enumerate(zip(requests, responses))]
        return Produced(requests, responses, instances)


def map_columns(rows: list[dict[str, Any]], columns: dict[str, str] | None,
                guesses: dict[str, tuple[str, ...]], source: str) -> dict[str, str]:
    """Which input column feeds each field a method reads: the user's column map first, else
    the first usual name present (each column used once). Unknown fields and missing columns
    are one-line errors."""
    if not rows:
        raise InputError(f"{source}: no seed rows")
    cols = list(rows[0])
    unknown = set(columns or {}) - set(guesses)
    if unknown:
        raise ConfigError(f"columns: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"use {', '.join(guesses)}")
    chosen: dict[str, str] = {}
    for field_name, names in guesses.items():
        if columns and field_name in columns:
            if columns[field_name] not in cols:
                raise InputError(f"column {columns[field_name]!r} not in {source}; "
                                 f"columns are: {', '.join(cols)}")
            chosen[field_name] = columns[field_name]
            continue
        found = next((g for g in names if g in cols and g not in chosen.values()), None)
        if found:
            chosen[field_name] = found
    return chosen


METHODS: Registry[type[Method]] = Registry("method", "datagen.methods")


def response_problem(response: GenResponse) -> str | None:
    """Why a raw response cannot be used at all (failed, truncated, empty), else None."""
    if response.error is not None:
        return f"request failed: {response.error.type}"
    if response.finish_reason == "length":
        return "truncated (finish_reason=length)"
    if not (response.text or "").strip():
        return "empty response"
    return None

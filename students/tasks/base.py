"""Evaluation tasks: a data set, a prompt format with decoding settings, and a scorer.

A task is registered by name with a version (bump it when its prompts or scoring change: the
version enters the evaluation id, so stored scores are never mixed across scorer versions). Its
arguments are a pydantic model (unknown arguments are errors); only the non-default, semantic
ones enter the evaluation id, so adding an argument with a default, or changing an operational
one (where the data file lies, sandbox concurrency), keeps existing ids.

Data comes from the HF Hub by default (the real ``datasets.load_dataset`` through
:func:`datagen_core.sources.load_rows`), from a local copy when ``$DATAGEN_EVAL_DIR`` names a folder
laid out like the offline assets (``gsm8k/test.jsonl``, ``mbpp/mbpp.jsonl``, ...), or from any
``source=`` a task is given. Items are kept in the data set's order, so ``limit=N`` is always the
same held-out slice: the first N items.

Scoring never stops an evaluation: a failed generation scores 0 with its error, and an exception
while scoring one item scores that item 0 with the exception recorded.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen_core.errors import ConfigError, InputError
from datagen_core.records import (
    GenRequest,
    GenResponse,
    Message,
    SamplingParams,
    SourceSpec,
    validation_message,
)
from datagen_core.registry import Registry

EVAL_DIR_ENV = "DATAGEN_EVAL_DIR"
"""A folder laid out like the offline assets: every task whose file is there loads it from there."""

Generate = Callable[[list[GenRequest]], Awaitable[list[GenResponse]]]


class TaskArgs(BaseModel):
    """Arguments every task takes; subclasses add their own."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(
        None, description="a local file, hf://org/name[/config]:split or builtin:NAME; default: "
        "$DATAGEN_EVAL_DIR, else the HF Hub")
    max_tokens: int | None = Field(None, ge=1, description="generation budget per answer")


@dataclass
class EvalItem:
    """One evaluation item: the prompt the student sees and what the scorer needs (``data``)."""

    item_id: str
    index: int
    prompt: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemScore:
    """How one item scored. ``score`` is None when the item could not be judged (judge tasks)."""

    item_id: str
    index: int
    score: float | None
    extracted: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreContext:
    """What a scorer may use besides the answers: a judge LM (cached and logged like the
    student), and the evaluation's own folder."""

    judge: Generate | None = None
    eval_dir: Path | None = None


class Task(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    Args: ClassVar[type[TaskArgs]] = TaskArgs
    #: the metric shown first and used for rankings
    primary_metric: ClassVar[str] = "accuracy"
    #: default generation budget (``max_tokens`` overrides it)
    max_tokens: ClassVar[int] = 512
    #: where the data lives on the Hub (``hf://org/name[/config]:split``)
    hub_uri: ClassVar[str | None] = None
    #: the same data's path relative to ``$DATAGEN_EVAL_DIR``
    local_path: ClassVar[str | None] = None
    #: whether scoring needs a judge LM
    needs_judge: ClassVar[bool] = False
    #: arguments that do not change scores (left out of the evaluation id)
    operational_args: ClassVar[frozenset[str]] = frozenset({"source"})

    def __init__(self, **args: Any) -> None:
        try:
            self.args = self.Args(**args)
        except ValidationError as e:
            raise ConfigError(f"task {self.name}: {validation_message(e)}") from None

    # -- identity --------------------------------------------------------------------------
    def id_args(self) -> dict[str, Any]:
        """Non-default arguments that change scores: part of the evaluation id."""
        return self.args.model_dump(mode="json", exclude_defaults=True,
                                    exclude=set(self.operational_args))

    @property
    def sampling(self) -> SamplingParams:
        """Greedy decoding: an evaluation is a measurement, not a sample."""
        return SamplingParams(temperature=0.0, top_p=1.0,
                              max_tokens=self.args.max_tokens or self.max_tokens)

    # -- data ------------------------------------------------------------------------------
    def source_uri(self) -> str:
        """``source=``, else ``$DATAGEN_EVAL_DIR/<local_path>``, else the Hub."""
        if self.args.source:
            return self.args.source
        root = os.environ.get(EVAL_DIR_ENV)
        if root and self.local_path:
            path = Path(root).expanduser() / self.local_path
            if not path.exists():
                raise InputError(f"task {self.name}: {EVAL_DIR_ENV}={root} has no "
                                 f"{self.local_path}; add it or unset {EVAL_DIR_ENV}")
            return str(path)
        hub = self.default_hub_uri()
        if hub is None:
            raise ConfigError(f"task {self.name} has no default data: pass source=")
        return hub

    def default_hub_uri(self) -> str | None:
        return self.hub_uri

    def load(self, limit: int | None = None) -> tuple[list[EvalItem], SourceSpec]:
        """The items in data set order (the first ``limit`` of them) and where they came from."""
        from datagen_core.sources import load_rows

        if limit is not None and limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}")
        uri = self.source_uri()
        rows, src = load_rows(uri)
        try:
            items = self.items(rows)
        except (KeyError, TypeError) as e:
            raise InputError(f"task {self.name}: {uri} does not look like its data "
                             f"(missing or bad field {e})") from None
        if not items:
            raise InputError(f"task {self.name}: no items in {uri}")
        return (items if limit is None else items[:limit]), src

    @abstractmethod
    def items(self, rows: list[dict[str, Any]]) -> list[EvalItem]:
        """Rows of the data set as items; raise InputError on rows the task cannot score."""

    # -- prompting -------------------------------------------------------------------------
    def messages(self, item: EvalItem) -> list[Message]:
        return [Message(role="user", content=item.prompt)]

    def request(self, item: EvalItem) -> GenRequest:
        return GenRequest(messages=self.messages(item), sampling=self.sampling,
                          meta={"task": self.name, "item_id": item.item_id})

    # -- scoring ---------------------------------------------------------------------------
    async def score_item(self, item: EvalItem, answer: str, ctx: ScoreContext) -> ItemScore:
        """Score one answer. Tasks that score items together override :meth:`score` instead."""
        raise NotImplementedError(f"task {self.name} implements neither score_item nor score")

    async def score(self, items: Sequence[EvalItem], responses: Sequence[GenResponse],
                    ctx: ScoreContext) -> list[ItemScore]:
        """Every item's score, in item order; at most :meth:`concurrency` at once."""
        gate = asyncio.Semaphore(self.concurrency())

        async def one(item: EvalItem, response: GenResponse) -> ItemScore:
            if not response.ok:
                return self.failed(item, response)
            async with gate:
                try:
                    return await self.score_item(item, response.text or "", ctx)
                except Exception as e:  # one bad item never stops the rest
                    return ItemScore(item.item_id, item.index, 0.0, detail={
                        "error": f"scorer raised {type(e).__name__}: {e}"})

        return list(await asyncio.gather(*(one(i, r) for i, r in zip(items, responses))))

    def failed(self, item: EvalItem, response: GenResponse) -> ItemScore:
        """The score of an item the student produced no answer for: 0, with the error."""
        return failed_generation(item, response)

    def concurrency(self) -> int:
        """How many items are scored at once (sandbox runs, judge parsing)."""
        return 8

    def aggregate(self, scores: Sequence[ItemScore]) -> dict[str, float]:
        """Task-level metrics from item scores; by default the mean score as ``accuracy``."""
        values = [s.score for s in scores if s.score is not None]
        return {self.primary_metric: sum(values) / len(values) if values else 0.0}


def failed_generation(item: EvalItem, response: GenResponse) -> ItemScore:
    """A student that produced no answer scores 0; the error is kept for the report."""
    err = response.error
    reason = f"{err.type}: {err.message}" if err else "no text"
    return ItemScore(item.item_id, item.index, 0.0,
                     detail={"error": f"generation failed ({reason})"})


TASKS: Registry[type[Task]] = Registry("task", "datagen.tasks")


def get_task(name: str, **args: Any) -> Task:
    """A task instance by registered name, e.g. ``get_task("mbpp", variant="sanitized")``."""
    return TASKS.get(name)(**args)

"""Attribute evaluators for multi-attribute editing: real measurements of a text, with a range.

An evaluator maps a text to a number (VADER sentiment, Flesch-Kincaid grade, words) and carries
a **range** and a **tolerance**. The range turns differences into comparable units (a sentiment
gap of 0.2 and a length gap of 20 words are both 10% of their range), which is what the
constraint-satisfaction reward and the edit-pair distances sum over; the tolerance says when a
value is close enough to its target to count as satisfied.

Evaluators are registered like every other plug-in (entry-point group ``datagen.evaluators``;
the built-ins are declared there too). A plug-in subclasses :class:`Evaluator`, sets
``name``/``description``/``low``/``high``/``tolerance`` and implements :meth:`Evaluator.score`.
Ranges and tolerances are overridable per run (``EvaluatorSettings``), e.g. a 200-word cap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen_core.errors import ConfigError, MissingDependencyError
from datagen_core.records import validation_message
from datagen_core.registry import Registry


class EvaluatorSettings(BaseModel):
    """Per-run overrides of an evaluator's range and tolerance (unset: the evaluator's own)."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = None
    high: float | None = None
    tolerance: float | None = Field(None, ge=0)


class Evaluator(ABC):
    """Scores one attribute of a text; see the module docstring."""

    name: ClassVar[str]
    #: what the number means, shown to the editor LM next to every value and target
    description: ClassVar[str]
    low: float
    high: float
    tolerance: float
    decimals: ClassVar[int] = 2

    def __init__(self, low: float | None = None, high: float | None = None,
                 tolerance: float | None = None) -> None:
        self.low = type(self).low if low is None else float(low)
        self.high = type(self).high if high is None else float(high)
        self.tolerance = type(self).tolerance if tolerance is None else float(tolerance)
        if not self.high > self.low:
            raise ConfigError(f"evaluator {self.name}: high ({self.high}) must be above low "
                              f"({self.low})")

    @abstractmethod
    def score(self, text: str) -> float:
        """The attribute's value for ``text`` (may fall outside the range; it is not clipped)."""

    @property
    def width(self) -> float:
        return self.high - self.low

    def clip(self, value: float) -> float:
        return min(self.high, max(self.low, value))

    def distance(self, a: float, b: float) -> float:
        """|a - b| in units of the range."""
        return abs(a - b) / self.width

    def gap(self, value: float, target: float) -> float:
        """How far ``value`` is outside ``target`` ± tolerance, in units of the range (0 = ok)."""
        return max(0.0, abs(value - target) - self.tolerance) / self.width

    def satisfied(self, value: float, target: float) -> bool:
        return abs(value - target) <= self.tolerance

    def fmt(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"

    def settings(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "tolerance": self.tolerance}


class Sentiment(Evaluator):
    """VADER compound polarity: -1 (very negative) to 1 (very positive)."""

    name = "sentiment"
    description = ("VADER sentiment, from -1 (very negative) through 0 (neutral) to 1 "
                   "(very positive)")
    low, high, tolerance = -1.0, 1.0, 0.15
    _analyzer: ClassVar[Any] = None

    def score(self, text: str) -> float:
        cls = type(self)
        if cls._analyzer is None:
            try:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
            except ImportError:
                raise MissingDependencyError("the sentiment evaluator", "vaderSentiment",
                                             extra="metrics") from None
            cls._analyzer = SentimentIntensityAnalyzer()  # reads its lexicon once
        return float(cls._analyzer.polarity_scores(text)["compound"])


class ReadingGrade(Evaluator):
    """Flesch-Kincaid grade level (textstat): roughly the US school grade needed to read it."""

    name = "reading-grade"
    description = ("Flesch-Kincaid reading grade, about the school grade needed to read the "
                   "text (higher = longer sentences and longer words)")
    low, high, tolerance = 0.0, 20.0, 1.5
    decimals = 1

    def score(self, text: str) -> float:
        try:
            import textstat
        except ImportError:
            raise MissingDependencyError("the reading-grade evaluator", "textstat",
                                         extra="metrics") from None
        try:
            return float(textstat.flesch_kincaid_grade(text))
        except LookupError:  # textstat >= 0.7.9 fetches NLTK's cmudict at run time
            raise MissingDependencyError(
                "the reading-grade evaluator offline", "textstat",
                hint="pip install 'textstat>=0.7.5,<0.7.9' (it reads the cmudict package; "
                     "newer versions download NLTK data at run time)") from None


class Length(Evaluator):
    """Length in words (whitespace-separated tokens)."""

    name = "length"
    description = "length in words"
    low, high, tolerance = 0.0, 400.0, 8.0
    decimals = 0

    def score(self, text: str) -> float:
        return float(len(text.split()))


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator", "datagen.evaluators")

DEFAULT_EVALUATORS = ("sentiment", "reading-grade", "length")


def make_evaluators(
    settings: Mapping[str, EvaluatorSettings | Mapping[str, float] | None],
) -> list[Evaluator]:
    """Evaluator instances by name, in the given order, with per-run overrides applied."""
    if not settings:
        raise ConfigError("evaluators is empty: name at least one (e.g. sentiment, length)")
    out = []
    for name, s in settings.items():
        cls = EVALUATORS.get(name)
        try:
            over = EvaluatorSettings.model_validate(s or {}).model_dump(exclude_none=True)
        except ValidationError as e:
            raise ConfigError(f"evaluator {name}: {validation_message(e)}") from None
        ev = cls(**over)
        if ev.name != name:
            raise ConfigError(f"evaluator {name!r} names itself {ev.name!r}: register it under "
                              "its own name")
        out.append(ev)
    return out


def score_all(evaluators: list[Evaluator], text: str) -> dict[str, float]:
    return {ev.name: ev.score(text) for ev in evaluators}


def reward(evaluators: list[Evaluator], values: Mapping[str, float],
           targets: Mapping[str, float]) -> float:
    """Constraint-satisfaction reward: minus the summed range-normalised distance outside the
    tolerances. 0 means every attribute is within tolerance; higher is better."""
    return -sum(ev.gap(values[ev.name], targets[ev.name]) for ev in evaluators)


def all_satisfied(evaluators: list[Evaluator], values: Mapping[str, float],
                  targets: Mapping[str, float]) -> bool:
    return all(ev.satisfied(values[ev.name], targets[ev.name]) for ev in evaluators)


def mean_distance(evaluators: list[Evaluator], a: Mapping[str, float],
                  b: Mapping[str, float]) -> float:
    """Mean over attributes of |a - b| in units of each range: the size of a change."""
    return sum(ev.distance(a[ev.name], b[ev.name]) for ev in evaluators) / len(evaluators)

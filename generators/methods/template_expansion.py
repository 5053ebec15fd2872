"""Template x slot expansion (IssueBench): prompts from the product of templates and slot
values, answered by the generator and checked by the domain.

IssueBench (Röttger et al. 2025, "IssueBench: Millions of Realistic Prompts for Measuring Issue
Bias in LLM Writing Assistance", arXiv:2502.08395, github.com/paul-rottger/issuebench) builds
2.49M writing-assistance prompts from 3.9k templates extracted from real user prompts ("write a
blog post about X") and 212 political issues, each issue in three framings: neutral ("AI
regulation"), pro and con (``topic_neutral``, ``topic_pro``, ``topic_con`` in its
``issues.csv``). Its ``create_prompts.ipynb`` crosses every template with every framing of every
issue (its paper used a 1k-template sample: 636k prompts). Responses are then labelled by a
stance judge and aggregated per issue (:mod:`metrics.issue_bias`).

Here a template is a text with ``{slot}`` fields (``{{``/``}}`` for literal braces); each slot
draws from a table (``slots: {issue: builtin:issues}`` or ``{source, column, variants}``), where
``variants`` names several columns of one row that each fill the slot in turn (IssueBench's
framings: ``[neutral, pro, con]``). A template uses any subset of the slots, so the prompts are
``sum over templates of the product of its slots' value counts``:

- exhaustive (default): every combination, template-major, slot values in table order (the last
  slot fastest). More than ``cap`` (or ``-n``) is an error, not a silent cut.
- ``sample: true``: ``min(cap, n, total)`` distinct combinations drawn uniformly with ``seed``
  (indices into the product, so a product of millions is never built in memory).

Shipped for offline use: ``builtin:writing-templates`` (20 writing-assistance templates) and
``builtin:issues`` (12 everyday policy issues in the three framings), both written for datagen:
720 prompts. Each row's meta records its template and every slot's row id, variant and value.
"""

from __future__ import annotations

import bisect
import math
import random
from functools import cached_property
from string import Formatter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datagen_core.errors import ConfigError, InputError
from datagen_core.records import GenRequest, GenResponse, Instance, Message
from generators.domains.base import get_domain
from generators.methods.base import Method, MethodArgs, MethodContext, response_problem
from generators.methods.seeded import make_instance
from generators.methods.tables import Table, load_table

TEMPLATE_COLUMNS = ("template", "template_text", "prompt", "text")
VALUE_COLUMNS = ("value", "text", "name", "issue", "topic")


class Slot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    column: str | None = Field(None, description="column of values (default: guessed)")
    variants: list[str] | None = Field(None, min_length=1, description="several columns, each "
                                       "filling the slot in turn (e.g. neutral, pro, con)")


def _default_slots() -> dict[str, Slot]:
    return {"issue": Slot(source="builtin:issues", variants=["neutral", "pro", "con"])}


class TemplateExpansionArgs(MethodArgs):
    templates: str = Field("builtin:writing-templates", description="template table or .txt")
    template_column: str | None = None
    slots: dict[str, Slot] = Field(default_factory=_default_slots)
    sample: bool = Field(False, description="a seeded sample instead of every combination")
    cap: int = Field(10_000, ge=1, description="most prompts a run makes")
    seed: int = 0

    @field_validator("slots", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: {"source": s} if isinstance(s, str) else s for k, s in v.items()}
        return v


class _Values:
    """A slot's values: (row id, variant or None, text), row-major."""

    def __init__(self, name: str, slot: Slot, table: Table) -> None:
        self.name, self.table = name, table
        rows = table.rows
        if not rows:
            raise InputError(f"slot {name}: {slot.source} has no rows")
        if slot.variants:
            for v in slot.variants:
                table.column(v, (), f"{name} values")
            cols: list[str | None] = list(slot.variants)
        else:
            cols = [table.column(slot.column, VALUE_COLUMNS, f"{name} values")]
        self.items: list[tuple[int, str | None, str]] = []
        for i, row in enumerate(rows):
            for c in cols:
                value = row.get(c or "")
                if not isinstance(value, str) or not value.strip():
                    raise InputError(f"slot {name}: {slot.source}: row {i + 1}: column {c!r} "
                                     "is empty or not text")
                self.items.append((i, c if slot.variants else None, value.strip()))

    def __len__(self) -> int:
        return len(self.items)

    def meta(self, k: int) -> dict[str, Any]:
        i, variant, value = self.items[k]
        return {"id": self.table.row_id(i), "variant": variant, "value": value,
                "row": self.table.rows[i]}


class TemplateExpansion(Method):
    """Every (template, slot values) combination as a prompt, or a seeded sample of them."""

    name = "template-expansion"
    version = "1"
    Args = TemplateExpansionArgs
    args: TemplateExpansionArgs
    n_means = "outputs"
    uses_domain = True  # answers are checked by the domain's validator (general by default)

    @cached_property
    def _tables(self) -> tuple[Table, dict[str, Table]]:
        return (load_table(self.args.templates),
                {k: load_table(s.source) for k, s in self.args.slots.items()})

    def non_default_args(self) -> dict[str, Any]:
        """Besides the arguments, the content of the template and slot tables."""
        templates, slots = self._tables
        return {**super().non_default_args(), "tables_fingerprint": {
            "templates": templates.fingerprint,
            "slots": {k: t.fingerprint for k, t in sorted(slots.items())}}}

    def expand(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The prompts, in order, each {"prompt", "template_id", "template", "slots"}."""
        table, slot_tables = self._tables
        column = table.column(self.args.template_column, TEMPLATE_COLUMNS, "templates")
        templates = table.texts(column)
        values = {k: _Values(k, s, slot_tables[k]) for k, s in self.args.slots.items()}
        used = [_fields(t, set(values), f"{self.args.templates} row {i + 1}")
                for i, t in enumerate(templates)]
        counts = [math.prod(len(values[s]) for s in names) for names in used]
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        total = starts[-1]
        cap = min(self.args.cap, limit) if limit is not None else self.args.cap
        if self.args.sample:
            chosen = sorted(random.Random(self.args.seed).sample(range(total), min(cap, total)))
        else:
            if total > cap:
                raise ConfigError(
                    f"{self.name}: {len(templates)} templates x slot values make {total} prompts, "
                    f"more than the limit of {cap} (cap / -n): raise it, or draw a seeded "
                    "sample with -a sample=true")
            chosen = list(range(total))
        out = []
        for g in chosen:
            t = bisect.bisect_right(starts, g) - 1
            local, picks = g - starts[t], {}
            for s in reversed(used[t]):  # mixed radix, the last slot fastest
                local, picks[s] = divmod(local, len(values[s]))
            fills = {s: values[s].items[k][2] for s, k in picks.items()}
            out.append({"prompt": templates[t].format(**fills), "template_id": table.row_id(t),
                        "template": templates[t],
                        "slots": {s: values[s].meta(k) for s, k in sorted(picks.items())}})
        return out

    def requests(self, ctx: MethodContext) -> list[GenRequest]:
        return [GenRequest(messages=[Message(role="user", content=x["prompt"])],
                           meta={k: v for k, v in x.items() if k != "prompt"})
                for x in self.expand(ctx.n)]

    def parse(self, index: int, request: GenRequest, response: GenResponse,
              ctx: MethodContext) -> Instance:
        prompt = request.messages[0].content
        reason = response_problem(response)
        text = (response.text or "").strip()
        verdict = None if reason else get_domain(ctx.domain or "general").validate(prompt, text)
        return make_instance(index, prompt, text, verdict, reason,
                             {**request.meta, "key": response.key})


def _fields(template: str, known: set[str], where: str) -> list[str]:
    """The slots a template uses, in order of first use; unknown or odd fields are errors."""
    names: list[str] = []
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"{where}: bad template {template!r}: {e} (write {{{{ and }}}} for "
                          "literal braces)") from None
    for _, field, spec, conv in parsed:
        if field is None:
            continue
        if field not in known or spec or conv:
            raise ConfigError(f"{where}: template field {{{field}}} is not a slot; slots are: "
                              f"{', '.join(sorted(known))}")
        if field not in names:
            names.append(field)
    return names

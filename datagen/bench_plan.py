"""``datagen bench --dry-run``: what a suite will do and roughly what it will cost, calling nothing.

Each cell's method is run against a generator that answers nothing, which yields the exact
requests of one-round methods (and of instance generation, whose rounds do not depend on the
answers when ``accepted_share`` is 0) and a lower bound for methods whose later rounds do. Prompt
tokens are estimated at 4 characters a token (no tokenizer is downloaded for a dry run);
completion tokens are bounded by ``max_tokens``, so the cost is an upper bound at list prices
(:mod:`generators.pricing`, or the generator's own ``price``). Seed sets that cannot be read here
(a Hub dataset offline) are estimated from the domain's built-in seeds, and the plan says so.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.suite import Suite, generator_spec

CHARS_PER_TOKEN = 4


@dataclass
class CellPlan:
    generator: str
    spec: str
    method: str
    domain: str
    n: int
    requests: int
    exact: bool
    prompt_tokens: int
    max_completion_tokens: int
    cost_usd: float | None  # upper bound; None: no price known for an API model
    local: bool
    run_id: str | None = None
    note: str | None = None


@dataclass
class EvalPlan:
    model: str
    domain: str
    task: str
    items: int | None  # None: the task's data cannot be read here


@dataclass
class BenchPlan:
    suite: str
    workspace: Path
    cells: list[CellPlan]
    students: list[tuple[str, str]]  # (what it is trained on, recipe label)
    evaluations: list[EvalPlan]
    judge_requests: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.cells)

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd or 0.0 for c in self.cells)

    @property
    def unpriced(self) -> list[str]:
        return sorted({c.generator for c in self.cells if c.cost_usd is None})


def _tokens(messages: list[Any]) -> int:
    return sum(len(m.content) for m in messages) // CHARS_PER_TOKEN + 4 * len(messages)


def plan_cell(suite: Suite, g: Any, m: Any, domain: str) -> CellPlan:
    from datagen.api import plan_run
    from generators.pricing import cost, price_for

    spec = generator_spec(g)
    n = suite.domain_n(domain)
    kw: dict[str, Any] = {"n": n, "method": m.name, "method_args": m.args, "domain": domain,
                          "curation": suite.curation}
    note = None
    run_id: str | None = None
    try:
        plan = plan_run(spec, suite.seeds_for(domain), **kw)
        run_id = plan.run_id
    except DatagenError as e:
        plan = plan_run(spec, f"builtin:{domain}", **kw)
        note = (f"seeds {suite.seeds_for(domain)} not readable here ({e}); estimated from "
                f"builtin:{domain}")
    requests, exact = asyncio.run(plan.requests())
    count = len(requests)
    prompt = sum(_tokens(r.messages) for r in requests)
    if note is not None and requests and plan.method.n_means == "rows" and count < n:
        prompt = prompt * n // count  # the real seed set has n rows; the proxy fewer
        count = n
    completion = count * spec.sampling.max_tokens
    from datagen.records import Usage

    local = spec.provider not in ("openai", "anthropic") or spec.base_url is not None
    price = spec.price or price_for(spec.provider, spec.model)
    usd: float | None = 0.0 if local else (
        cost(price, Usage(prompt_tokens=prompt, completion_tokens=completion))
        if price is not None else None)
    if not exact:
        note = "; ".join(x for x in (note, "later rounds depend on answers: counts are a lower "
                                     "bound") if x)
    return CellPlan(generator=g.name, spec=spec.label, method=m.name, domain=domain, n=n,
                    requests=count, exact=exact, prompt_tokens=prompt,
                    max_completion_tokens=completion, cost_usd=usd, local=local, run_id=run_id,
                    note=note)


def plan_bench(suite: Suite, workspace: str | Path | None = None) -> BenchPlan:
    """The plan of ``suite``: per cell the requests, tokens and cost bound; the students to
    train; the evaluations to run. Reads seed and task files; calls no model."""
    from datagen.bench import bench_workspace
    from students.recipes import load_recipe
    from students.tasks.base import get_task

    ws = bench_workspace(suite, workspace)
    cells = [plan_cell(suite, g, m, d) for g, m, d in suite.cells()]
    recipe = load_recipe(suite.student.recipe, **suite.student.overrides)
    students = [(f"{c.generator} · {c.method} · {c.domain}", recipe.label) for c in cells]
    evaluations: list[EvalPlan] = []
    notes: list[str] = []
    for d, dom in suite.domains.items():
        ref = suite.reference_for(d)
        if ref.kind == "gold":
            students.append((f"gold {d} seeds ({suite.domain_n(d)} rows): the reference",
                             recipe.label))
        base = suite.base_for(d)
        models = [f"base ({base.model or recipe.base_model})",
                  f"reference ({ref.model or 'gold student'})"]
        models += [f"student of {c.generator} · {c.method}" for c in cells if c.domain == d]
        for t in dom.tasks:
            try:
                items: int | None = len(get_task(t.name, **t.args).load(dom.eval_limit)[0])
            except DatagenError as e:
                items = dom.eval_limit
                notes.append(f"task {t.name}: data not readable here ({e})")
            evaluations += [EvalPlan(model=mo, domain=d, task=t.name, items=items)
                            for mo in models]
    judge = 0
    if "judge" in suite.intrinsic:
        judge = sum(min(c.requests, c.n) for c in cells)
    return BenchPlan(suite=suite.name, workspace=ws.root, cells=cells, students=students,
                     evaluations=evaluations, judge_requests=judge, notes=notes)

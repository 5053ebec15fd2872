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

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.hygiene import curation_settings
from datagen.suite import Suite, generator_spec
from datagen_core.errors import DatagenError

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


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """A dry run calls nothing, the HF Hub included: Hub seed and task sets are read from the
    local cache when they are there, else estimated (no retries against an unreachable Hub)."""
    import sys

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    patched: list[tuple[Any, Any]] = []
    for mod in ("huggingface_hub.constants", "datasets.config"):
        m: Any = sys.modules.get(mod)
        if m is not None and hasattr(m, "HF_HUB_OFFLINE"):
            patched.append((m, m.HF_HUB_OFFLINE))
            m.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for mod_obj, value in patched:
            mod_obj.HF_HUB_OFFLINE = value
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 90 else text[:87] + "..."


def _seed_sources(suite: Suite) -> dict[str, tuple[str, str | None]]:
    """Per domain, the seed set to plan with and a note when it is a stand-in."""
    from datagen_core.sources import load_rows

    out: dict[str, tuple[str, str | None]] = {}
    for d in suite.domains:
        uri = suite.seeds_for(d)
        try:
            load_rows(uri, limit=1)
            out[d] = (uri, None)
        except DatagenError as e:
            out[d] = (f"builtin:{d}", f"{d}: seeds {uri} not readable here, so counts and "
                      f"tokens are estimated from builtin:{d} ({_short(e)})")
    return out


async def plan_cell(suite: Suite, g: Any, m: Any, domain: str,
                    seeds: tuple[str, str | None] | None = None) -> CellPlan:
    from datagen.runs import plan_run
    from generators.pricing import cost, price_for

    spec = generator_spec(g)
    n = suite.domain_n(domain)
    kw: dict[str, Any] = {"n": n, "method": m.name, "method_args": m.args, "domain": domain,
                          "curation": curation_settings(suite)}
    uri, note = seeds or (suite.seeds_for(domain), None)
    plan = plan_run(spec, uri, **kw)
    run_id: str | None = plan.run_id if note is None else None
    requests, exact = await plan.requests()
    count = len(requests)
    prompt = sum(_tokens(r.messages) for r in requests)
    if note is not None and requests and plan.method.n_means == "rows" and count < n:
        prompt = prompt * n // count  # the real seed set has n rows; the proxy fewer
        count = n
    completion = count * spec.sampling.max_tokens
    from datagen_core.records import Usage

    local = (spec.provider.removesuffix("-batch") not in ("openai", "anthropic")
             or spec.base_url is not None)
    price = spec.price or price_for(spec.provider, spec.model)
    usd: float | None = 0.0 if local else (
        cost(price, Usage(prompt_tokens=prompt, completion_tokens=completion))
        if price is not None else None)
    if plan.seed_drops and plan.seed_drops["dropped"]:
        d = plan.seed_drops
        by = ", ".join(f"{k}: {v}" for k, v in d["by"].items())
        note = "; ".join(x for x in (note, f"{domain}: {d['dropped']} of {d['input']} seed rows "
                                     f"are evaluation items ({by}) and are not used") if x)
    if note is None and plan.method.n_means == "rows" and count < n:
        note = (f"{domain}: {uri} has only {len(plan.rows)} seed rows, fewer than n={n}: "
                "give the domain a larger `seeds:` set")
    if not exact:
        note = "; ".join(x for x in (note, "later rounds depend on answers: counts are a lower "
                                     "bound") if x)
    return CellPlan(generator=g.name, spec=spec.label, method=m.name, domain=domain, n=n,
                    requests=count, exact=exact, prompt_tokens=prompt,
                    max_completion_tokens=completion, cost_usd=usd, local=local, run_id=run_id,
                    note=note)


async def aplan_bench(suite: Suite, workspace: str | Path | None = None) -> BenchPlan:
    """The plan of ``suite``: per cell the requests, tokens and cost bound; the students to
    train; the evaluations to run. Reads seed and task files; calls no model. Synchronously:
    :func:`datagen.api.plan_bench`."""
    from datagen.bench import bench_workspace

    ws = bench_workspace(suite, workspace)
    with _hub_offline():
        return await _plan(suite, ws.root)


async def _plan(suite: Suite, root: Path) -> BenchPlan:
    from students.recipes import SCRATCH, load_recipe
    from students.tasks.base import get_task

    seeds = _seed_sources(suite)
    cells = [await plan_cell(suite, g, m, d, seeds[d]) for g, m, d in suite.cells()]
    recipe = load_recipe(suite.student.recipe, **suite.student.overrides)
    students = [(f"{c.generator} · {c.method} · {c.domain}", recipe.label) for c in cells]
    evaluations: list[EvalPlan] = []
    notes: list[str] = []
    for c in cells:  # selection cells: k rows of the cell's run (datagen.bench_select)
        students += [(f"{c.generator}+{sel.method} · {c.method} · {c.domain}: {sel.k} of its "
                      f"{c.n} rows", recipe.label) for sel in suite.selections(c.domain)]
    for d in suite.domains:
        sels = suite.selections(d)
        if sels:
            how = "; ".join(
                f"{s.method} (target {', '.join(s.target)}, embedded with {s.model})"
                if s.method == "rds" else s.method for s in sels)
            names = " and ".join(f"NAME+{s.method}" for s in sels)
            notes.append(f"select: each {d} cell also trains students {names} on k={sels[0].k} "
                         f"of its rows (a matched budget), chosen by {how}")
    for d, dom in suite.domains.items():
        ref = suite.reference_for(d)
        if ref.kind == "gold":
            what = "gold pairs from the" if recipe.kind == "dpo" else "gold"
            students.append((f"{what} {d} seeds ({suite.domain_n(d)} rows): the reference",
                             recipe.label))
        elif ref.kind == "pairs":
            students.append((f"pairs file {ref.pairs}: the reference", recipe.label))
        base = suite.base_for(d)
        if base.kind == "untrained" and recipe.base_model == SCRATCH:
            students.append((f"untrained {d} base: 0 steps on the gold seeds' tokenizer",
                             recipe.label))
        models = [f"base ({base.model or recipe.base_model})",
                  f"reference ({ref.model or ref.pairs or 'gold student'})"]
        models += [f"student of {c.generator} · {c.method}" for c in cells if c.domain == d]
        models += [f"student of {c.generator}+{sel.method} · {c.method}" for c in cells
                   if c.domain == d for sel in suite.selections(d)]
        for t in dom.tasks:
            try:
                items: int | None = len(get_task(t.name, **t.args).load(
                    suite.task_limit(d, t))[0])
            except DatagenError as e:
                items = suite.task_limit(d, t)
                notes.append(f"task {t.name}: data not readable here, its size is unknown "
                             f"({_short(e)})")
            evaluations += [EvalPlan(model=mo, domain=d, task=t.name, items=items)
                            for mo in models]
    judge = 0
    if "judge" in suite.intrinsic:
        judge = sum(min(c.requests, c.n) for c in cells)
    return BenchPlan(suite=suite.name, workspace=root, cells=cells, students=students,
                     evaluations=evaluations, judge_requests=judge, notes=notes)

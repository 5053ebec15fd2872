"""verified-pairs: the domain's verifier labels the pairs; ``verify: false`` is the control.

A scripted generator answers "What is A plus B?" with the right sum on some samples and a wrong
one on others, by a table, so each test knows which pairs a correct implementation makes.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from datagen import api
from datagen.gold_pairs import check_gold_pairs, gold_pairs
from datagen_core.records import GeneratorSpec
from generators.backends.fake import FakeBackend

SEEDS = [{"id": f"s{i}", "instruction": f"What is {10 + i} plus {20 + i}?",
          "response": f"{10 + i} + {20 + i} = {30 + 2 * i}", "answer": str(30 + 2 * i)}
         for i in range(4)]
# seed -> per sample: True right, False wrong (off by one), None no number at all
PLAN = {"s0": [True, False, False, True], "s1": [True, True, True, True],
        "s2": [False, False, None, False], "s3": [None, True, False, False]}
Q = re.compile(r"What is (\d+) plus (\d+)\?")


def answer(request) -> str:
    a, b = (int(x) for x in Q.search(request.messages[0].content).groups())  # type: ignore
    seed = f"s{a - 10}"
    right = PLAN[seed][request.sample]
    if right is None:
        return "I cannot say."
    return f"{a} + {b} = {a + b if right else a + b + 1}"


def run(tmp_path: Path, **args):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "seeds.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in SEEDS))
    spec = GeneratorSpec.parse("fake:gen", limits={"max_retries": 0})
    return api.generate(spec, str(src), method="verified-pairs", domain="arithmetic",
                        method_args={"samples": 4, **args}, backend=FakeBackend(
                            spec, responder=answer), progress=False,
                        workspace=tmp_path / "ws", curation={"decontaminate": False})


def test_verified_pairs_are_right_against_wrong(tmp_path: Path):
    res = run(tmp_path)
    by_seed = {p.meta["seed_id"]: p for p in res.pairs}
    # s1: all right, s2: none right -> no pair; s0 and s3 have both kinds
    assert set(by_seed) == {"s0", "s3"}
    for p in res.pairs:
        assert p.prompt[0].content.startswith("What is")  # the bare task, as evaluation asks it
        a, b = (int(x) for x in Q.search(p.prompt[0].content).groups())  # type: ignore
        assert p.chosen[0].content.endswith(f"= {a + b}")
        assert p.rejected[0].content.endswith(f"= {a + b + 1}")
        assert (p.margin, p.weight, p.attribute) == (1.0, 1.0, "correctness")
        assert p.evidence["chosen_correct"] is True and p.evidence["rejected_correct"] is False
    reasons = {i.reject_reason for i in res.instances if not i.valid}
    assert {"every answer verified correct: nothing to reject", "no answer verified correct",
            "no integer answer", "rejected side of a pair"} <= reasons
    assert sum(i.valid for i in res.instances) == 2  # the chosen sides
    assert all(i.meta["correct"] in (True, False) for i in res.instances
               if i.reject_reason != "no integer answer")


def test_unverified_control_pairs_differing_answers_without_checking(tmp_path: Path):
    res = run(tmp_path, verify=False)
    by_seed = {p.meta["seed_id"]: p for p in res.pairs}
    # s1 and s2 give one answer (right, resp. wrong) every time: nothing differs
    assert set(by_seed) == {"s0", "s3"}
    for p in res.pairs:
        assert p.chosen[0].content != p.rejected[0].content
        assert p.margin is None and p.weight is None and p.attribute == "unverified"
        # recorded for analysis, never used to label
        assert {p.evidence["chosen_correct"], p.evidence["rejected_correct"]} == {True, False}
    assert "fewer than 2 distinct answers" in {i.reject_reason for i in res.instances}


def test_the_draw_is_seeded_and_runs_are_reproducible(tmp_path: Path):
    a = run(tmp_path / "a", verify=False)
    b = run(tmp_path / "b", verify=False)
    assert [p.pair_id for p in a.pairs] == [p.pair_id for p in b.pairs]
    c = run(tmp_path / "c", verify=False, seed=7)
    assert c.run_id != a.run_id


def test_gold_pairs_change_only_the_answer():
    rows = gold_pairs(SEEDS, "arithmetic")
    assert len(rows) == len(SEEDS)
    for r, s in zip(rows, SEEDS):
        assert r["chosen"][0]["content"] == s["response"]
        wrong = r["rejected"][0]["content"]
        head, _, num = wrong.rpartition("= ")
        assert head == s["response"].rpartition("= ")[0]
        assert num != s["answer"] and 1 <= abs(int(num) - int(s["answer"])) <= 10
    assert gold_pairs(SEEDS, "arithmetic") == rows  # seeded
    assert check_gold_pairs("arithmetic") is None
    assert "pairs: FILE" in (check_gold_pairs("general") or "")

"""MATH-500 scoring has no false passes on bases or rounding (issue 12, "Scoring fidelity"):
an answer in a base must be in that base, numeric answers are exact unless the question asks for
rounding, and then only at the precision asked. Every gold still scores against itself."""

from __future__ import annotations

from fractions import Fraction

import pytest

from datagen_core.records import GenResponse
from generators.domains.math import normalize_answer
from students.tasks import ScoreContext, get_task
from students.tasks.base import EvalItem
from students.tasks.math_answers import asked_precision, base_answer, math500_answers_match
from tests.conftest import ASSETS

pytestmark = pytest.mark.skipif(not ASSETS.exists(), reason="shared assets are not present")


@pytest.fixture(scope="module")
def items() -> list[EvalItem]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATAGEN_EVAL_DIR", str(ASSETS))
        loaded, _ = get_task("math500").load()
    return loaded


async def _scores(items: list[EvalItem], index: int, preds: list[str]) -> list[float | None]:
    task = get_task("math500")
    responses = [GenResponse(key=str(i), text=f"So the answer is $\\boxed{{{p}}}$.")
                 for i, p in enumerate(preds)]
    scores = await task.score([items[index]] * len(preds), responses, ScoreContext())
    return [s.score for s in scores]


# (item index, gold as in the data, predictions that must pass, predictions that must fail)
BASE_CASES = [
    (30, "52_8", ["52_8", "52_{8}", "\\text{52}_8", "(52)_8", "52_{\\text{eight}}", "052_8"],
     ["52_9", "52", "42", "42_{10}", "53_8", "52_{16}"]),
    (70, "40_9", ["40_9", "40_{9}"], ["40", "40_8", "36"]),
    (71, "2516_8", ["2516_8", "2516_{8}"], ["2516", "2516_9", "1358"]),
    (127, "4210_{5}", ["4210_5", "4210_{5}"], ["4210", "4210_6", "555"]),
    (137, "204_5", ["204_5", "204_{5}"], ["204", "204_6", "54"]),
    (338, "4343_6", ["4343_6", "4343_{six}"], ["4343", "4343_7", "999"]),
]


def test_the_six_base_items_are_the_ones_with_a_base_subscript(items):
    based = [(i, item.data["gold"]) for i, item in enumerate(items)
             if base_answer(item.data["gold"]) is not None]
    assert based == [(c[0], c[1]) for c in BASE_CASES]


@pytest.mark.parametrize(("index", "gold", "good", "bad"), BASE_CASES,
                         ids=[c[1] for c in BASE_CASES])
async def test_a_base_answer_must_have_the_golds_digits_and_base(items, index, gold, good, bad):
    assert items[index].data["gold"] == gold
    assert await _scores(items, index, good) == [1.0] * len(good)
    assert await _scores(items, index, bad) == [0.0] * len(bad)


def test_a_base_10_subscript_is_the_plain_number_and_other_bases_are_not():
    question = "What's the largest eight-digit base 2 integer?  Express your answer in base 10."
    assert math500_answers_match("255_{10}", "255", question)
    assert not math500_answers_match("11111111_2", "255", question)
    assert not math500_answers_match("255_8", "255", question)


async def test_exact_decimal_golds_take_no_rounding_allowance(items):
    # 430: "What is 9/2 expressed as a decimal?" (gold 4.5); 459: the 3-inch cube (gold $18.90)
    assert items[430].data["gold"] == "4.5" and items[459].data["gold"] == "\\$18.90"
    assert await _scores(items, 430, ["4.5", "4.50", "\\frac{9}{2}", "9/2"]) == [1.0] * 4
    assert await _scores(items, 430, ["4.54", "4.46", "4.500001", "5"]) == [0.0] * 4
    assert await _scores(items, 459, ["18.90", "\\$18.9", "18.9 dollars"]) == [1.0] * 3
    assert await _scores(items, 459, ["18.91", "18.904", "18.89", "19"]) == [0.0] * 4


async def test_rounding_only_at_the_precision_the_question_asks(items):
    # 44: "Express your answer as a decimal to the nearest hundredth." (gold 1.25)
    assert asked_precision(items[44].prompt) == 2
    assert await _scores(items, 44, ["1.25", "1.250", "1.2549", "1.245", "5/4"]) == [1.0] * 5
    assert await _scores(items, 44, ["1.26", "1.24", "1.3", "1.2", "1.255"]) == [0.0] * 5
    # 301: "Round your answer to the nearest tenth of a cent." (gold 5.4 cents)
    assert asked_precision(items[301].prompt) == 1
    assert await _scores(items, 301, ["5.4", "5.43", "5.36", "5.4 \\text{ cents}"]) == [1.0] * 4
    assert await _scores(items, 301, ["5.5", "5.3", "5.45", "5"]) == [0.0] * 4
    # 242: "Express your answer to the nearest whole number." (gold $32,348)
    assert asked_precision(items[242].prompt) == 0
    assert await _scores(items, 242, ["32348", "32,348", "32348.37"]) == [1.0] * 3
    assert await _scores(items, 242, ["32349", "32348.5", "32347"]) == [0.0] * 3


@pytest.mark.parametrize(("question", "places"), [
    ("Express your answer as a decimal to the nearest tenth.", 1),
    ("Round your answer to the nearest hundredth.", 2),
    ("Give it to the nearest thousandth.", 3),
    ("Round to the nearest ten-thousandth.", 4),
    ("Express your answer to the nearest whole number.", 0),
    ("Round to the nearest integer.", 0),
    ("How much, to the nearest cent?", 2),
    ("Round your answer to the nearest tenth of a cent.", 1),
    ("Round to the nearest hundred.", -2),
    ("Round your answer to 3 decimal places.", 3),
    ("Give the answer to two decimal places.", 2),
    ("What is 9/2 expressed as a decimal?", None),
    ("In how many ways can 7 people sit around a round table?", None),
    ("What is the ratio?  Round to the nearest tenth, then to the nearest hundredth.", 2),
])
def test_asked_precision_reads_the_rounding_the_question_asks_for(question, places):
    assert asked_precision(question) == places


def _perturbations(gold: str, places: int | None) -> list[str]:
    """Wrong numbers close to a plain numeric gold: one more digit, and one unit in the last
    place the question allows (or the gold is written to)."""
    value = Fraction(normalize_answer(gold))
    written = len(gold.split(".", 1)[1]) if "." in gold else 0
    step = Fraction(1, 10 ** (places if places is not None else max(written, 0)))
    out = [str(float(value + step)), str(float(value - step))]
    if places is None:
        out.append(f"{gold}1" if "." in gold else f"{gold}.1")
    return out


async def test_every_gold_matches_itself_and_near_misses_of_numeric_golds_do_not(items):
    task = get_task("math500")
    golds = [item.data["gold"] for item in items]
    own = await task.score(items, [GenResponse(key=str(i), text=f"\\boxed{{{g}}}")
                                   for i, g in enumerate(golds)], ScoreContext())
    assert [s.item_id for s in own if s.score != 1.0] == []
    checked = 0
    for item in items:
        gold = normalize_answer(item.data["gold"])
        try:
            Fraction(gold)
        except ValueError:
            continue  # not a plain decimal or integer
        places = asked_precision(item.prompt)
        for wrong in _perturbations(gold, places):
            assert not math500_answers_match(wrong, item.data["gold"], item.prompt), (
                item.item_id, item.data["gold"], wrong)
            checked += 1
    assert checked > 700  # about 250 numeric golds, three near misses each


async def test_gsm8k_scoring_keeps_its_rounding_allowance_for_decimal_golds():
    # GSM8K uses the shared matcher unchanged: a decimal gold admits a more precise answer
    task = get_task("gsm8k")
    item = EvalItem(item_id="g", index=0, prompt="", data={"gold": "0.33"})
    [more_precise, wrong] = await task.score(
        [item, item], [GenResponse(key="a", text="#### 0.333"),
                       GenResponse(key="b", text="#### 0.34")], ScoreContext())
    assert (more_precise.score, wrong.score) == (1.0, 0.0)

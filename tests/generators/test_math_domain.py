"""Math final answers: hand-labelled extraction, normalisation and matching cases, and every
GSM8K / MATH-500 gold answer round-tripped through the same functions the scorers use."""

from __future__ import annotations

import itertools
import json
import re
import signal
import threading
from pathlib import Path

import pytest

from datagen_core.errors import InputError
from generators.domains import math as m
from generators.domains.math import (
    answers_match,
    extract_answer,
    gsm8k_gold,
    normalize_answer,
    score,
)
from tests.conftest import ASSETS

# (prediction, gold, expected): why each case is decided that way is in the module docstring.
MATCH_CASES = [
    # fractions in every spelling
    (r"\frac{1}{2}", "0.5", True),
    (r"\dfrac12", "1/2", True),
    ("0.5", r"\tfrac{1}{2}", True),
    (r"-\frac34", "-3/4", True),
    (r"\frac{-3}{4}", "-0.75", True),
    (r"2\frac{1}{4}", "9/4", True),  # a mixed number, as MATH writes them
    ("3/4", "0.75", True),
    # money and units
    ("$18", "18 dollars", True),
    ("18.00", "$18", True),
    (r"\$18.00", "18", True),
    ("18 eggs", "18", True),
    (r"5\text{ cm}", "5", True),
    (r"5 \text{ cm}^2", "5", True),
    (r"90^\circ", "90", True),
    (r"90^{\circ}", "90", True),
    ("5 m", "5", True),  # not by our rule (one letter could be a variable) but math-verify's units
    ("5 x", "5", False),
    # thousands separators versus tuples and lists
    ("1,000", "1000", True),
    ("1{,}000", "1000", True),
    (r"1\,000", "1000", True),
    ("(1,2)", "12", False),
    ("1,2", "12", False),
    ("(1,2)", "(1, 2)", True),
    ("3, 5, 7", "7,5,3", True),  # math-verify reads a bare list as a set
    # percentages: the sign is dropped, the scale is not changed
    ("50%", "50", True),
    (r"50\%", "50", True),
    ("0.5", "50%", False),
    # signs
    ("-5", "\u22125", True),
    ("-5", "5", False),
    # text wrappers and words
    (r"\text{Evelyn}", "Evelyn", True),
    ("evelyn", r"\text{Evelyn}", True),
    ("Evelyn", "Nevely", False),  # sympy alone would call these the same product of letters
    # decimals and trailing noise
    ("0.50", "0.5", True),
    ("5.0", "5", True),
    ("12.", "12", True),
    (".5", "0.5", True),
    # assignments
    ("x=5", "5", True),
    ("y = 2x + 3", "2x+3", True),
    # symbolic equivalence (math-verify)
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),
    (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt{3}}", True),
    (r"2\pi", r"\pi \cdot 2", True),
    (r"\pi r^2", r"r^2\pi", True),
    ("x^2+2x+1", "(x+1)^2", True),
    (r"\sqrt{4}", "2", True),
    ("10^2", "100", True),
    (r"11\sqrt2", r"11\sqrt{2}", True),
    ("6 - 5i", "6-5i", True),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\pi/2)", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    ("1.414214", r"\sqrt{2}", True),  # math-verify's 6-place rounding for non-plain expressions
    # intervals
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    (r"(2, 5)", r"\left(2,5\right)", True),
    ("[2,5)", "(2,5)", False),
    # must not match
    ("2", "20", False),
    ("1/2", "2", False),
    ("2 and 3", "2", False),
    (r"\frac{1}{0}", "5", False),
    ("", "", False),
    ("abc", "", False),
    # tolerance policy: exact rationals; only a decimal gold admits rounding to its precision
    ("0.333", "1/3", False),
    ("1/3", "0.333", True),
    ("0.3333", "0.333", True),
    ("0.33", "0.333", False),
    ("2.9999", "3", False),
    ("3", "2.5", False),
    ("2.45", "2.5", True),
    ("2.44", "2.5", False),
    ("-2.45", "-2.5", True),  # half away from zero
]

EXTRACT_CASES = [
    ("so 42\n#### 42", "42"),
    ("#### 7\nwait, recount\n#### 42", "42"),
    ("#### 42 dollars", "42 dollars"),
    ("#### 42\n\nHope this helps, 7", "42"),
    (r"$\boxed{\frac{a}{b}}$", r"\frac{a}{b}"),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{\sqrt{2}}{2}"),
    (r"first \boxed{1} then \boxed{2}", "2"),
    (r"\fbox{9}", "9"),
    (r"so $\boxed 5$", "5"),
    (r"\boxed{}", None),
    (r"\boxed{unbalanced", None),
    ("#### ", None),
    ("The answer is 42.", "42"),
    ("The final answer is $42$. I hope it is correct.", "42"),
    ("**Final Answer:** 42", "42"),
    ("Final Answer: The final answer is 7. I hope it is correct.", "7"),
    ("Answer: 3.5", "3.5"),
    ("Final answer:\n\n12", "12"),
    ("The answer is $x = 5$ because the rest cancels", "x = 5"),
    (r"The answer is: \left( 3, \frac{\pi}{2} \right)", r"\left( 3, \frac{\pi}{2} \right)"),
    ("The answer is 1. Then the answer is 2.", "2"),
    # no final-answer marker: None, whatever numbers the text holds
    ("no answer here 5 6", None),
    ("the answer depends on x: 3", None),
    ("I get -7.", None),
    ("", None),
]

FALLBACK_CASES = [
    ("no answer here 5 6", "6"),
    ("so 1,234 apples", "1,234"),
    ("total is 3/4", "3/4"),
    ("I get -7.", "-7"),
    ("no numbers at all", None),
    ("#### 3 even though 9 comes later", "3 even though 9 comes later"),
]

NORMALIZE_CASES = [
    (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}"),
    (r"\frac12", r"\frac{1}{2}"),
    (r"\frac{1}2", r"\frac{1}{2}"),
    (r"\sqrt2", r"\sqrt{2}"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    (r"3\!\cdot\!4", r"3\cdot4"),
    (r"\pi r^2", r"\pi r^2"),  # the space that keeps \pi a command stays
    ("1,000,000", "1000000"),
    ("(1,000, 2)", "(1,000,2)"),
    ("0.500", "0.5"),
    ("10.0", "10"),
    ("$ 18.", "18"),
    (r"\displaystyle x = \frac{3}{4}", r"\frac{3}{4}"),
    (r"30^\circ", "30"),
    (r"10\%", "10"),
    (r"\text{(A)}", "(A)"),
]


@pytest.mark.parametrize(("pred", "gold", "expected"), MATCH_CASES)
def test_answers_match(pred: str, gold: str, expected: bool) -> None:
    assert answers_match(pred, gold) is expected


def test_the_case_table_is_big_enough() -> None:
    assert len(MATCH_CASES) >= 40


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(("text", "expected"), FALLBACK_CASES)
def test_extract_answer_lenient_fallback(text: str, expected: str | None) -> None:
    assert extract_answer(text, fallback_last_number=True) == expected


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE_CASES)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_score_extracts_leniently_and_matches() -> None:
    assert score("She makes 9 * 2 = $18 a day.", "18")
    assert score(r"So it is $\boxed{\dfrac{3}{4}}$.", "0.75")
    assert not score("I could not solve it.", "18")
    assert not score("The answer is 19.", "18")


def test_gsm8k_gold() -> None:
    assert gsm8k_gold("2 + 2 = <<2+2=4>>4\n#### 1,450,000") == "1450000"
    with pytest.raises(InputError):
        gsm8k_gold("no final answer")


def test_matching_from_a_worker_thread_skips_signal_timeouts() -> None:
    results: list[tuple[int | None, bool, bool]] = []

    def work() -> None:
        results.append(
            (
                m._alarm_timeout(),
                answers_match(r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}"),
                answers_match("[2,5)", "(2,5)"),
            )
        )

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert results == [(None, True, False)]


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="POSIX interval timers")
def test_main_thread_uses_timeouts_only_when_no_alarm_is_pending() -> None:
    saved = signal.setitimer(signal.ITIMER_REAL, 0)  # pytest-timeout may hold one: park it
    try:
        assert m._alarm_timeout() == m.SYMBOLIC_TIMEOUT_S
        assert answers_match(r"2\pi", r"\pi \cdot 2")
        signal.setitimer(signal.ITIMER_REAL, 100)
        assert m._alarm_timeout() is None
        assert answers_match(r"2\pi", r"\pi \cdot 2")
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 90  # the caller's alarm survived
    finally:
        signal.setitimer(signal.ITIMER_REAL, *saved)


def test_overlong_answers_are_not_sent_to_math_verify() -> None:
    long = "+".join(["x"] * m.SYMBOLIC_MAX_CHARS)
    assert not answers_match(long, long[::-1] + "+0")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_every_gsm8k_gold_extracts_to_an_integer() -> None:
    rows = _rows(ASSETS / "gsm8k" / "test.jsonl")
    assert len(rows) == 1319
    for row in rows:
        raw = extract_answer(row["answer"])
        assert raw is not None, row["answer"][-60:]
        gold = gsm8k_gold(row["answer"])
        assert re.fullmatch(r"-?\d+", gold), (raw, gold)
        assert answers_match(raw, gold)
        # a student that says it in words, with the gold's thousands separator, still scores
        assert score(f"Some steps.\nThe answer is {raw}.", gold), raw


def _math500() -> list[tuple[str, str]]:
    """(solution, gold): each ``answer`` field is a solution with a ``\\boxed{}`` final answer,
    followed by "The answer is: GOLD"."""
    pairs = []
    for row in _rows(ASSETS / "math500" / "test.jsonl"):
        solution, gold = row["answer"].rsplit("The answer is:", 1)
        pairs.append((solution, gold.strip()))
    assert len(pairs) == 500
    return pairs


def test_every_math500_solution_extracts_its_gold() -> None:
    for solution, gold in _math500():
        extracted = extract_answer(solution)
        assert extracted is not None, solution[-80:]
        assert answers_match(extracted, gold), (extracted, gold)
        assert score(f"Working...\nThe final answer is $\\boxed{{{gold}}}$.", gold), gold


def test_neighbouring_math500_golds_do_not_match() -> None:
    """A false-positive guard over real answers: adjacent golds, when they are not the same
    answer written alike, must not match (this sends ~500 pairs through math-verify)."""
    golds = [gold for _, gold in _math500()]
    wrong = [
        (a, b)
        for a, b in itertools.pairwise(golds)
        if normalize_answer(a) != normalize_answer(b) and answers_match(a, b)
    ]
    assert wrong == []

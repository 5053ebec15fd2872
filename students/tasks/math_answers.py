"""MATH-500 answer matching that reads the question: no false passes on bases or rounding.

:func:`generators.domains.math.answers_match` is shared with the math validator and scores
GSM8K unchanged. MATH-500 scoring adds what only the question can tell, in
:func:`math500_answers_match`:

- **Bases.** An answer with a base subscript (``52_8``, ``52_{8}``, ``\\text{52}_8``,
  ``(52)_8``, ``52_{\\text{eight}}``) matches only an answer in the same base with the same value
  in that base (``052_8`` = ``52_8``; hex digits compare case-insensitively). ``52_9`` and a bare
  ``52`` do not match gold ``52_8`` (math-verify reads a subscript as decoration and calls all
  three equal). A base-10 subscript (``255_{10}``) is the plain number; a prediction in another
  base never matches a gold without one.
- **Plain numbers** (integers, decimals, ``a/b``, ``\\frac{a}{b}``, mixed numbers) compare
  exactly (``4.5`` = ``4.50`` = ``9/2``; ``4.54`` != ``4.5``; ``18.91`` != ``18.90``). A rounding
  allowance applies only when the question asks for rounding ("to the nearest tenth /
  hundredth / whole number / cent", "to N decimal places"), and at the precision asked, not at
  the gold's written precision: a prediction given more precisely than asked (or as a fraction)
  matches when it rounds, half away from zero, to the gold (``18.904`` matches gold ``18.90``
  for "to the nearest cent"); one given at the asked precision or coarser must equal the gold.
  Several precisions in one question: the finest is used.
- Everything else goes to :func:`~generators.domains.math.answers_match` (symbolic equivalence
  through math-verify).

math-verify's own options (``verify(..., float_rounding=6, numeric_precision=15)``) cannot
express either rule: it has no notion of bases, and its float rounding is a fixed number of
places for every question, so plain numbers never reach it here.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from generators.domains.math import answers_match, normalize_answer

__all__ = ["asked_precision", "base_answer", "math500_answers_match"]

_BASE_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
               "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
               "fifteen": 15, "sixteen": 16}
_DIGITS = r"[0-9A-Za-z]+"
_BASE_ANSWER = re.compile(
    r"^(?:\\(?:text|textrm|mathrm|mbox)\s*\{\s*(?P<t>" + _DIGITS + r")\s*\}"
    r"|\(\s*(?P<p>" + _DIGITS + r")\s*\)|\{\s*(?P<b>" + _DIGITS + r")\s*\}|(?P<d>" + _DIGITS + r"))"
    r"\s*_\s*(?:\{\s*(?:\\(?:text|textrm|mathrm|mbox)\s*\{\s*(?P<w1>[A-Za-z0-9]+)\s*\}"
    r"|\(?\s*(?P<w2>[A-Za-z0-9]+)\s*\)?)\s*\}|(?P<w3>[0-9]))$"
)

_PLACES_WORDS = {"tenth": 1, "tenths": 1, "hundredth": 2, "hundredths": 2, "thousandth": 3,
                 "thousandths": 3, "ten-thousandth": 4, "ten thousandth": 4,
                 "hundred-thousandth": 5, "hundred thousandth": 5, "millionth": 6}
_WHOLE_WORDS = {"whole number": 0, "whole": 0, "integer": 0, "dollar": 0, "unit": 0,
                "degree": 0, "percent": 0, "percentage point": 0, "cent": 2, "ten": -1,
                "hundred": -2, "thousand": -3}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_NEAREST = re.compile(
    r"nearest\s+(?:whole\s+)?(ten[- ]thousandths?|hundred[- ]thousandths?|tenths?|hundredths?|"
    r"thousandths?|millionth|whole number|integer|percentage point|dollar|cent|unit|degree|"
    r"percent|whole|ten|hundred|thousand)\b",
    re.IGNORECASE,
)
_DECIMAL_PLACES = re.compile(r"(\d+|one|two|three|four|five|six)\s+(?:decimal\s+)?(?:places?|"
                             r"digits?\s+after\s+the\s+decimal\s+point)", re.IGNORECASE)

_PLAIN = (
    re.compile(r"^-?\d+(?:\.\d+)?$"),
    re.compile(r"^(-?\d+)/(\d+)$"),
    re.compile(r"^(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}$"),
    re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$"),
)


def base_answer(answer: str) -> tuple[str, int] | None:
    """``(digits, base)`` of an answer written with a base subscript, else None.

    ``52_8`` -> ``("52", 8)``; also ``52_{8}``, ``\\text{52}_8``, ``(52)_8``, ``{52}_8`` and a
    base in words (``52_{\\text{eight}}``). Dollar signs and surrounding space are ignored.
    """
    s = answer.strip().replace("$", "").replace("\\!", "").strip()
    m = _BASE_ANSWER.match(s)
    if not m:
        return None
    digits = next(g for g in (m["t"], m["p"], m["b"], m["d"]) if g is not None)
    word = next(g for g in (m["w1"], m["w2"], m["w3"]) if g is not None).lower()
    base = int(word) if word.isdigit() else _BASE_WORDS.get(word)
    if base is None or not 2 <= base <= 36:
        return None
    return digits, base


def _base_value(digits: str, base: int) -> int | None:
    try:
        return int(digits, base)
    except ValueError:  # a digit the base does not have
        return None


def _bases_match(pred: str, gold: str) -> bool | None:
    """The verdict when either side carries a base subscript; None when neither does."""
    p, g = base_answer(pred), base_answer(gold)
    if p is None and g is None:
        return None
    if g is None:  # only the prediction has a base: it must be base 10, equal to the gold
        assert p is not None
        return p[1] == 10 and _plain_match(p[0], gold, None)
    if p is None:  # a gold in base b: a bare number is not an answer in base b
        return g[1] == 10 and _plain_match(pred, g[0], None)
    if p[1] != g[1]:
        return False
    p_value, g_value = _base_value(*p), _base_value(*g)
    if p_value is None or g_value is None:
        return p[0].lower() == g[0].lower()
    return p_value == g_value


def asked_precision(question: str) -> int | None:
    """Decimal places the question asks the answer to be rounded to, or None if it asks none.

    "to the nearest hundredth" -> 2, "nearest tenth of a cent" -> 1, "nearest whole number" ->
    0, "nearest cent" -> 2, "nearest hundred" -> -2, "to 3 decimal places" -> 3. The finest
    precision wins when a question names several.
    """
    found: list[int] = []
    for m in _NEAREST.finditer(question):
        word = re.sub(r"\s+", " ", m[1].lower())
        if word in _PLACES_WORDS:
            found.append(_PLACES_WORDS[word])
        elif word.rstrip("s") in _PLACES_WORDS:
            found.append(_PLACES_WORDS[word.rstrip("s")])
        else:
            found.append(_WHOLE_WORDS[word])
    for m in _DECIMAL_PLACES.finditer(question):
        word = m[1].lower()
        found.append(int(word) if word.isdigit() else _NUMBER_WORDS[word])
    return max(found) if found else None


def _plain_number(s: str) -> tuple[Fraction, int | None] | None:
    """A normalised plain number as (exact value, decimal places if written as a decimal)."""
    decimal_, ratio, frac, mixed = (p.match(s) for p in _PLAIN)
    try:
        if decimal_:
            return Fraction(s), (len(s.split(".", 1)[1]) if "." in s else 0)
        if ratio:
            return Fraction(int(ratio[1]), int(ratio[2])), None
        if frac:
            value = Fraction(frac[2]) / Fraction(frac[3])
            return (-value if frac[1] else value), None
        if mixed:
            value = int(mixed[2]) + Fraction(int(mixed[3]), int(mixed[4]))
            return (-value if mixed[1] else value), None
    except ZeroDivisionError:
        return None
    return None


def _round_half_away(value: Fraction, places: int) -> Fraction:
    scale = Fraction(10) ** places
    rounded = math.floor(abs(value) * scale + Fraction(1, 2)) / scale
    return rounded if value >= 0 else -rounded


def _plain_match(pred: str, gold: str, places: int | None) -> bool:
    """Both sides plain numbers: exact, or rounded to ``places`` when the question asks."""
    p_num, g_num = _plain_number(normalize_answer(pred)), _plain_number(normalize_answer(gold))
    if p_num is None or g_num is None:
        return False
    (p, p_places), (g, _) = p_num, g_num
    if p == g:
        return True
    if places is None:
        return False
    if p_places is not None and p_places <= max(places, 0):
        return False  # given at the precision asked (or coarser) and not equal
    return _round_half_away(p, places) == g


def math500_answers_match(pred: str, gold: str, question: str = "") -> bool:
    """Whether a predicted MATH-500 final answer equals the gold, given the question.

    The rules are in the module docstring; the question only decides whether, and to what
    precision, a rounded numeric answer is accepted.
    """
    by_base = _bases_match(pred, gold)
    if by_base is not None:
        return by_base
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p or not g:
        return False
    if _plain_number(p) is not None and _plain_number(g) is not None:
        return _plain_match(p, g, asked_precision(question))
    return answers_match(pred, gold)

"""Final answers for math: extraction, normalisation and matching.

One module judges math answers on both sides of a benchmark: the math validator (a generated
solution must end in an extractable final answer) and the GSM8K / MATH-500 scorers (a student's
answer must match the gold). Sharing it means no row is accepted or rejected by rules the
evaluation does not apply.

Extraction (:func:`extract_answer`), in this order, each taking the last occurrence: ``#### 42``
(GSM8K), ``\\boxed{...}`` / ``\\fbox{...}`` (MATH; nested braces), then a phrase ("The answer is
42", "Final answer: 42", a line starting "Answer:"). Without any of these the text has no final
answer (None). The last number in the text is used only when asked (``fallback_last_number``, for
lenient student scoring): a validator that took any number would accept solutions that never
commit to an answer.

Normalisation (:func:`normalize_answer`) removes presentation, not content: whitespace, ``$`` and
``\\$``, ``\\left``/``\\right``, LaTeX spacing (``\\! \\, \\; \\: \\quad``), ``\\displaystyle``,
degree marks (``^\\circ``, ``°``), percent signs (``%``, ``\\%``), a ``\\text{...}`` /
``\\mbox{...}`` / ``\\mathrm{...}`` that ends the answer after a value (units: ``5\\text{ cm}^2``
-> ``5``; anywhere else ``\\text{X}`` -> ``X``), plain words after a lone number (``18 dollars``,
``3 eggs`` -> the number; not connectives such as "and"), thousands separators in a lone number
(``1,000`` and ``1{,}000`` -> ``1000``; ``(1,2)`` and ``1,2`` are left alone), trailing periods,
a leading one-variable assignment (``x = 5`` -> ``5``), ``\\dfrac``/``\\tfrac`` -> ``\\frac``,
braces for one-digit arguments (``\\frac12`` -> ``\\frac{1}{2}``, ``\\sqrt2`` -> ``\\sqrt{2}``), and
trailing zeros of decimals (``0.50`` -> ``0.5``, ``5.0`` -> ``5``). Dropping ``%`` makes ``10%``
equal ``10`` (GSM8K and MATH give percent answers as bare numbers) and unequal to ``0.1``.

Matching (:func:`answers_match`), cheapest first:

1. equal normalised strings (words compare case-insensitively: ``Evelyn`` = ``evelyn``);
2. both sides plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``, mixed numbers
   ``2\\frac{1}{4}``): exact rational equality, no float tolerance: ``0.75`` = ``3/4``, but
   ``0.333`` != ``1/3`` and ``2.9999`` != ``3``. One allowance: a gold that is itself a decimal
   with d places was rounded ("to the nearest hundredth"), so a prediction with more precision
   than d places that rounds (half away from zero) to the gold matches it: ``1/3`` and ``0.3333``
   match gold ``0.333``, ``0.33`` does not. Plain numbers are settled here and never reach
   math-verify, whose float rounding to 6 places would call ``0.333333`` equal to ``1/3``;
3. otherwise math-verify, when installed: symbolic equivalence (``\\sqrt{2}/2`` =
   ``\\frac{\\sqrt{2}}{2}``), sets, intervals, tuples, matrices, equations. Its rules apply there,
   including its 6-place float rounding for non-plain expressions (``1.414214`` = ``\\sqrt{2}``)
   and its own unit list (``5 m`` = ``5``, though ``5 x`` != ``5``).
   Its timeouts use SIGALRM, which works only in the main thread and would cancel a caller's own
   alarm (pytest-timeout, for one), so they are used only in the main thread with no alarm
   pending; elsewhere the inputs' length is capped instead.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import threading
from fractions import Fraction

from datagen_core.errors import InputError

__all__ = ["answers_match", "extract_answer", "gsm8k_gold", "normalize_answer", "score"]

SYMBOLIC_TIMEOUT_S = 5
"""Seconds math-verify may spend parsing or comparing one answer (main thread only)."""
SYMBOLIC_MAX_CHARS = 300
"""Longer normalised answers are not given to math-verify: sympy can take minutes on them."""


def _not_timeout_disabled(record: logging.LogRecord) -> bool:
    """math-verify warns once that its timeout is off; here that is deliberate (see above)."""
    return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_not_timeout_disabled)

_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])[ \t]*")
_PHRASE = re.compile(
    r"(?:\bfinal\s+answer|\bthe\s+answer|^[ \t*#>]*answer)\b[ \t*]*(?:is\b|:|=)[ \t*:=]*"
    r"(?=([^\n]*))",
    re.IGNORECASE | re.MULTILINE,
)
_LAST_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")

_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])\s*")
_SPACING = re.compile(r"(?<!\\)\\(?:[!,;: ]|q?quad(?![A-Za-z]))|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|°")
_TEXT_CMD = r"\\(?:text|textrm|textup|mbox|mathrm)\s*\{([^{}]*)\}"
_TRAILING_TEXT = re.compile(r"(?<=[\d}])\s*" + _TEXT_CMD + r"(?:\s*\^\s*\{?\d\}?)?\s*$")
_TEXT = re.compile(_TEXT_CMD)
_ASSIGN = re.compile(r"^(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?\s*=\s*(?=\S)")
_NUM_WORDS = re.compile(r"^(-?[\d.,/]*\d)\s+([A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*)(?:\s*\^\{?\d\}?)?$")
_CONNECTIVES = frozenset({"and", "or", "to", "through", "plus", "minus", "times", "over", "by"})
_WHITESPACE = re.compile(r"(\\[A-Za-z]+)?\s+(?=([A-Za-z])?)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"(?<![\d.])(\d*)\.(\d+)(?![\d.])")
_WORDS = re.compile(r"[A-Za-z]{3,}(?: [A-Za-z]+)*")

_PLAIN_NUMBERS = (
    re.compile(r"^(-?\d+(?:\.\d+)?)$"),
    re.compile(r"^(-?\d+)/(\d+)$"),
    re.compile(r"^(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}$"),
    re.compile(r"^(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$"),
)


def extract_answer(text: str, fallback_last_number: bool = False) -> str | None:
    """The final answer a solution commits to, as written (not normalised), or None.

    ``#### X`` wins over ``\\boxed{X}``, which wins over "the answer is X"; within each kind the
    last occurrence counts, since solutions revise themselves. With ``fallback_last_number`` a
    text without any marker yields its last number (lenient scoring of students that do not
    follow the answer format); the validator leaves it off.
    """
    hashes = [m[1].strip() for m in _HASHES.finditer(text) if m[1].strip()]
    if hashes:
        return hashes[-1]
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    phrases = list(_PHRASE.finditer(text))
    for match in reversed(phrases):
        answer = _clean_phrase(match[1] or _next_line(text, match.end()))
        if answer:
            return answer
    if fallback_last_number:
        numbers = _LAST_NUMBER.findall(text)
        if numbers:
            return str(numbers[-1])
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last well-formed, non-empty ``\\boxed{...}`` (balanced braces)."""
    for match in reversed(list(_BOXED.finditer(text))):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if depth == 0:
                    content = text[start + 1 : i].strip()
                    if content:
                        return content
                    break
        else:  # \boxed 5: one token, as TeX reads it
            token = re.match(r"[^\s$]+", text[start:])
            if token:
                return token[0]
    return None


def _next_line(text: str, pos: int) -> str:
    rest = text[pos:].lstrip()
    return rest.split("\n", 1)[0] if rest else ""


def _clean_phrase(answer: str) -> str:
    """``$x = 5$ because ...`` -> ``x = 5``; ``42. I hope it is correct.`` -> ``42``."""
    answer = answer.strip().strip("*").strip()
    math_span = re.match(r"\${1,2}([^$]+)\${1,2}", answer)
    if math_span:
        return math_span[1].strip()
    return _SENTENCE_END.split(answer, 1)[0].strip().strip("*").strip()


def normalize_answer(ans: str) -> str:
    """The canonical form of a final answer; see the module docstring for every rule."""
    s = ans.strip()
    boxed = _last_boxed(s)
    if boxed is not None:
        s = boxed
    s = s.replace("\u2212", "-")
    s = _LEFT_RIGHT.sub("", s)
    s = s.replace("\\$", "").replace("$", "")
    s = _SPACING.sub(" ", s)
    s = re.sub(r"\\displaystyle(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "").replace("%", "").replace("{,}", ",")
    s = s.strip().rstrip(".").strip()
    if s.count("=") == 1:
        s = _ASSIGN.sub("", s)
    s = _TRAILING_TEXT.sub("", s)
    s = _TEXT.sub(r"\1", s).strip().rstrip(".").strip()
    words = _NUM_WORDS.match(s)
    if words and not _CONNECTIVES.intersection(words[2].lower().split()):
        s = words[1]
    s = _WHITESPACE.sub(lambda m: f"{m[1]} " if m[1] and m[2] else (m[1] or ""), s)
    s = re.sub(r"\\(frac|sqrt)(\d)", r"\\\1{\2}", s)
    s = re.sub(r"\\frac(\{[^{}]*\})(\d)", r"\\frac\1{\2}", s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return _DECIMAL.sub(_canonical_decimal, s)


def _canonical_decimal(m: re.Match[str]) -> str:
    whole, frac = m[1] or "0", m[2].rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _as_number(s: str) -> tuple[Fraction, int | None] | None:
    """A normalised plain number as (exact value, decimal places if written as a decimal)."""
    decimal_, ratio, frac, mixed = (p.match(s) for p in _PLAIN_NUMBERS)
    try:
        if decimal_:
            places = len(s.split(".", 1)[1]) if "." in s else None
            return Fraction(decimal_[1]), places
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


def _numbers_match(pred: tuple[Fraction, int | None], gold: tuple[Fraction, int | None]) -> bool:
    (p, p_places), (g, g_places) = pred, gold
    if p == g:
        return True
    if not g_places or (p_places is not None and p_places <= g_places):
        return False
    scaled = abs(p) * 10**g_places
    rounded = math.floor(scaled + Fraction(1, 2)) * (1 if p >= 0 else -1)
    return rounded == g * 10**g_places


def answers_match(pred: str, gold: str) -> bool:
    """Whether a predicted final answer equals the gold one (rules in the module docstring).

    Not symmetric in one respect: only a decimal gold admits a rounded-to-it prediction.
    """
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    p_num, g_num = _as_number(p), _as_number(g)
    if p_num is not None and g_num is not None:
        return _numbers_match(p_num, g_num)
    if _WORDS.fullmatch(p) or _WORDS.fullmatch(g):
        # sympy reads a bare word as a product of letters: "Evelyn" would equal "Nevely"
        return p.lower() == g.lower()
    return _symbolic_match(p, g)


def _alarm_timeout() -> int | None:
    """math-verify's timeout, or None where its SIGALRM would fail or clobber another alarm."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if not hasattr(signal, "SIGALRM"):  # math-verify would spawn a process per call
        return None
    if signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0):
        return None
    return SYMBOLIC_TIMEOUT_S


def _symbolic_match(pred: str, gold: str) -> bool:
    if max(len(pred), len(gold)) > SYMBOLIC_MAX_CHARS:
        return False
    try:
        from math_verify import parse, verify
        from math_verify.errors import TimeoutException
    except ImportError:
        return False
    timeout = _alarm_timeout()
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${pred}$", parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except (Exception, TimeoutException):  # a checker never crashes a run or an evaluation
        return False


def score(pred_text: str, gold_answer: str) -> bool:
    """Whether a model's full solution ends in the gold final answer (lenient extraction)."""
    pred = extract_answer(pred_text, fallback_last_number=True)
    return pred is not None and answers_match(pred, gold_answer)


def gsm8k_gold(answer_field: str) -> str:
    """The normalised final answer of a GSM8K ``answer`` field (the text after ``####``)."""
    found = [m[1].strip() for m in _HASHES.finditer(answer_field)]
    if not found or not found[-1]:
        raise InputError(f"GSM8K answer has no '#### N' final answer: {answer_field[-80:]!r}")
    return normalize_answer(found[-1])

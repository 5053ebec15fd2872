"""Domain formats: what a valid instance looks like in each domain, and why one is rejected.

A validator never raises on bad model output: it returns a :class:`Verdict` whose ``reason`` is
recorded with the rejected row and counted in ``datagen runs show``.

- ``math``: a step-by-step solution ending in one final answer a checker can extract (``#### 42``
  or ``\\boxed{...}``), normalised exactly as the math evaluation normalises it.
- ``code``: exactly one Python block that parses; when the seed or the output carries tests they
  are run in the sandbox and must pass.
- ``general``: non-empty, no leftover template markers, within length limits.
- ``arithmetic``: two-number sums ("What is 37 plus 45?"); the answer must state an integer. It is
  the offline quickstart's domain: a CPU student learns it in a minute, and whether the stated sum
  is *right* is left to the evaluation (the validator checks form, like the math one).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datagen_core.registry import Registry

_TEMPLATE_MARKERS = re.compile(
    r"(\[(insert|your|placeholder)[^\]]*\]|\{\{[^}]*\}\}|<(new )?(instruction|response|problem|"
    r"answer|task)>|\$demonstrations|\$theme|\$instruction|\$response|lorem ipsum)",
    re.IGNORECASE,
)
_SECTION = re.compile(
    r"^[ \t]*(?:#+[ \t]*|\*\*)?(instruction|problem|question|task|response|solution|answer|tests?)"
    r"(?:\*\*)?[ \t]*:(?:\*\*)?[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_CANON = {"instruction": "instruction", "problem": "instruction", "question": "instruction",
          "task": "instruction", "response": "response", "solution": "response",
          "answer": "response", "test": "tests", "tests": "tests"}
_CODE_BLOCK = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def split_sections(text: str) -> dict[str, str]:
    """``Instruction: ... Response: ... Tests: ...`` -> {"instruction", "response", "tests"}.

    Tolerates markdown decoration (``**Instruction:**``, ``### Response:``); the first occurrence
    of each section wins, and a repeated section ends the previous one (models that go on to
    write a second example are cut there).
    """
    out: dict[str, str] = {}
    marks = [(m.start(), m.end(), _CANON[m.group(1).lower()]) for m in _SECTION.finditer(text)]
    for i, (_, end, name) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        if name in out:
            break
        out[name] = text[end:stop].strip()
    return out


@dataclass
class Verdict:
    ok: bool
    reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _reject(reason: str) -> Verdict:
    return Verdict(False, reason)


class Domain:
    name: ClassVar[str]
    min_instruction_chars = 10
    max_instruction_chars = 4000
    max_response_chars = 12000

    def validate(self, instruction: str, response: str, row: dict[str, Any] | None = None,
                 tests: list[str] | None = None) -> Verdict:
        instruction, response = instruction.strip(), response.strip()
        if len(instruction) < self.min_instruction_chars:
            return _reject("instruction missing or too short")
        if not response:
            return _reject("empty response")
        if len(instruction) > self.max_instruction_chars:
            return _reject("instruction too long")
        if len(response) > self.max_response_chars:
            return _reject("response too long")
        if _TEMPLATE_MARKERS.search(instruction) or _TEMPLATE_MARKERS.search(response):
            return _reject("leftover template marker")
        return self.check(instruction, response, row or {}, tests or [])

    def check(self, instruction: str, response: str, row: dict[str, Any],
              tests: list[str]) -> Verdict:
        return Verdict(True)

    def correct(self, response: str, verdict: Verdict, seed: dict[str, Any]
                ) -> tuple[bool | None, str]:
        """Whether a valid response is verified correct against its seed: (True, ""),
        (False, why) or (None, why it cannot be verified: the seed has nothing to check it
        against). The data side of rejection sampling and RLVR: see ``verify`` on the
        AgoraBench methods."""
        return None, f"the {self.name} domain has no verifier"


DOMAINS: Registry[type[Domain]] = Registry("domain", "datagen.domains")


def get_domain(name: str) -> Domain:
    return DOMAINS.get(name)()


class GeneralDomain(Domain):
    name = "general"

    def check(self, instruction: str, response: str, row: dict[str, Any],
              tests: list[str]) -> Verdict:
        if split_sections(response).keys() & {"instruction", "response"}:
            return _reject("response contains template sections")
        return Verdict(True)

    def correct(self, response: str, verdict: Verdict, seed: dict[str, Any]
                ) -> tuple[bool | None, str]:
        """IFEval-style seeds (``instruction_id_list`` and ``kwargs``): every instruction is
        followed, by the same strict checks the ifeval task scores with."""
        from generators.domains import ifeval_checks as checks

        ids, kwargs = seed.get("instruction_id_list"), seed.get("kwargs")
        if not ids or kwargs is None:
            return None, "the seed has no instruction checks (instruction_id_list, kwargs)"
        kws = [checks.clean_kwargs(k) for k in kwargs]
        missed = [i for i, kw in zip(ids, kws) if not checks.follows(i, kw, response)]
        return (False, f"instructions not followed: {', '.join(missed)}") if missed else (
            True, "")


class MathDomain(Domain):
    name = "math"

    def check(self, instruction: str, response: str, row: dict[str, Any],
              tests: list[str]) -> Verdict:
        from generators.domains.math import extract_answer, normalize_answer

        answer = extract_answer(response)
        if answer is None or not normalize_answer(answer):
            return _reject("no final answer (#### or \\boxed{})")
        return Verdict(True, meta={"answer": normalize_answer(answer)})

    def correct(self, response: str, verdict: Verdict, seed: dict[str, Any]
                ) -> tuple[bool | None, str]:
        """The final answer equals the seed's gold answer (its ``answer`` column, else the
        final answer of its reference solution), compared as the math tasks score."""
        from generators.domains.math import answers_match, extract_answer

        gold = seed.get("answer") or extract_answer(str(seed.get("response") or ""))
        if not gold:
            return None, "the seed has no gold answer"
        gold = extract_answer(str(gold)) or str(gold)  # "... #### 18" -> "18"
        got = verdict.meta.get("answer", "")
        return (True, "") if answers_match(got, gold) else (
            False, f"wrong answer: {got[:40]} (gold {gold[:40]})")


_INTEGER = re.compile(r"-?\d+")


def last_integer(text: str) -> str | None:
    """The last integer in ``text`` ("37 + 45 = 82" -> "82"), the arithmetic answer."""
    found = _INTEGER.findall(text.replace(",", ""))
    return found[-1] if found else None


class ArithmeticDomain(Domain):
    name = "arithmetic"
    min_instruction_chars = 5

    def check(self, instruction: str, response: str, row: dict[str, Any],
              tests: list[str]) -> Verdict:
        answer = last_integer(response)
        if answer is None:
            return _reject("no integer answer")
        return Verdict(True, meta={"answer": answer})

    def correct(self, response: str, verdict: Verdict, seed: dict[str, Any]
                ) -> tuple[bool | None, str]:
        gold = last_integer(str(seed.get("answer") or seed.get("response") or ""))
        if gold is None:
            return None, "the seed has no gold answer"
        got = verdict.meta.get("answer")
        return (True, "") if got == gold else (False, f"wrong answer: {got} (gold {gold})")


def code_blocks(text: str) -> list[str]:
    return [b for b in _CODE_BLOCK.findall(text) if b.strip()]


def parse_tests(text: str | list[str] | None) -> list[str]:
    """Assert lines from a ``Tests:`` section (fenced or not) or a seed's test list."""
    if not text:
        return []
    if isinstance(text, list):
        return [str(t).strip() for t in text if str(t).strip()]
    blocks = code_blocks(text)
    body = "\n".join(blocks) if blocks else text
    return [ln.strip() for ln in body.splitlines() if ln.strip().startswith("assert ")]


class CodeDomain(Domain):
    name = "code"

    def check(self, instruction: str, response: str, row: dict[str, Any],
              tests: list[str]) -> Verdict:
        blocks = code_blocks(response)
        if not blocks:
            return _reject("no ```python code block")
        if len(blocks) > 1:
            return _reject(f"{len(blocks)} code blocks; expected one")
        code = blocks[0]
        try:
            ast.parse(code)
        except SyntaxError as e:
            return _reject(f"code does not parse: {e.msg} (line {e.lineno})")
        tests = tests or parse_tests(row.get("tests") or row.get("test_list"))
        valid_tests = []
        for t in tests:
            try:
                ast.parse(t)
                valid_tests.append(t)
            except SyntaxError:
                continue
        meta: dict[str, Any] = {"code": code, "tests": valid_tests}
        if not valid_tests:
            return Verdict(True, meta={**meta, "tested": False})
        from datagen_core.sandbox import check_program

        result = check_program(code, valid_tests)
        if result.status != "passed":
            detail = (result.stderr or "").strip().splitlines()
            last = detail[-1][:120] if detail else result.status
            return _reject(f"tests {result.status}: {last}")
        return Verdict(True, meta={**meta, "tested": True})

    def correct(self, response: str, verdict: Verdict, seed: dict[str, Any]
                ) -> tuple[bool | None, str]:
        """Passes the seed's tests (run by :meth:`check`; a failing response is already
        rejected there, so a valid one was correct or untested)."""
        if verdict.meta.get("tested"):
            return True, ""
        return None, "the seed has no tests"

"""MBPP and HumanEval: pass@1 of greedy code, run against the data set's tests in the sandbox.

The code is taken from the completion (:func:`extract_code`): a fenced block (the one that
defines the function under test, else the longest), else the raw text. Each program runs in
:mod:`datagen_core.sandbox` (fresh interpreter, no network, memory and CPU limits, a wall-clock
timeout), so a solution that loops, segfaults or eats memory fails its own item and nothing
else; at most ``concurrency`` programs run at once.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from datagen_core.errors import InputError
from students.tasks.base import EVAL_DIR_ENV, EvalItem, ItemScore, ScoreContext, Task, TaskArgs

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PY_LANGS = ("", "python", "py", "python3", "py3")
_CODE_START = re.compile(r"^(?:def |class |import |from |@|async def )", re.MULTILINE)
_STORED_CODE_CHARS = 4000
_STDERR_TAIL = 600
SANITIZED_PATH = "mbpp/sanitized-mbpp.json"


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The program in a completion.

    Fenced blocks (Python or unlabelled; an unclosed last fence, as left by a length cut-off,
    runs to the end) win: the first that defines ``entry_point``, else the longest. Without a
    fence the raw text is the code, as is (indentation kept: HumanEval completions may be a
    function body); when it does not parse and a line further down starts a definition or an
    import, the prose before that line is dropped.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if blocks:
        python = [b for lang, b in blocks if lang in _PY_LANGS] or [b for _, b in blocks]
        if entry_point:
            defines = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(",
                                 re.MULTILINE)
            for body in python:
                if defines.search(body):
                    return body
        return max(python, key=len)
    if _parses(text):
        return text
    start = _CODE_START.search(text)
    return text[start.start():] if start and start.start() > 0 else text


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


class CodeArgs(TaskArgs):
    timeout_s: float = Field(10.0, gt=0, description="wall-clock limit per program")
    memory_mb: int = Field(1024, ge=64, description="address-space limit per program")
    concurrency: int = Field(4, ge=1, description="programs run at once")


class _CodeTask(Task):
    Args: ClassVar[type[TaskArgs]] = CodeArgs
    primary_metric = "pass@1"
    operational_args = frozenset({"source", "concurrency"})
    max_tokens = 512

    @property
    def code_args(self) -> CodeArgs:
        assert isinstance(self.args, CodeArgs)
        return self.args

    def concurrency(self) -> int:
        return self.code_args.concurrency

    def program(self, item: EvalItem, code: str) -> str:
        raise NotImplementedError

    async def score(self, items: Any, responses: Any, ctx: ScoreContext) -> list[ItemScore]:
        from datagen_core.sandbox import require_sandbox

        require_sandbox()  # no safe sandbox: one clear error, not every item scored 0
        return await super().score(items, responses, ctx)

    async def score_item(self, item: EvalItem, answer: str, ctx: ScoreContext) -> ItemScore:
        from datagen_core.sandbox import arun_python

        code = extract_code(answer, item.data.get("entry_point"))
        args = self.code_args
        result = await arun_python(self.program(item, code), timeout_s=args.timeout_s,
                                   memory_mb=args.memory_mb)
        detail: dict[str, Any] = {"status": result.status, "returncode": result.returncode,
                                  "duration_s": round(result.duration_s, 3)}
        if not result.passed:
            detail["stderr"] = result.stderr[-_STDERR_TAIL:]
        return ItemScore(item.item_id, item.index, 1.0 if result.passed else 0.0,
                         extracted=code[:_STORED_CODE_CHARS], detail=detail)


MBPP_PROMPT = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n\n"
    "Write the complete solution in a single ```python code block."
)


class MbppArgs(CodeArgs):
    variant: Literal["full", "sanitized"] = Field(
        "full", description="the Hub config: the 500-problem test split, or its hand-checked "
        "257-problem subset")
    challenge_tests: bool = Field(False, description="also run challenge_test_list")


class Mbpp(_CodeTask):
    """MBPP test split (task ids 11-510), prompted with its three tests as in the paper.

    Reads the full layout (``text``, ``test_setup_code``) and the sanitized one (``prompt``,
    ``test_imports``). A local file holding every split (the 974-row ``mbpp.jsonl``) is cut to
    the test ids. ``variant="sanitized"`` reads ``$DATAGEN_EVAL_DIR/mbpp/sanitized-mbpp.json``
    (the name the original repository gives it) when there is one, else the Hub.
    """

    name = "mbpp"
    version = "1"
    Args = MbppArgs
    local_path = "mbpp/mbpp.jsonl"
    TEST_IDS: ClassVar[range] = range(11, 511)

    def default_hub_uri(self) -> str:
        assert isinstance(self.args, MbppArgs)
        return f"hf://google-research-datasets/mbpp/{self.args.variant}:test"

    def source_uri(self) -> str:
        assert isinstance(self.args, MbppArgs)
        if self.args.variant == "sanitized" and not self.args.source:
            # The full file holds no mark of the sanitized subset: its own file, else the Hub.
            root = os.environ.get(EVAL_DIR_ENV)
            local = Path(root).expanduser() / SANITIZED_PATH if root else None
            return str(local) if local and local.exists() else self.default_hub_uri()
        return super().source_uri()

    def items(self, rows: list[dict[str, Any]]) -> list[EvalItem]:
        assert isinstance(self.args, MbppArgs)
        ids = [int(r["task_id"]) for r in rows]
        if any(i not in self.TEST_IDS for i in ids):  # all splits in one file: keep the test one
            rows = [r for r, i in zip(rows, ids) if i in self.TEST_IDS]
        items = []
        for i, row in enumerate(rows):
            text = row.get("text") or row["prompt"]
            tests = list(row["test_list"])
            if self.args.challenge_tests:
                tests += list(row.get("challenge_test_list") or [])
            # test_setup_code builds objects from the solution's classes (task 367's trees):
            # it runs after the solution; the sanitized set's test_imports run before it.
            setup = (row.get("test_setup_code") or "").strip()
            imports = "\n".join(row.get("test_imports") or [])
            items.append(EvalItem(
                item_id=f"mbpp-{row['task_id']}", index=i,
                prompt=MBPP_PROMPT.format(text=text.strip(), tests="\n".join(row["test_list"])),
                data={"tests": [setup, *tests] if setup else tests, "imports": imports,
                      "reference": row.get("code"),
                      "entry_point": _mbpp_entry_point(row.get("code") or "", tests)},
            ))
        return items

    def program(self, item: EvalItem, code: str) -> str:
        from datagen_core.sandbox import assemble_program

        return assemble_program(code, item.data["tests"], setup=item.data["imports"])


def _mbpp_entry_point(code: str, tests: list[str]) -> str | None:
    """The function the tests call: a name the reference defines and the first test calls."""
    defined = re.findall(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", code, re.MULTILINE)
    called = re.findall(r"([A-Za-z_]\w*)\s*\(", tests[0]) if tests else []
    for name in called:
        if name in defined:
            return name
    skip = {"assert", "set", "sorted", "list", "tuple", "abs", "round", "len", "isclose", "math"}
    return next((n for n in called if n not in skip), None)


HUMANEVAL_PROMPT = (
    "Complete the following Python function. Reply with the complete function (its signature, "
    "body and any imports it needs) in a single ```python code block.\n\n"
    "```python\n{prompt}```"
)


class HumanEval(_CodeTask):
    """HumanEval (164 problems): the function is completed, then ``check(entry_point)`` runs.

    A completion that defines the entry point is appended after the original prompt (whose
    imports and helper functions it may use, and whose stub it replaces); one that does not is
    taken as the function body and appended directly, as the original harness does.
    """

    name = "humaneval"
    version = "1"
    hub_uri = "hf://openai/openai_humaneval:test"
    local_path = "humaneval/HumanEval.jsonl.gz"

    def items(self, rows: list[dict[str, Any]]) -> list[EvalItem]:
        items = []
        for i, row in enumerate(rows):
            for key in ("prompt", "test", "entry_point"):
                if not row.get(key):
                    raise InputError(f"humaneval row {i} has no {key!r}")
            items.append(EvalItem(
                item_id=str(row["task_id"]), index=i,
                prompt=HUMANEVAL_PROMPT.format(prompt=row["prompt"]),
                data={"prompt": row["prompt"], "test": row["test"],
                      "entry_point": row["entry_point"],
                      "reference": row.get("canonical_solution")},
            ))
        return items

    def program(self, item: EvalItem, code: str) -> str:
        d = item.data
        entry = d["entry_point"]
        defines = re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE)
        solution = f"{d['prompt']}\n{code}" if defines else d["prompt"] + code
        return f"{solution}\n\n{d['test']}\n\ncheck({entry})\n"

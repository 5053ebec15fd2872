"""What the three AgoraBench methods share (instance generation, response generation, quality
enhancement): seed rows from any column names, prompt files, themes, and the rejection rules.

Each method works in three domains (``math``, ``code``, ``general``) with a prompt file per method x
domain (``generators/prompts/<method>/<domain>.txt``) and the domain's validator
(:mod:`generators.domains.base`). Rejected outputs are kept with their reason.

Seeds are rows with an instruction and (for demonstrations and enhancement) a response; a column
map names them (``{"instruction": "question", "response": "answer"}`` for GSM8K,
``{"instruction": "text", "response": "code", "tests": "test_list"}`` for MBPP); common names are
found on their own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from importlib import resources
from string import Template
from typing import Any

from datagen_core.errors import ConfigError, InputError
from datagen_core.fingerprint import stable_hash
from datagen_core.records import Instance, Message
from generators.domains.base import Verdict, parse_tests
from generators.methods.base import Method, MethodArgs, MethodContext, map_columns

_COLUMN_GUESSES = {
    "instruction": ("instruction", "question", "prompt", "problem", "text", "input", "query"),
    "response": ("response", "answer", "solution", "output", "completion", "code",
                 "canonical_solution"),
    "tests": ("tests", "test_list", "test"),
}


_VERIFY_FIELDS = ("answer", "instruction_id_list", "kwargs")


def prompt_template(method: str, domain: str) -> Template:
    path = resources.files("generators.prompts").joinpath(method, f"{domain}.txt")
    if not path.is_file():
        raise ConfigError(f"no prompt for {method} in domain {domain!r}")
    return Template(path.read_text(encoding="utf-8"))


def themes(domain: str) -> list[str]:
    path = resources.files("generators.prompts").joinpath("themes", f"{domain}.txt")
    return [t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]


def seed_rows(rows: list[dict[str, Any]], columns: dict[str, str] | None, source: str,
              need_response: bool) -> list[dict[str, Any]]:
    """Rows as {"id", "instruction", "response"?, "tests"?} using the column map or guesses."""
    return list(iter_seeds(rows, columns, source, need_response))


def iter_seeds(rows: Iterable[dict[str, Any]], columns: dict[str, str] | None, source: str,
               need_response: bool) -> Iterator[dict[str, Any]]:
    """:func:`seed_rows` lazily; the first row names the columns."""
    it = iter(rows)
    first = next(it, None)
    chosen = map_columns([first] if first is not None else [], columns, _COLUMN_GUESSES, source)
    assert first is not None  # map_columns refuses no rows
    cols = list(first)
    if "instruction" not in chosen:
        raise InputError(f"{source}: no instruction column; map one with --columns "
                         f"instruction=NAME (columns: {', '.join(cols)})")
    if need_response and "response" not in chosen:
        raise InputError(f"{source}: this method needs responses; map one with --columns "
                         f"response=NAME (columns: {', '.join(cols)})")
    for i, row in enumerate(itertools.chain([first], it)):
        seed: dict[str, Any] = {"id": str(row.get("id", row.get("task_id", i))),
                "instruction": str(row[chosen["instruction"]])}
        if "response" in chosen and row.get(chosen["response"]) is not None:
            seed["response"] = str(row[chosen["response"]])
        if "tests" in chosen:
            seed["tests"] = parse_tests(row.get(chosen["tests"]))
        # what verification checks a response against (a gold answer, IFEval-style checks)
        for key in _VERIFY_FIELDS:
            if key in row and row[key] is not None and chosen.get("response") != key:
                seed[key] = row[key]
        yield seed


class SeededArgs(MethodArgs):
    columns: dict[str, str] | None = None


def make_instance(index: int, instruction: str, response: str, verdict: Verdict | None,
              reason: str | None, meta: dict[str, Any]) -> Instance:
    messages = [Message(role="user", content=instruction)]
    if response:
        messages.append(Message(role="assistant", content=response))
    if verdict is not None:
        meta = {**meta, **verdict.meta}
        reason = reason or verdict.reason
    return Instance(index=index, instance_id=stable_hash([instruction, response]),
                    messages=messages, valid=reason is None, reject_reason=reason, meta=meta)


class SeededMethod(Method):
    """A method over a seed set in a domain; its prompts and validator are the domain's."""

    uses_domain = True
    args: SeededArgs

    def domain_name(self, ctx: MethodContext) -> str:
        return ctx.domain or "general"

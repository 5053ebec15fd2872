"""AgoraBench quality enhancement: revise a seed (instruction, response) pair for correctness,
completeness and clarity, keeping the answer unless the generator is confident.

As AgoraBench (arXiv 2412.03679, §2; neulab/data-agora ``run.py``, the
``quality_enhancement_*_prompt.txt`` prompts): both the instruction and the response are revised
(``Revised Question:`` / ``Revised Answer:`` there, ``Instruction:`` / ``Response:`` here), with
changes to the answer only when the generator is very confident; AgoraBench's seeds are
WebInstruct (math, non-math) and CoNaLa (code), 10K each. Departures: our prompts are our own
(Python code without tests, ``#### n`` math answers); ``answer_changed`` records whether a math
answer moved (AgoraBench does not check); invalid outputs are kept as rejected rows rather than
retried.
"""

from __future__ import annotations

from typing import Any

from datagen_core.records import GenRequest, GenResponse, Instance, Message
from generators.domains.base import get_domain, split_sections
from generators.methods.base import MethodContext, response_problem
from generators.methods.seeded import (
    SeededArgs,
    SeededMethod,
    make_instance,
    prompt_template,
    seed_rows,
)


class QualityEnhancement(SeededMethod):
    """A revised (instruction, response) for each seed pair; the answer is kept unless wrong."""

    name = "quality-enhancement"
    version = "1"
    Args = SeededArgs

    def requests(self, ctx: MethodContext) -> list[GenRequest]:
        tpl = prompt_template(self.name, self.domain_name(ctx))
        seeds = seed_rows(ctx.rows, self.args.columns, ctx.source, need_response=True)
        return [GenRequest(messages=[Message(role="user", content=tpl.substitute(
            instruction=s["instruction"], response=s.get("response", "")))], meta={"seed": s})
            for s in seeds]

    def parse(self, index: int, request: GenRequest, response: GenResponse,
              ctx: MethodContext) -> Instance:
        seed = request.meta["seed"]
        parts = split_sections(response.text or "")
        instruction, text = parts.get("instruction", ""), parts.get("response", "")
        meta: dict[str, Any] = {"seed_id": seed["id"], "key": response.key}
        reason = response_problem(response)
        if reason is None and not (instruction and text):
            reason = "missing Instruction:/Response: sections"
        domain = self.domain_name(ctx)
        verdict = None if reason else get_domain(domain).validate(
            instruction, text, row=seed, tests=seed.get("tests"))
        if verdict is not None and verdict.ok and domain == "math" and seed.get("response"):
            from generators.domains.math import answers_match, extract_answer

            old = extract_answer(seed["response"])
            meta["answer_changed"] = old is not None and not answers_match(
                verdict.meta["answer"], old)
        return make_instance(index, instruction, text, verdict, reason, meta)

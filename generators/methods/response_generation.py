"""AgoraBench response generation: a response for each seed instruction, checked by the
domain's validator and, with ``verify``, against the seed itself (rejection sampling)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import Field

from datagen_core.records import GenRequest, GenResponse, Instance, Message
from generators.domains.base import get_domain
from generators.methods.base import MethodContext, response_problem
from generators.methods.seeded import (
    SeededArgs,
    SeededMethod,
    iter_seeds,
    make_instance,
    prompt_template,
)


class ResponseGenerationArgs(SeededArgs):
    verify: bool = Field(
        False, description="keep a response only if it is verified correct against its seed: "
        "the gold final answer (math, arithmetic), the seed's tests (code), its IFEval-style "
        "instruction checks (general); a row that cannot be verified is rejected too")


class ResponseGeneration(SeededMethod):
    """A response for each seed instruction.

    AgoraBench keeps every well-formed response ("without filtering", §2 of arXiv 2412.03679;
    the released neulab/data-agora code checks the format only); its seeds are Magpie
    instructions (Magpie-Reasoning math and code, Magpie-Pro general; 10K each). Our prompts
    are our own (``#### n`` math answers, one Python block; general instructions unwrapped).
    ``verify`` is this project's addition, the data side of rejection sampling and RLVR: only
    responses verified correct against the seed are kept, and the rejection reasons count the
    rest. Whenever the seed allows a check, each row
    records ``correct`` (the ``accepted_correct`` intrinsic metric)."""

    name = "response-generation"
    version = "1"
    Args = ResponseGenerationArgs
    args: ResponseGenerationArgs

    streams = True

    def requests(self, ctx: MethodContext) -> list[GenRequest]:
        return list(self.iter_requests(ctx.rows, ctx))

    def iter_requests(self, rows: Iterable[dict[str, Any]], ctx: MethodContext
                      ) -> Iterator[GenRequest]:
        tpl = prompt_template(self.name, self.domain_name(ctx))
        for s in iter_seeds(rows, self.args.columns, ctx.source, need_response=False):
            yield GenRequest(messages=[Message(role="user", content=tpl.substitute(
                instruction=s["instruction"]))], meta={"seed": s})

    def parse(self, index: int, request: GenRequest, response: GenResponse,
              ctx: MethodContext) -> Instance:
        seed = request.meta["seed"]
        text = (response.text or "").strip()
        if text.lower().startswith("response:"):
            text = text[len("response:"):].strip()
        meta = {"seed_id": seed["id"], "key": response.key}
        reason = response_problem(response)
        domain = get_domain(self.domain_name(ctx))
        verdict = None if reason else domain.validate(seed["instruction"], text, row=seed)
        if verdict is not None and verdict.ok:
            # correctness is recorded whenever the seed allows it (the accepted_correct metric);
            # with verify on, only verified-correct responses are kept
            ok, why = domain.correct(text, verdict, seed)
            meta["correct"] = ok
            if self.args.verify and not ok:
                reason = why if ok is False else f"not verifiable: {why}"
        return make_instance(index, seed["instruction"], text, verdict, reason, meta)

"""AgoraBench response generation: a response for each seed instruction, checked by the
domain's validator."""

from __future__ import annotations

from datagen_core.records import GenRequest, GenResponse, Instance, Message
from generators.domains.base import get_domain
from generators.methods.base import MethodContext, response_problem
from generators.methods.seeded import (
    SeededArgs,
    SeededMethod,
    make_instance,
    prompt_template,
    seed_rows,
)


class ResponseGeneration(SeededMethod):
    """A response for each seed instruction."""

    name = "response-generation"
    version = "1"
    Args = SeededArgs

    def requests(self, ctx: MethodContext) -> list[GenRequest]:
        tpl = prompt_template(self.name, self.domain_name(ctx))
        seeds = seed_rows(ctx.rows, self.args.columns, ctx.source, need_response=False)
        return [GenRequest(messages=[Message(role="user",
                                             content=tpl.substitute(instruction=s["instruction"]))],
                           meta={"seed": s})
                for s in seeds]

    def parse(self, index: int, request: GenRequest, response: GenResponse,
              ctx: MethodContext) -> Instance:
        seed = request.meta["seed"]
        text = (response.text or "").strip()
        if text.lower().startswith("response:"):
            text = text[len("response:"):].strip()
        meta = {"seed_id": seed["id"], "key": response.key}
        reason = response_problem(response)
        verdict = None if reason else get_domain(self.domain_name(ctx)).validate(
            seed["instruction"], text, row=seed)
        return make_instance(index, seed["instruction"], text, verdict, reason, meta)

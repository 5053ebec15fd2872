"""AgoraBench instance generation: new problems from k demonstrations (seeds, and accepted
outputs) and a theme, harder than the examples.

Defaults and where they come from (AgoraBench, Kim et al. 2025, arXiv 2412.03679; released code
neulab/data-agora at d7e66e1):

- ``k=3`` demonstrations per request, one new instance per request: ``num_fewshot=3`` in
  ``agora_scripts/run.py``; the prompt ends at one new ``INPUT:``.
- ``accepted_share=1/3``: two demonstrations from the seeds and one from instances generated so
  far (``num_sample_from_seed_data=2`` in ``run.py``; §2: generated instances "could also
  optionally be used as demonstrations"). The released threaded path shares one list between
  the two pools, so its actual mix drifts towards generated demonstrations late in a run; this
  implementation keeps the intended 2 + 1 with two separate pools.
- a theme per request drawn from a list per domain (``run.py``). Our theme lists, prompt wording
  (``Instruction:``/``Response:`` sections, ``#### n`` math answers, Python code with a
  ``Tests:`` section that is executed), and the rejection of invalid outputs (kept as rejected
  rows, where the released code retries up to 10 times) are this project's departures.
- sampling is the generator's: AgoraBench samples at temperature 1.0, top_p 0.9, up to 4,096
  tokens (``run.py``), as ``configs/bench/agorabench.yaml`` does.
- AgoraBench filters nothing beyond the format (§2, "without filtering"); the dedup and
  decontamination that every datagen run gets are this project's additions.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import Field

from datagen_core.errors import InputError
from datagen_core.records import GenRequest, GenResponse, Instance, Message
from generators.domains.base import get_domain, parse_tests, split_sections
from generators.methods.base import MethodContext, Produced, response_problem
from generators.methods.seeded import (
    SeededArgs,
    SeededMethod,
    make_instance,
    prompt_template,
    seed_rows,
    themes,
)


class InstanceGenerationArgs(SeededArgs):
    k: int = Field(3, ge=1, le=16, description="demonstrations per request")
    accepted_share: float = Field(
        1 / 3, ge=0.0, le=1.0,
        description="share of demonstrations drawn from already accepted outputs")
    round_size: int = Field(
        64, ge=1, description="requests per round when outputs feed back (a round waits for "
        "its slowest answer: keep it at least the generator's concurrency)")
    seed: int = 0
    themes: list[str] | None = None


class InstanceGeneration(SeededMethod):
    """New problems: k demonstrations and a theme per request, 'harder than the examples'.

    Demonstrations come from two separate pools, the seeds and the outputs accepted so far, so
    ``accepted_share`` is exactly the share of demonstrations taken from accepted outputs (when
    that pool is still too small, the rest come from the seeds). With a share of 0 everything is
    one round, sent at full concurrency; otherwise rounds of ``round_size`` let accepted outputs
    feed later requests.
    """

    name = "instance-generation"
    version = "2"  # 2: accepted_share defaults to 1/3 (AgoraBench's 2 seed + 1 generated)
    Args = InstanceGenerationArgs
    args: InstanceGenerationArgs
    n_means = "outputs"
    new_instructions = True
    default_n = 10

    async def run(self, ctx: MethodContext) -> Produced:
        domain = self.domain_name(ctx)
        tpl = prompt_template(self.name, domain)
        seeds = seed_rows(ctx.rows, self.args.columns, ctx.source, need_response=True)
        seeds = [s for s in seeds if s.get("response")]
        k = self.args.k
        if len(seeds) < k:
            raise InputError(f"{ctx.source}: instance-generation needs at least k={k} seed rows "
                             f"with responses, found {len(seeds)}")
        theme_list = self.args.themes or themes(domain)
        rng = random.Random(self.args.seed)
        target = ctx.n or self.default_n
        share = self.args.accepted_share
        size = target if share == 0 else self.args.round_size
        accepted: list[dict[str, Any]] = []
        out = Produced()
        checker = get_domain(domain)
        while len(out.requests) < target:
            batch: list[GenRequest] = []
            for _ in range(min(size, target - len(out.requests))):
                n_acc = min(round(k * share), len(accepted))
                demos = [("seed", d) for d in rng.sample(seeds, k - n_acc)]
                demos += [("accepted", d) for d in rng.sample(accepted, n_acc)]
                rng.shuffle(demos)
                theme = rng.choice(theme_list)
                text = tpl.substitute(demonstrations=_format_demos([d for _, d in demos], domain),
                                      theme=theme)
                batch.append(GenRequest(
                    messages=[Message(role="user", content=text)],
                    sample=len(out.requests) + len(batch),
                    meta={"theme": theme, "demos": [f"{src}:{d['id']}" for src, d in demos]}))
            responses = await ctx.generate(batch)
            for req, resp in zip(batch, responses):
                inst = self._parse(len(out.requests), req, resp, checker)
                out.requests.append(req)
                out.responses.append(resp)
                out.instances.append(inst)
                if inst.valid:
                    accepted.append({"id": f"gen-{inst.index}",
                                     "instruction": inst.messages[0].content,
                                     "response": inst.messages[1].content,
                                     "tests": inst.meta.get("tests", [])})
        return out

    def _parse(self, index: int, request: GenRequest, response: GenResponse,
               checker: Any) -> Instance:
        parts = split_sections(response.text or "")
        instruction, text = parts.get("instruction", ""), parts.get("response", "")
        meta: dict[str, Any] = {**request.meta, "key": response.key}
        reason = response_problem(response)
        if reason is None and not (instruction and text):
            reason = "missing Instruction:/Response: sections"
        verdict = None if reason else checker.validate(
            instruction, text, tests=parse_tests(parts.get("tests")))
        return make_instance(index, instruction, text, verdict, reason, meta)


def _format_demos(demos: list[dict[str, Any]], domain: str) -> str:
    blocks = []
    for i, d in enumerate(demos, 1):
        block = f"Example {i}\nInstruction: {d['instruction']}\nResponse: {d['response']}"
        if domain == "code" and d.get("tests"):
            block += "\nTests:\n" + "\n".join(d["tests"])
        blocks.append(block)
    return "\n\n".join(blocks)

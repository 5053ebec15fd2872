"""The three AgoraBench ways an LM makes data: new problems, responses, quality enhancement.

Each works in three domains (``math``, ``code``, ``general``) with a prompt file per method x
domain (``generators/prompts/<method>/<domain>.txt``) and the domain's validator
(:mod:`generators.domains.formats`). Rejected outputs are kept with their reason.

Seeds are rows with an instruction and (for demonstrations and enhancement) a response; a column
map names them (``{"instruction": "question", "response": "answer"}`` for GSM8K,
``{"instruction": "text", "response": "code", "tests": "test_list"}`` for MBPP); common names are
found on their own.
"""

from __future__ import annotations

import random
from importlib import resources
from string import Template
from typing import Any

from pydantic import Field

from datagen_core.errors import ConfigError, InputError
from datagen_core.fingerprint import stable_hash
from datagen_core.records import GenRequest, GenResponse, Instance, Message
from generators.domains.formats import Verdict, get_domain, parse_tests, split_sections
from generators.methods.base import Method, MethodArgs, MethodContext, Produced, map_columns

_COLUMN_GUESSES = {
    "instruction": ("instruction", "question", "prompt", "problem", "text", "input", "query"),
    "response": ("response", "answer", "solution", "output", "completion", "code",
                 "canonical_solution"),
    "tests": ("tests", "test_list", "test"),
}


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
    chosen = map_columns(rows, columns, _COLUMN_GUESSES, source)
    cols = list(rows[0])
    if "instruction" not in chosen:
        raise InputError(f"{source}: no instruction column; map one with --columns "
                         f"instruction=NAME (columns: {', '.join(cols)})")
    if need_response and "response" not in chosen:
        raise InputError(f"{source}: this method needs responses; map one with --columns "
                         f"response=NAME (columns: {', '.join(cols)})")
    out = []
    for i, row in enumerate(rows):
        seed: dict[str, Any] = {"id": str(row.get("id", row.get("task_id", i))),
                "instruction": str(row[chosen["instruction"]])}
        if "response" in chosen and row.get(chosen["response"]) is not None:
            seed["response"] = str(row[chosen["response"]])
        if "tests" in chosen:
            seed["tests"] = parse_tests(row.get(chosen["tests"]))
        out.append(seed)
    return out


class AgoraArgs(MethodArgs):
    columns: dict[str, str] | None = None


def _reject_reason(response: GenResponse) -> str | None:
    if response.error is not None:
        return f"request failed: {response.error.type}"
    if response.finish_reason == "length":
        return "truncated (finish_reason=length)"
    if not (response.text or "").strip():
        return "empty response"
    return None


def _instance(index: int, instruction: str, response: str, verdict: Verdict | None,
              reason: str | None, meta: dict[str, Any]) -> Instance:
    messages = [Message(role="user", content=instruction)]
    if response:
        messages.append(Message(role="assistant", content=response))
    if verdict is not None:
        meta = {**meta, **verdict.meta}
        reason = reason or verdict.reason
    return Instance(index=index, instance_id=stable_hash([instruction, response]),
                    messages=messages, valid=reason is None, reject_reason=reason, meta=meta)


class _Agora(Method):
    uses_domain = True
    args: AgoraArgs

    def domain_name(self, ctx: MethodContext) -> str:
        return ctx.domain or "general"


class ResponseGeneration(_Agora):
    """A response for each seed instruction."""

    name = "response-generation"
    version = "1"
    Args = AgoraArgs

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
        reason = _reject_reason(response)
        verdict = None if reason else get_domain(self.domain_name(ctx)).validate(
            seed["instruction"], text, row=seed)
        return _instance(index, seed["instruction"], text, verdict, reason, meta)


class QualityEnhancement(_Agora):
    """A revised (instruction, response) for each seed pair; the answer is kept unless wrong."""

    name = "quality-enhancement"
    version = "1"
    Args = AgoraArgs

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
        reason = _reject_reason(response)
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
        return _instance(index, instruction, text, verdict, reason, meta)


class InstanceGenerationArgs(AgoraArgs):
    k: int = Field(3, ge=1, le=16, description="demonstrations per request")
    accepted_share: float = Field(
        0.0, ge=0.0, le=1.0,
        description="share of demonstrations drawn from already accepted outputs")
    round_size: int = Field(16, ge=1, description="requests per round when outputs feed back")
    seed: int = 0
    themes: list[str] | None = None


class InstanceGeneration(_Agora):
    """New problems: k demonstrations and a theme per request, 'harder than the examples'.

    Demonstrations come from two separate pools, the seeds and the outputs accepted so far, so
    ``accepted_share`` is exactly the share of demonstrations taken from accepted outputs (when
    that pool is still too small, the rest come from the seeds). With a share of 0 everything is
    one round, sent at full concurrency; otherwise rounds of ``round_size`` let accepted outputs
    feed later requests.
    """

    name = "instance-generation"
    version = "1"
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
        reason = _reject_reason(response)
        if reason is None and not (instruction and text):
            reason = "missing Instruction:/Response: sections"
        verdict = None if reason else checker.validate(
            instruction, text, tests=parse_tests(parts.get("tests")))
        return _instance(index, instruction, text, verdict, reason, meta)


def _format_demos(demos: list[dict[str, Any]], domain: str) -> str:
    blocks = []
    for i, d in enumerate(demos, 1):
        block = f"Example {i}\nInstruction: {d['instruction']}\nResponse: {d['response']}"
        if domain == "code" and d.get("tests"):
            block += "\nTests:\n" + "\n".join(d["tests"])
        blocks.append(block)
    return "\n\n".join(blocks)


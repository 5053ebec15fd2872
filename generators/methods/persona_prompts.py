"""Persona-driven prompts (Tulu 3, after Persona Hub): a generator writes one prompt per
(persona, domain template), then answers each prompt; the answers are checked by the domain.

Procedure, from the papers and their released code:

- Persona Hub (Chan et al. 2024, "Scaling Synthetic Data Creation with 1,000,000,000 Personas",
  github.com/tencent-ailab/persona-hub) conditions a data-synthesis prompt on a short persona
  description, so the same prompt reaches different topics and styles; its 1,015,863,523
  personas come from web text by *text-to-persona* (an LM is asked who is likely to read, write,
  like or dislike a text) and persona-to-persona expansion. Its 1.07M persona-written math
  problems brought a 7B model to 64.9% on MATH.
- Tulu 3 (Lambert et al. 2024, arXiv:2411.15124) made its persona SFT sets this way: 149,960
  MATH-style, 49,980 grade-school math and 34,999 Python prompts (allenai/tulu-3-sft-mixture),
  each from one persona of ``ai2-adapt-dev/personahub_personas`` (column ``persona``) and one
  skill template. Its script (open-instruct, ``scripts/persona_driven_data_gen``) works in two
  passes: persona + template -> a prompt (the reply starts with a label such as "Math problem:",
  stripped; no solution), then prompt -> a solution in a second call; GPT-4o at temperature 0.7,
  1,024 tokens. The same two passes are kept here; sampling is the generator spec's own.

Here a persona set is any table with a text column (``personas``: a file, ``hf://`` dataset or
``builtin:personas``, the 40 personas shipped with datagen), or, with ``from_text``, that column
holds texts and the generator first writes a persona for each (text-to-persona). Each domain has
its own prompt-writing templates (``generators/prompts/persona-prompts/<domain>.txt``, separated
by ``===`` lines; ``$persona`` marks the persona), or ``templates`` gives others. The answers
come from the domain's response-generation prompt and pass the domain's validator; the run's
seed set (the domain's by default) is what curation compares the new prompts with: dedup
(exact and near) within the run and against the seeds, and decontamination, as for instance
generation.

``n`` is the number of prompts: the full persona x template product by default, else a seeded
sample of that many (persona, template) pairs.
"""

from __future__ import annotations

import random
import re
from functools import cached_property
from importlib import resources
from string import Template
from typing import Any

from pydantic import Field

from datagen_core.errors import ConfigError, InputError
from datagen_core.records import GenRequest, GenResponse, Instance, Message
from generators.domains.base import get_domain
from generators.methods.base import MethodContext, Produced, response_problem
from generators.methods.seeded import SeededArgs, SeededMethod, make_instance, prompt_template
from generators.methods.tables import Table, load_table

PERSONA_COLUMNS = ("persona", "input persona", "description", "profile", "text")
TEXT_COLUMNS = ("text", "content", "document", "body", "passage")
MAX_TEXT_CHARS = 3000  # of a text shown for text-to-persona (web pages can be long)
_LABEL = re.compile(r"^[ \t]*(?:#+[ \t]*)?\**[ \t]*(?:user[ \t]+)?(?:prompt|request|question|"
                    r"problem|math problem|task|coding task|persona)[ \t]*\**[ \t]*:\**[ \t]*",
                    re.IGNORECASE | re.MULTILINE)
_AFTER = re.compile(r"^[ \t]*\**[ \t]*(?:solution|answer|response)[ \t]*\**[ \t]*:",
                    re.IGNORECASE | re.MULTILINE)


class PersonaPromptsArgs(SeededArgs):
    personas: str = Field("builtin:personas", description="persona table (or texts, from_text)")
    persona_column: str | None = Field(None, description="column of personas (or texts)")
    from_text: bool = Field(False, description="the column holds texts: infer a persona from "
                                               "each first (text-to-persona)")
    max_personas: int | None = Field(None, ge=1, description="read at most this many rows")
    templates: list[str] | None = Field(None, description="prompt-writing templates ($persona) "
                                                          "instead of the domain's")
    seed: int = 0


class PersonaPrompts(SeededMethod):
    """One prompt per (persona, template), written by the generator, then answered by it."""

    name = "persona-prompts"
    version = "1"
    Args = PersonaPromptsArgs
    args: PersonaPromptsArgs
    n_means = "outputs"
    new_instructions = True
    dry_run_exact = False  # the answers depend on the prompts (and the prompts on personas)

    @cached_property
    def _table(self) -> Table:
        return load_table(self.args.personas, limit=self.args.max_personas)

    def non_default_args(self) -> dict[str, Any]:
        """Besides the arguments, the persona table's content: an edited file is a new run."""
        return {**super().non_default_args(), "personas_fingerprint": self._table.fingerprint}

    def templates(self, domain: str) -> list[Template]:
        if self.args.templates is not None:
            texts = self.args.templates
        else:
            texts = [t.strip() for t in prompt_template(self.name, domain).template
                     .split("\n===\n") if t.strip()]
        if not texts:
            raise ConfigError(f"{self.name}: no prompt-writing templates")
        for t in texts:
            if "$persona" not in t and "${persona}" not in t:
                raise ConfigError(f"{self.name}: a template has no $persona: {t[:60]!r}")
        return [Template(t) for t in texts]

    async def run(self, ctx: MethodContext) -> Produced:
        domain = self.domain_name(ctx)
        templates = self.templates(domain)
        table = self._table
        column = table.column(self.args.persona_column,
                              TEXT_COLUMNS if self.args.from_text else PERSONA_COLUMNS,
                              "texts" if self.args.from_text else "personas")
        values = table.texts(column)
        ids = [table.row_id(i) for i in range(len(values))]
        out = Produced()
        personas: list[tuple[str, str]] = list(zip(ids, values))
        if self.args.from_text:
            personas = await self._personas_from_text(ids, values, ctx, out)
        pairs = [(p, t) for p in range(len(personas)) for t in range(len(templates))]
        if ctx.n is not None and ctx.n < len(pairs):
            pairs = sorted(random.Random(self.args.seed).sample(pairs, ctx.n))

        first = [GenRequest(
            messages=[Message(role="user", content=templates[t].substitute(
                persona=personas[p][1]))],
            meta={"persona_id": personas[p][0], "persona": personas[p][1], "template": t})
            for p, t in pairs]
        answers = prompt_template("response-generation", domain)
        first_responses = await ctx.generate(first)
        written = [_prompt_from(r) for r in first_responses]
        second = [GenRequest(messages=[Message(role="user",
                                               content=answers.substitute(instruction=text))],
                             meta={"pair": i})
                  for i, (text, _) in enumerate(written) if text is not None]
        answered = dict(zip([q.meta["pair"] for q in second], await ctx.generate(second)))
        checker = get_domain(domain)
        for i, (req, resp) in enumerate(zip(first, first_responses)):
            text, reason = written[i]
            meta: dict[str, Any] = {**req.meta, "key": resp.key}
            answer = ""
            verdict = None
            if text is None:
                reason = f"prompt: {reason}"
            else:
                reply = answered[i]
                meta["answer_key"] = reply.key
                out.extra_responses.append(reply)
                answer = (reply.text or "").strip()
                if answer.lower().startswith("response:"):
                    answer = answer[len("response:"):].strip()
                reason = response_problem(reply)
                if reason is None:
                    verdict = checker.validate(text, answer)
            out.requests.append(req)
            out.responses.append(resp)
            out.instances.append(make_instance(len(out.instances), text or "", answer, verdict,
                                               reason, meta))
        return out

    async def _personas_from_text(self, ids: list[str], texts: list[str], ctx: MethodContext,
                                  out: Produced) -> list[tuple[str, str]]:
        """Text-to-persona: one persona per text (its first ``MAX_TEXT_CHARS`` characters). A
        text whose reply is unusable becomes a rejected row (aligned with its request), so it
        is counted like any rejection."""
        tpl = Template(resources.files("generators.prompts").joinpath(
            self.name, "_text-to-persona.txt").read_text(encoding="utf-8"))
        requests = [GenRequest(messages=[Message(role="user", content=tpl.substitute(
            text=t[:MAX_TEXT_CHARS]))], meta={"text_id": i}) for i, t in zip(ids, texts)]
        personas: list[tuple[str, str]] = []
        for req, resp in zip(requests, await ctx.generate(requests)):
            persona, why = _prompt_from(resp)
            if persona is not None and len(persona) < 10:
                persona, why = None, "persona missing or too short"
            if persona is None:
                out.requests.append(req)
                out.responses.append(resp)
                out.instances.append(Instance(
                    index=len(out.instances), instance_id=f"text-{req.meta['text_id']}",
                    messages=[Message(role="user", content=req.messages[0].content)],
                    valid=False, reject_reason=f"text-to-persona: {why}",
                    meta={"text_id": req.meta["text_id"], "key": resp.key}))
            else:
                out.extra_responses.append(resp)
                personas.append((f"text-{req.meta['text_id']}", persona))
        if not personas:
            raise InputError(f"{self.args.personas}: no persona could be read from the "
                             f"{len(texts)} texts")
        return personas


def _prompt_from(response: GenResponse) -> tuple[str | None, str | None]:
    """The prompt (or persona) a reply writes: after its label ("Prompt:"), cut before a
    solution the model added anyway, quotes stripped; else (None, why)."""
    why = response_problem(response)
    if why is not None:
        return None, why
    text = response.text or ""
    label = _LABEL.search(text)
    if label:
        text = text[label.end():]
    after = _AFTER.search(text)
    if after:
        text = text[:after.start()]
    text = text.strip().strip('"“”').strip()
    if not text:
        return None, "empty prompt"
    return text, None

"""``verified-pairs``: preference pairs whose labels come from a verifier, not a judge.

For domains with a checkable answer (arithmetic and math: the gold final answer; code: the
seed's tests; general: IFEval-style instruction checks), the cheapest exact preference label is
the check itself. This is the data side of Tulu 3's verifiable-rewards stage and of rejection
sampling: answer each seed instruction ``samples`` times (the generator, plus any ``pool``
members), check each answer against its seed with the domain's verifier
(:meth:`generators.domains.base.Domain.correct`), and pair a verified-correct answer (chosen)
with a verified-wrong one (rejected), both drawn at random with a seeded generator. A seed whose
answers are all right or all wrong yields no pair (its instances say so). ``margin`` is 1 (right
minus wrong on a 0/1 scale) and ``weight`` 1: the label is certain.

``verify: false`` is the control that makes a verifier's value measurable: the same answers,
paired at random among answers that *differ* (so the pair count is comparable) with no check of
which side is right. Its pairs carry no margin or weight (nothing was measured), and their
evidence still records, for analysis only, whether each side was right. A suite that ranks the
two as pair sources measures what checking the labels buys (``configs/bench/pairs-quickstart``).

Instances are the completions, one per request (index-aligned): valid only for the chosen side
of a kept pair, every other one rejected with its reason, ``meta["correct"]`` whenever the seed
allows a check.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from datagen_core.errors import ConfigError
from datagen_core.fingerprint import stable_hash
from datagen_core.records import GenRequest, GenResponse, Instance, Message, Pair
from generators.domains.base import get_domain
from generators.methods.base import Generate, MethodContext, Produced, response_problem
from generators.methods.seeded import SeededArgs, SeededMethod, prompt_template, seed_rows
from generators.specs import load_spec


class VerifiedPairsArgs(SeededArgs):
    #: answers per seed from each pool member (the generator is always a member)
    samples: int = Field(4, ge=2, description="answers per seed instruction and pool member")
    #: other generator specs answering every seed (off-policy members)
    pool: list[str] = Field(default_factory=list)
    #: label pairs by the verifier (true) or pair differing answers at random (the control)
    verify: bool = True
    seed: int = 0


@dataclass
class _Answer:
    index: int
    member: str
    request: GenRequest
    response: GenResponse
    text: str
    problem: str | None
    correct: bool | None
    answer: str | None


class VerifiedPairs(SeededMethod):
    """Pairs of verified-right vs verified-wrong answers to seed instructions; see the module
    doc."""

    name = "verified-pairs"
    makes_pairs = True
    version = "1"
    Args = VerifiedPairsArgs
    args: VerifiedPairsArgs

    def __init__(self, **args: Any) -> None:
        super().__init__(**args)
        if len(set(self.args.pool)) != len(self.args.pool):
            raise ConfigError(f"method {self.name}: pool members must be distinct")
        for spec in self.args.pool:
            load_spec(spec)  # a bad spec is one line before any run exists

    def _members(self, ctx: MethodContext) -> list[tuple[str, Generate]]:
        own = ctx.generator or "generator"
        members: list[tuple[str, Generate]] = [(own, ctx.generate)]
        for spec in self.args.pool:
            label = load_spec(spec).label
            if label in (m for m, _ in members):
                raise ConfigError(f"method {self.name}: pool member {spec!r} is {label}, already "
                                  "in the pool (the run's generator is always a member); use "
                                  "samples for more answers from one model")
            if ctx.generate_with is None:
                raise ConfigError(f"{self.name}: this context cannot call other generators")
            members.append((label, ctx.generate_with(spec)))
        return members

    def requests(self, ctx: MethodContext) -> list[GenRequest]:
        tpl = prompt_template("response-generation", self.domain_name(ctx))
        seeds = seed_rows(ctx.rows, self.args.columns, ctx.source, need_response=False)
        return [GenRequest(messages=[Message(role="user",
                                             content=tpl.substitute(instruction=s["instruction"]))],
                           sample=k, meta={"seed": s})
                for s in seeds for k in range(self.args.samples)]

    async def run(self, ctx: MethodContext) -> Produced:
        domain = get_domain(self.domain_name(ctx))
        base = self.requests(ctx)
        out = Produced()
        answers: list[_Answer] = []
        for member, generate in self._members(ctx):
            requests = [q.model_copy(update={"meta": {**q.meta, "generator": member}})
                        for q in base]
            responses = await generate(requests)
            out.requests += requests
            out.responses += responses
            for q, r in zip(requests, responses):
                answers.append(self._check(len(answers), member, q, r, domain))

        by_seed: dict[str, list[_Answer]] = {}
        for a in answers:
            by_seed.setdefault(a.request.meta["seed"]["id"], []).append(a)
        reasons: dict[int, str | None] = {}
        for seed_id, group in by_seed.items():
            pick, why = self._pick(seed_id, group)
            for a in group:
                reasons[a.index] = a.problem or why or (
                    None if pick and a is pick[0] else "rejected side of a pair"
                    if pick and a is pick[1] else "not drawn for the pair")
            if pick is not None:
                out.pairs.append(self._pair(len(out.pairs), pick, group))
        for a in answers:
            seed = a.request.meta["seed"]
            messages = [Message(role="user", content=seed["instruction"])]
            if a.text:
                messages.append(Message(role="assistant", content=a.text))
            reason = reasons[a.index]
            meta: dict[str, Any] = {"seed_id": seed["id"], "key": a.response.key,
                                    "generator": a.member, "sample": a.request.sample}
            if a.correct is not None:
                meta["correct"] = a.correct
            out.instances.append(Instance(
                index=a.index, instance_id=stable_hash([a.member, a.request.sample,
                                                        seed["instruction"], a.text]),
                messages=messages, valid=reason is None, reject_reason=reason, meta=meta))
        return out

    def _check(self, index: int, member: str, q: GenRequest, r: GenResponse,
               domain: Any) -> _Answer:
        seed = q.meta["seed"]
        text = (r.text or "").strip()
        if text.lower().startswith("response:"):
            text = text[len("response:"):].strip()
        problem = response_problem(r)
        correct: bool | None = None
        answer: str | None = None
        if problem is None:
            verdict = domain.validate(seed["instruction"], text, row=seed)
            if not verdict.ok:
                problem = verdict.reason or "invalid"
            else:
                answer = str(verdict.meta.get("answer", text))
                correct, why = domain.correct(text, verdict, seed)
                if correct is None:
                    problem = f"not verifiable: {why}"
        return _Answer(index, member, q, r, text, problem, correct, answer)

    def _pick(self, seed_id: str, group: list[_Answer]
              ) -> tuple[tuple[_Answer, _Answer] | None, str | None]:
        """(chosen, rejected) for one seed, or None and why it yields no pair."""
        usable = [a for a in group if a.problem is None]
        rng = random.Random(stable_hash([self.args.seed, seed_id]))
        if self.args.verify:
            right = [a for a in usable if a.correct]
            wrong = [a for a in usable if a.correct is False]
            if not right:
                return None, "no answer verified correct"
            if not wrong:
                return None, "every answer verified correct: nothing to reject"
            return (rng.choice(right), rng.choice(wrong)), None
        # the control: two answers that differ, sides drawn at random, nothing checked
        if len({a.answer for a in usable}) < 2:
            return None, "fewer than 2 distinct answers"
        first = rng.choice(usable)
        second = rng.choice([a for a in usable if a.answer != first.answer])
        return (first, second), None

    def _pair(self, index: int, pick: tuple[_Answer, _Answer], group: list[_Answer]) -> Pair:
        chosen, rejected = pick
        seed = chosen.request.meta["seed"]
        verified = self.args.verify
        return Pair(
            index=index,
            pair_id=stable_hash([seed["id"], chosen.text, rejected.text]),
            # the bare instruction, as SFT rows and the evaluation tasks pose it (the format
            # line of the generation prompt is an instruction to the generator, not the task)
            prompt=[Message(role="user", content=seed["instruction"])],
            chosen=[Message(role="assistant", content=chosen.text)],
            rejected=[Message(role="assistant", content=rejected.text)],
            attribute="correctness" if verified else "unverified",
            margin=1.0 if verified else None, weight=1.0 if verified else None,
            evidence={"rule": "verified" if verified else "random-differing",
                      "chosen_correct": chosen.correct, "rejected_correct": rejected.correct,
                      "completions": [{"completion": a.index, "generator": a.member,
                                       "sample": a.request.sample, "answer": a.answer,
                                       "correct": a.correct, "problem": a.problem}
                                      for a in group]},
            meta={"row_id": seed["id"], "seed_id": seed["id"],
                  "chosen_generator": chosen.member, "rejected_generator": rejected.member,
                  "chosen_completion": chosen.index, "rejected_completion": rejected.index})

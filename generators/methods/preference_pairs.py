"""``preference-pairs``: general preference pairs from a pool of generators and a rating judge.

The recipe of UltraFeedback (Cui et al. 2023) and Tulu 3's preference pipeline (Lambert et al.
2024, section 5.2): answer each prompt with several models, rate every answer with an LM judge on
fine-grained aspects, and binarise the ratings into chosen/rejected.

1. **Completions.** Each prompt (a prompt column or a chat ``messages`` column, read exactly as
   the ``prompt`` method reads it) is answered by every pool member: the run's own generator
   plus the ``pool`` specs, ``samples`` times each. UltraFeedback answers every prompt 4 times
   (4 models drawn from its pool), so with no pool the generator is sampled 4 times; with a
   pool, once per member. **On-policy** (Tulu 3 mixes completions of the model being trained
   into the pool): a member ``student:<student id>`` is a student trained in the run's
   workspace, served from its saved ``students/<id>/model`` folder by the ``hf`` backend (a
   generator YAML file with ``spec: student:<id>`` sets its sampling). Its
   completions, and the run generator's when that is such a folder, are on-policy; every pair
   says so per side (``meta.chosen_on_policy`` / ``rejected_on_policy``).
2. **Ratings.** The judge (``judge``, default the generator) rates each completion on its own,
   blind to which model wrote it, 1-5 on each aspect. The default aspects are UltraFeedback's four
   (helpfulness, instruction-following, honesty, truthfulness), which Tulu 3 reuses with
   GPT-4o as judge; their rubric is ``prompts/preference-pairs/aspects.txt`` (our own wording),
   ``definitions`` adds or overrides aspects. One request rates all aspects of one completion. A
   reply missing an aspect, or giving a number outside 1-5, leaves the completion unrated (kept
   out of pairs, with the reason) rather than guessed.
   **Reward model** (``scorer: reward-model``): instead of the judge, a sequence-classification
   reward model (``reward_model``: a local folder or hub id; RewardBench / Tulu 3 style, one
   scalar per conversation formatted with its own chat template; :mod:`generators.reward`)
   scores each completion. ``scorer: both``: the judge rates and picks as below, and the reward
   model also scores every completion, stored beside the ratings, so judge-vs-reward-model
   agreement can be measured. Reward scores are deterministic (rounded to 1e-6, below the
   float noise of batching) and recomputed on a re-run (they cost no API call);
   ``reward_batch_size`` and ``reward_device`` are operational, not part of the run id.
3. **Binarisation (Tulu 3's rule).** A completion's score is its mean rating over the aspects
   (with ``scorer: reward-model``, its reward; ``min_margin`` is then in reward units). The
   chosen answer is the highest-scoring one (a seeded draw among equals at the top); the rejected
   one is a seeded random draw among the completions scoring *strictly lower* and at least
   ``min_margin`` lower. A random lower one rather than the worst keeps easy, near-garbage
   rejections from dominating; a prompt whose completions all tie, or where none is far enough
   below, yields no pair (its instances say so). ``margin`` = chosen minus rejected mean;
   ``weight`` = margin / 4, the gap as a share of the 1-5 scale (0-1], for a trainer that
   weights the loss or filters by confidence. With the reward model as scorer, ``margin`` is
   the reward gap d and ``weight`` = 2 * sigmoid(d) - 1: sigmoid(d) is the Bradley-Terry
   probability that chosen beats rejected, the quantity reward models are trained to predict
   (their loss is -log sigmoid(r_chosen - r_rejected), Ouyang et al. 2022; open-instruct's
   reward modeling), so unlike the raw gap it means the same for reward models whose rewards
   have different scales; rescaled so that 0 is a coin flip and 1 certainty, the same reading as
   the judge's margin / 4. The probability itself is stored as ``evidence.reward_p_chosen``.
4. **Pairwise check** (``pairwise: true``): the judge also compares chosen and rejected directly,
   once in each order (the same A/B prompt format and parser as ``attribute-variants``). A pair
   is kept only when both orders prefer the chosen answer; a judge that picks the same position
   both times is *position-inconsistent*, and those pairs are excluded and recorded (reason and
   both verdicts on the prompt's instances).

Instances are the completions, one per completion request (index-aligned): valid only for the
chosen side of a kept pair, every other completion rejected with its reason (``rejected side of a
pair``, ``lower rated``, ``ratings tied``...), and ``meta`` holding its generator and ratings, so
``datagen runs show`` counts what happened. Each pair's ``evidence`` holds every completion's
ratings per aspect and generator, the judge and the pairwise verdicts; with a reward model,
``evidence.reward`` = ``{"model", "chosen", "rejected"}`` and each completion's ``reward``. Its
``meta`` says which generator wrote each side and whether that side is on-policy.

Version 2: pairs' meta gained ``chosen_on_policy`` / ``rejected_on_policy``.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from datagen_core.errors import ConfigError
from datagen_core.fingerprint import stable_hash
from datagen_core.records import (
    GeneratorSpec,
    GenRequest,
    GenResponse,
    Instance,
    Message,
    Pair,
    SamplingParams,
)
from generators.methods.attribute_variants import (
    Verdict,
    judge_outcome,
    parse_verdict,
    render_context,
    template,
)
from generators.methods.base import (
    Generate,
    Method,
    MethodArgs,
    MethodContext,
    Produced,
    response_problem,
)
from generators.methods.prompt import PromptMethod
from generators.specs import STUDENT_PROVIDER, load_spec, student_generator

PROMPT_DIR = "preference-pairs"
DEFAULT_ASPECTS = ("helpfulness", "instruction-following", "honesty", "truthfulness")
#: the span of the 1-5 scale: a margin divided by it is the pair's weight
SCALE_SPAN = 4.0


def builtin_aspects() -> dict[str, str]:
    """Aspect name -> rubric text, from ``aspects.txt`` (``## name`` then its definition)."""
    path = resources.files("generators.prompts").joinpath(PROMPT_DIR, "aspects.txt")
    out: dict[str, str] = {}
    for block in path.read_text(encoding="utf-8").split("## ")[1:]:
        name, _, text = block.partition("\n")
        out[name.strip()] = text.strip()
    return out


def _aspect_re(name: str) -> re.Pattern[str]:
    words = r"[\s_\-]*".join(re.escape(w) for w in re.split(r"[\s_\-]+", name) if w)
    return re.compile(rf"^[\s>*#_\-]*{words}[\s*_]*(?:rating|score)?[\s*_]*[:=\-]?[\s*_]*"
                      r"(\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*5)?", re.I | re.M)


def parse_ratings(text: str, aspects: list[str]) -> tuple[dict[str, float], str | None]:
    """``Helpfulness: 4`` lines -> {aspect: rating}, and why the reply is unusable (else None).

    Case, markdown emphasis, ``4/5`` and ``4 out of 5`` are tolerated; the first line naming an
    aspect wins. A rating outside 1-5 or a missing aspect makes the whole reply unusable: a mean
    over some aspects would not be comparable with a mean over all of them.
    """
    found: dict[str, float] = {}
    for a in aspects:
        m = _aspect_re(a).search(text)
        if m:
            found[a] = float(m.group(1))
    missing = [a for a in aspects if a not in found]
    if missing:
        return found, f"judge gave no rating for: {', '.join(missing)}"
    bad = [a for a in aspects if not 1 <= found[a] <= 5]
    if bad:
        return found, f"judge rating outside 1-5 for: {', '.join(bad)}"
    return found, None


class PreferencePairsArgs(MethodArgs):
    column: str | None = None
    system: str | None = None
    #: other generator specs answering every prompt; the run's generator is always a member
    pool: list[str] = Field(default_factory=list)
    #: completions per pool member; default 4 with no pool (UltraFeedback's 4 per prompt), else 1
    samples: int | None = Field(None, ge=1)
    #: rating judge spec; default the generator itself
    judge: str | None = None
    #: sampling for judge requests (replaces the judge spec's), e.g. {"temperature": 0}
    judge_sampling: SamplingParams | None = None
    aspects: list[str] = Field(default_factory=lambda: list(DEFAULT_ASPECTS), min_length=1)
    #: rubric text for extra aspects, or replacing a built-in one's
    definitions: dict[str, str] = Field(default_factory=dict)
    #: the smallest mean-rating gap a pair may have (0: any strictly lower completion)
    min_margin: float = Field(0.0, ge=0)
    #: also judge chosen vs rejected in both orders; keep only order-consistent agreement
    pairwise: bool = False
    seed: int = 0
    #: who scores completions: the judge's ratings, a reward model, or both (the judge's
    #: ratings pick the pair, the reward model's scores are stored beside them)
    scorer: Literal["judge", "reward-model", "both"] = "judge"
    #: sequence-classification reward model: a local folder or hub id
    reward_model: str | None = None
    #: tokens per scored conversation (cut from the left, keeping the response's end)
    reward_max_length: int = Field(2048, ge=8)
    #: operational (not in the run id): conversations per forward pass, and the torch device
    reward_batch_size: int = Field(8, ge=1)
    reward_device: str | None = None


@dataclass
class _Completion:
    index: int
    row: int
    member: str
    request: GenRequest
    response: GenResponse
    problem: str | None = None
    ratings: dict[str, float] = field(default_factory=dict)
    judge_text: str | None = None
    reward: float | None = None
    on_policy: bool = False

    @property
    def score(self) -> float | None:
        if self.problem is not None or not self.ratings:
            return None  # rounded: equal means must compare equal, whatever the float noise
        return round(sum(self.ratings.values()) / len(self.ratings), 9)

    def summary(self, reward: bool) -> dict[str, Any]:
        out = {"completion": self.index, "generator": self.member, "sample":
               self.request.sample, "ratings": self.ratings, "mean": self.score,
               "problem": self.problem}
        return {**out, "reward": self.reward} if reward else out


class PreferencePairs(Method):
    """Pool completions, aspect ratings by a judge, Tulu 3 binarisation; see the module doc."""

    name = "preference-pairs"
    makes_pairs = True
    version = "2"
    Args = PreferencePairsArgs
    args: PreferencePairsArgs
    dry_run_exact = False

    def __init__(self, **args: Any) -> None:
        super().__init__(**args)
        a = self.args
        rubric = {**builtin_aspects(), **a.definitions}
        unknown = [x for x in a.aspects if x not in rubric]
        if unknown:
            raise ConfigError(f"method {self.name}: unknown aspect(s) {', '.join(unknown)}; "
                              f"built-in: {', '.join(builtin_aspects())}, or define them with "
                              "definitions: {name: rubric}")
        if len(set(a.aspects)) != len(a.aspects) or len(set(a.pool)) != len(a.pool):
            raise ConfigError(f"method {self.name}: aspects and pool members must be distinct")
        self.rubric = {x: rubric[x] for x in a.aspects}
        if a.scorer != "judge" and not a.reward_model:
            raise ConfigError(f"method {self.name}: scorer {a.scorer} needs reward_model: a "
                              "local folder or hub id of a sequence-classification reward model")
        if a.scorer == "judge" and a.reward_model:
            raise ConfigError(f"method {self.name}: reward_model is set but scorer is judge; "
                              "use scorer: reward-model (it picks the pairs) or both (it is "
                              "stored beside the judge's ratings)")
        for spec in [*a.pool, *([a.judge] if a.judge else [])]:
            load_spec(spec)  # a bad spec is one line before any run exists

    def non_default_args(self) -> dict[str, Any]:
        """The run id's arguments: batch size and device change no score, so they are left out
        (a re-run on a GPU is the same run)."""
        return {k: v for k, v in super().non_default_args().items()
                if k not in ("reward_batch_size", "reward_device")}

    @property
    def judge_rates(self) -> bool:
        return self.args.scorer != "reward-model"

    @property
    def uses_reward(self) -> bool:
        return self.args.scorer != "judge"

    def _other(self, ctx: MethodContext, spec: GeneratorSpec | str) -> Generate:
        if ctx.generate_with is None:
            raise ConfigError(f"{self.name}: this context cannot call other generators")
        return ctx.generate_with(spec)

    def _members(self, ctx: MethodContext) -> list[tuple[str, Generate, bool]]:
        """(label, generate, on-policy) per pool member, the run's generator first. A member
        that is the generator again would only repeat its cached answers (same request keys):
        an error. A ``student:<id>`` member (a spec string or a generator file naming one)
        keeps that as its label (its model is a folder path); the run's generator is on-policy
        when it serves a student's folder."""
        own = ctx.generator or "generator"
        members: list[tuple[str, Generate, bool]] = [
            (own, ctx.generate, _serves_student(own, ctx.workspace))]
        seen = {own}
        for spec in self.args.pool:
            given = load_spec(spec)
            resolved = student_generator(given, ctx.workspace)
            student = resolved is not given
            label = f"{STUDENT_PROVIDER}:{given.model}" if student else resolved.label
            if label in seen or resolved.label in seen:
                raise ConfigError(f"method {self.name}: pool member {spec!r} is {label}, already "
                                  "in the pool (the run's generator is always a member); use "
                                  "samples for more answers from one model")
            seen |= {label, resolved.label}
            members.append((label, self._other(ctx, resolved if student else spec), student))
        return members

    async def run(self, ctx: MethodContext) -> Produced:
        a = self.args
        samples = a.samples or (1 if a.pool else 4)
        members = self._members(ctx)
        judge = self._other(ctx, a.judge) if a.judge else ctx.generate
        judge_name = load_spec(a.judge).label if a.judge else members[0][0]

        base = PromptMethod(column=a.column, system=a.system, samples=samples).requests(ctx)
        out = Produced()
        comps: list[_Completion] = []
        for member, generate, on_policy in members:  # one at a time: each draws a progress bar
            requests = [q.model_copy(update={"meta": {**q.meta, "generator": member}})
                        for q in base]
            responses = await generate(requests)
            out.requests += requests
            out.responses += responses
            comps += [_Completion(len(comps) + i, q.meta["row"], member, q, r,
                                  response_problem(r), on_policy=on_policy)
                      for i, (q, r) in enumerate(zip(requests, responses))]

        answered = [c for c in comps if c.problem is None]
        if self.uses_reward and answered:
            rewards = await asyncio.to_thread(self._rewards, answered)
            for c, value in zip(answered, rewards, strict=True):
                c.reward = value
        if self.judge_rates:
            jrequests = [self._rate_request(c) for c in answered]
            jresponses = await judge(jrequests) if jrequests else []
            out.extra_responses += jresponses
            for c, r in zip(answered, jresponses):
                c.judge_text = r.text
                problem = response_problem(r)
                c.ratings, c.problem = ({}, f"judge {problem}") if problem else \
                    parse_ratings(r.text or "", a.aspects)

        by_row: dict[int, list[_Completion]] = {}
        for c in comps:
            by_row.setdefault(c.row, []).append(c)
        picks = {row: self._pick(row, cs) for row, cs in by_row.items()}
        verdicts = await self._pairwise(judge, picks, out) if a.pairwise else {}

        reasons: dict[int, str | None] = {}
        for row, cs in by_row.items():
            pick, why = picks[row]
            outcome = verdicts.get(row, ("kept", None, None))
            if pick is not None and outcome[0] != "kept":
                why = f"pairwise check failed: {outcome[0]}"
            for c in cs:
                reasons[c.index] = c.problem or why or (
                    None if pick and c is pick[0] else "rejected side of a pair"
                    if pick and c is pick[1] else "lower rated, not drawn")
            if pick is not None and why is None:
                out.pairs.append(self._pair(len(out.pairs), cs, pick, judge_name, outcome))
        for c in comps:
            reason = reasons[c.index]
            messages = [m for m in c.request.messages if m.role != "system"]
            if c.response.text is not None:
                messages.append(Message(role="assistant", content=c.response.text))
            out.instances.append(Instance(
                index=c.index, instance_id=stable_hash([c.member, c.request.sample,
                                                        [m.model_dump() for m in messages]]),
                messages=messages, valid=reason is None, reject_reason=reason,
                meta={**c.request.meta, "sample": c.request.sample, "key": c.response.key,
                      "ratings": c.ratings, "mean": c.score, "judge_reply": c.judge_text,
                      "pairwise": _verdict_meta(verdicts.get(c.row)),
                      **({"reward": c.reward} if self.uses_reward else {})}))
        return out

    def _rewards(self, cs: list[_Completion]) -> list[float]:
        """The reward model's score of each completion's conversation (prompt + response)."""
        from generators.reward import load_reward_model

        a = self.args
        assert a.reward_model is not None  # checked in __init__
        rm = load_reward_model(a.reward_model, device=a.reward_device)
        conversations = [[*({"role": m.role, "content": m.content} for m in c.request.messages),
                          {"role": "assistant", "content": c.response.text or ""}] for c in cs]
        # Rounded to 1e-6: padding and batch shapes move float32 results by ~1e-8, so another
        # batch size or a re-run gives the same numbers (and the same pairs) in all but
        # vanishingly rare cases, while real reward gaps are orders of magnitude larger.
        return [round(x, 6) for x in rm.score(conversations, max_length=a.reward_max_length,
                                              batch_size=a.reward_batch_size)]

    def _key(self, c: _Completion) -> float | None:
        """The number binarisation compares: the mean rating, or the reward."""
        if self.args.scorer == "reward-model":
            return c.reward if c.problem is None else None
        return c.score

    def _rate_request(self, c: _Completion) -> GenRequest:
        text = template("rate", PROMPT_DIR).substitute(
            prompt=_conversation(c.request.messages), response=c.response.text or "",
            rubric="\n\n".join(f"{n}: {d}" for n, d in self.rubric.items()),
            format="\n".join(f"{n}: <1-5>" for n in self.rubric))
        return GenRequest(messages=[Message(role="user", content=text)],
                          sampling=self.args.judge_sampling,
                          meta={"row": c.row, "completion": c.index, "generator": c.member})

    def _pick(self, row: int, cs: list[_Completion]
              ) -> tuple[tuple[_Completion, _Completion] | None, str | None]:
        """(chosen, rejected) by Tulu 3's rule, or None and why the prompt yields no pair."""
        scores = {c.index: s for c in cs if (s := self._key(c)) is not None}
        scored = [c for c in cs if c.index in scores]
        if len(scored) < 2:
            return None, f"fewer than 2 rated completions for the prompt ({len(scored)})"
        rng = random.Random(stable_hash([self.args.seed, row]))
        best = max(scores.values())
        chosen = rng.choice([c for c in scored if scores[c.index] == best])
        lower = [c for c in scored if scores[c.index] < best]
        if not lower:
            return None, "ratings tied: no completion rated below the best"
        far = [c for c in lower if best - scores[c.index] >= self.args.min_margin]
        if not far:
            return None, f"no completion at least min_margin {self.args.min_margin} below the best"
        return (chosen, rng.choice(far)), None

    async def _pairwise(self, judge: Generate, picks: dict[int, Any], out: Produced
                        ) -> dict[int, tuple[str, Verdict, Verdict]]:
        """Chosen vs rejected in both orders; row -> (outcome, A/B verdict, B/A verdict)."""
        tpl = template("pairwise", PROMPT_DIR)
        rows = [(row, pick) for row, (pick, _) in picks.items() if pick is not None]
        requests = []
        for row, (ch, rj) in rows:
            for order, (x, y) in (("ab", (ch, rj)), ("ba", (rj, ch))):
                text = tpl.substitute(prompt=_conversation(ch.request.messages),
                                      a=x.response.text, b=y.response.text,
                                      aspects=", ".join(self.rubric))
                requests.append(GenRequest(messages=[Message(role="user", content=text)],
                                           sampling=self.args.judge_sampling,
                                           meta={"row": row, "order": order}))
        responses = await judge(requests) if requests else []
        out.extra_responses += responses
        got = {(q.meta["row"], q.meta["order"]): parse_verdict(r.text or "") if r.ok
               else Verdict(None) for q, r in zip(requests, responses)}
        result = {}
        for row, _ in rows:
            ab, ba = got[(row, "ab")], got[(row, "ba")]
            outcome = judge_outcome(ab, ba)
            if outcome != "kept" and ab.better in ("A", "B") and ab.better == ba.better:
                outcome = f"position-inconsistent (both orders picked {ab.better})"
            result[row] = (outcome, ab, ba)
        return result

    def _pair(self, index: int, cs: list[_Completion], pick: tuple[_Completion, _Completion],
              judge: str, outcome: tuple[str, Verdict | None, Verdict | None]) -> Pair:
        chosen, rejected = pick
        hi, lo = self._key(chosen), self._key(rejected)
        assert hi is not None and lo is not None  # for mypy
        gap = hi - lo
        by_reward = self.args.scorer == "reward-model"
        evidence: dict[str, Any] = {
            "judge": judge if self.judge_rates or self.args.pairwise else None,
            "aspects": list(self.rubric) if self.judge_rates else [],
            "rule": "reward-best-vs-random-lower" if by_reward else "tulu3-mean-rating",
            "min_margin": self.args.min_margin,
            "chosen_ratings": chosen.ratings, "rejected_ratings": rejected.ratings,
            "completions": [c.summary(self.uses_reward) for c in cs]}
        if self.uses_reward and chosen.reward is not None and rejected.reward is not None:
            evidence["reward"] = {"model": self.args.reward_model, "chosen": chosen.reward,
                                  "rejected": rejected.reward}
            evidence["reward_p_chosen"] = _sigmoid(chosen.reward - rejected.reward)
        if outcome[1] is not None:
            evidence["pairwise"] = _verdict_meta(outcome)
        weight = 2 * _sigmoid(gap) - 1 if by_reward else gap / SCALE_SPAN
        return Pair(
            index=index,
            pair_id=stable_hash([chosen.request.meta["row_id"], chosen.response.text,
                                 rejected.response.text]),
            prompt=[m for m in chosen.request.messages if m.role != "system"],
            chosen=[Message(role="assistant", content=chosen.response.text or "")],
            rejected=[Message(role="assistant", content=rejected.response.text or "")],
            attribute="overall", margin=gap, weight=weight, evidence=evidence,
            meta={"row_id": chosen.request.meta["row_id"], "chosen_generator": chosen.member,
                  "rejected_generator": rejected.member, "chosen_completion": chosen.index,
                  "rejected_completion": rejected.index, "chosen_on_policy": chosen.on_policy,
                  "rejected_on_policy": rejected.on_policy})


def _sigmoid(x: float) -> float:
    """The logistic function, without overflow for large gaps."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _serves_student(label: str, workspace: Path | None) -> bool:
    """Whether a generator label (``hf:/path``) serves a student folder of ``workspace``."""
    if workspace is None or ":" not in label:
        return False
    path = Path(label.partition(":")[2].partition("@")[0])
    try:
        return path.is_absolute() and path.resolve().is_relative_to(
            (workspace / "students").resolve())
    except OSError:
        return False


def _conversation(messages: list[Message]) -> str:
    turns = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
    return render_context(turns) if len(turns) > 1 else (turns[0]["content"] if turns else "")


def _verdict_meta(outcome: tuple[str, Verdict | None, Verdict | None] | None
                  ) -> dict[str, Any] | None:
    if outcome is None or outcome[1] is None or outcome[2] is None:
        return None
    return {"outcome": outcome[0], "ab": outcome[1].as_dict(), "ba": outcome[2].as_dict()}

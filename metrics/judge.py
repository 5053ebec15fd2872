"""LM-judge metrics: instruction difficulty and response quality on a 1-5 rubric per domain.

The judge is any generator spec (``openai:gpt-4o-mini``, ``hf:smollm2``, ``fake`` in tests) and
is called through the :class:`~generators.engine.Engine`, so its answers are logged under
``runs/<run_id>/judge-<hash>.jsonl``, a re-run pays for nothing already answered, and a killed
run resumes. The answers are also stored in the ``requests`` table under the id
``<run_id>/judge-<hash>``: the engine's cross-run cache then serves them to other runs, which
matters because runs built from the same seed set share their instructions (difficulty is judged
once per instruction, not once per run). A judge's spending is thus never mixed into the run's
own generation cost.

Difficulty rates the instruction alone; quality rates the response given the instruction (as in
AgoraBench). A reply whose score cannot be read, or lies outside 1-5, is a missing value with its
reason, never a guess. Unless the spec sets its own sampling, the judge decodes greedily.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from typing import Any

from pydantic import Field, field_validator

from datagen_core.fingerprint import stable_hash
from datagen_core.records import GeneratorSpec, GenRequest, GenResponse, Message, SamplingParams
from metrics.intrinsic import Metric, MetricConfig, MetricContext, MetricResult, mean_of

ASPECTS = ("difficulty", "quality")
SYSTEM = "You are a careful, strict evaluator. You follow the rating scale exactly."
JUDGE_SAMPLING = SamplingParams(temperature=0.0, max_tokens=512)

_NUM = r"(\d+(?:\.\d+)?)"
_LABELLED = re.compile(
    r"(?:score|rating|grade)\s*(?:is|of|=|:|-)?\s*[*_\[(\"'`]*\s*" + _NUM + r"(?:\s*/\s*5)?",
    re.IGNORECASE)
_BRACKETS = re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]")
_OUT_OF = re.compile(_NUM + r"\s*(?:/|out of)\s*5\b", re.IGNORECASE)
_BARE = re.compile(r"^\W*" + _NUM + r"\W*$")


def parse_score(text: str | None, low: float = 1, high: float = 5
                ) -> tuple[float | None, str | None]:
    """(score, None) from a judge's reply, or (None, why): its last ``Score: N`` (also
    ``Rating``/``Grade``, markdown around the number, ``N/5``), else ``[[N]]``, else ``N out of
    5``, else a reply that is just the number."""
    if text is None or not text.strip():
        return None, "empty reply"
    for pattern in (_LABELLED, _BRACKETS, _OUT_OF):
        hits = pattern.findall(text)
        if hits:
            return _in_range(float(hits[-1]), low, high)
    bare = _BARE.match(text.strip())
    if bare:
        return _in_range(float(bare[1]), low, high)
    return None, "no score found"


def _in_range(v: float, low: float, high: float) -> tuple[float | None, str | None]:
    if low <= v <= high:
        return v, None
    return None, f"score {v:g} outside {low:g}-{high:g}"


class JudgeConfig(MetricConfig):
    """``judge``: a spec string or :class:`GeneratorSpec`; ``domain``: the rubric (default: the
    run's domain, else general); ``max_items``: judge a seeded sample of at most this many."""

    judge: GeneratorSpec
    domain: str | None = None
    max_items: int | None = Field(None, ge=1)
    seed: int = 0

    @field_validator("judge", mode="before")
    @classmethod
    def _spec(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = GeneratorSpec.parse(v)
        if isinstance(v, GeneratorSpec) and "sampling" not in v.model_fields_set:
            v = v.model_copy(update={"sampling": JUDGE_SAMPLING})
        return v

    def semantic(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"judge"})
        out["judge"] = self.judge.semantic()  # no limits, keys or prices: not what it answers
        return out


class JudgeMetric(Metric):
    name = "judge"
    version = "1"
    outputs = ASPECTS
    Config = JudgeConfig
    config: JudgeConfig

    def compute(self, ctx: MetricContext) -> MetricResult:
        from generators.engine import Engine
        from metrics import prompts

        cfg = self.config
        data = ctx.data()
        domain = cfg.domain or data.domain or "general"
        templates = {a: prompts.load(a, domain) for a in ASPECTS}
        chosen = list(range(len(data)))
        if cfg.max_items is not None and len(chosen) > cfg.max_items:
            chosen = sorted(random.Random(cfg.seed).sample(chosen, cfg.max_items))
        requests: list[GenRequest] = []
        for i in chosen:
            fields = {"instruction": data.instructions[i], "response": data.responses[i]}
            for aspect in ASPECTS:
                requests.append(GenRequest(
                    messages=[Message(role="system", content=SYSTEM),
                              Message(role="user",
                                      content=templates[aspect].safe_substitute(fields))],
                    meta={"idx": data.idx[i], "aspect": aspect}))

        spec = cfg.judge
        tag = stable_hash(spec.semantic(), 12)
        engine = Engine(spec, backend=ctx.backends.get(spec.label),
                        log_path=ctx.workspace.run_dir(ctx.run_id) / f"judge-{tag}.jsonl",
                        cache=ctx.store, progress=ctx.progress, description=f"judge {spec.label}")
        responses = asyncio.run(_generate(engine, requests)) if requests else []
        ctx.store.ingest_responses(f"{ctx.run_id}/judge-{tag}", responses)

        items: dict[str, list[tuple[int, float | None, str | None]]] = {a: [] for a in ASPECTS}
        reasons: Counter[str] = Counter()
        for req, resp in zip(requests, responses):
            score, note = _score(resp)
            if note:
                reasons[note] += 1
            items[req.meta["aspect"]].append((req.meta["idx"], score, note))
        values = {a: mean_of([v for _, v, _ in items[a]]) for a in ASPECTS}
        return MetricResult(values=values, items=items, details={
            "domain": domain, "judged": len(chosen), "missing": dict(reasons),
            "judge_cost_usd": sum(r.cost_usd for r in responses),
            "log": str(ctx.workspace.run_dir(ctx.run_id) / f"judge-{tag}.jsonl"),
        })


def _score(resp: GenResponse) -> tuple[float | None, str | None]:
    if not resp.ok:
        why = resp.error.type if resp.error else "no text"
        return None, f"judge failed: {why}"
    return parse_score(resp.text)


async def _generate(engine: Any, requests: list[GenRequest]) -> list[GenResponse]:
    async with engine:
        return list(await engine.generate(requests))

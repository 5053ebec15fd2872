"""``multi-attribute-edit`` (MACS-style): move a text to target attribute values, measured for real.

Attributes are measured by evaluators (:mod:`generators.evaluators`: VADER sentiment,
Flesch-Kincaid grade, length, plug-ins), never by an LM's opinion. A run has two phases, each
switchable:

**Paraphrases -> edit pairs** (``k > 0``). Each source text gets ``k`` paraphrases, each asked
in a different style (shorter, more formal, more positive, ...; ``styles.txt``) so the group
spreads over the attribute space. The source and its distinct paraphrases form a group; every
ordered pair (a, b) in a group is an edit example: *a, its values, b's values as targets -> b*.
Most such pairs are small changes, so they are sampled **balanced over the size of the change**:
the normalised distance (mean over attributes of |a - b| / range) is cut into ``bins``
equal-width bins up to the largest distance seen, each non-empty bin gets an equal share of the
budget (``edit_pairs_per_source`` x groups; a bin with too few pairs passes its share on), and
each pair's ``meta.weight`` = (pairs taken / bins used) / pairs taken from its bin, so every bin
weighs the same in training even when one had fewer pairs. They are SFT instances
(``kind: edit-pair``) whose user message is the same edit instruction used at inference.

**Iterative editing** (``rounds > 0``), also usable alone through :func:`iterative_edit`. Each
item is a text and targets (the row's ``targets`` column, or else the values of a random member
of its paraphrase group: a target some rewrite is known to reach). Per round, the editor LM
(``editor`` spec, default the generator) gets the current best text with its values and the
targets and returns ``candidates`` rewrites; each is scored, and the best by the
constraint-satisfaction reward replaces the current text only if it is strictly better:

    reward = - sum_a max(0, |value_a - target_a| - tolerance_a) / (high_a - low_a)

(0 = every attribute within tolerance; higher is better). An item stops when its reward is 0 or
after ``rounds`` rounds. Outputs: one instance per item (``kind: edit-item``: source ->
best text, valid when an edit improved on the source) with ``meta.weight = exp(reward_beta *
reward)`` for reward-weighted training; per item and round a preference pair (round's best
candidate over its worst, ``margin`` = reward difference, ``weight`` = margin / number of
attributes, capped at 1: the gap as a share of the reward's span, where each attribute's
normalised miss counts at most about 1, so a DPO recipe's ``min_pair_weight`` reads the same as
for other pair methods); and the metric
(:func:`summarize`): share of items with every attribute within tolerance and the mean
normalised distance to the targets.

Failed generations (paraphrases, editor candidates) are rejected instances with their reason.
Instances are therefore not index-aligned with requests; paraphrase requests are
``Produced.requests``/``responses`` and editor calls go to ``extra_responses``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import Field

from datagen_core.errors import ConfigError, InputError
from datagen_core.fingerprint import stable_hash
from datagen_core.records import GenRequest, GenResponse, Instance, Message, Pair, SamplingParams
from generators.evaluators import (
    DEFAULT_EVALUATORS,
    Evaluator,
    EvaluatorSettings,
    all_satisfied,
    make_evaluators,
    mean_distance,
    reward,
    score_all,
)
from generators.methods.attribute_variants import template
from generators.methods.base import (
    Generate,
    Method,
    MethodArgs,
    MethodContext,
    Produced,
    response_problem,
)

PROMPT_DIR = "multi-attribute-edit"
_TEXT_GUESSES = ("text", "content", "sentence", "review", "prompt", "instruction")
_LABELS = ("rewritten text:", "rewritten:", "paraphrase:", "text:", "output:")


def edit_prompt(evaluators: list[Evaluator], text: str, values: Mapping[str, float],
                targets: Mapping[str, float]) -> str:
    """The edit instruction: the text, each attribute's value and target. Used verbatim for
    edit-pair SFT rows and at inference, so a model trained on one is prompted the same way."""
    lines = [f"- {ev.name}: {ev.fmt(values[ev.name])} -> {ev.fmt(targets[ev.name])} "
             f"(within {ev.fmt(ev.tolerance)}; {ev.description})" for ev in evaluators]
    return template("edit", PROMPT_DIR).substitute(text=text, attributes="\n".join(lines))


def clean_output(text: str) -> str:
    """An LM rewrite without a leading label or wrapping quotes."""
    out = text.strip()
    if out.lower().startswith(_LABELS):
        out = out.split(":", 1)[1].strip()
    if len(out) > 1 and out[0] == out[-1] and out[0] in "\"'":
        out = out[1:-1].strip()
    return out


# -- iterative editing ---------------------------------------------------------------------------
@dataclass
class EditItem:
    item_id: str
    text: str
    targets: dict[str, float]


@dataclass
class Candidate:
    text: str
    values: dict[str, float]
    reward: float
    round: int  # -1: the input text itself
    prompt: str = ""
    key: str | None = None


@dataclass
class EditTrace:
    """One item's editing history: the start, each round's scored candidates, the best."""

    item: EditItem
    start: Candidate
    best: Candidate
    rounds: list[list[Candidate]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    failures: list[tuple[GenRequest, GenResponse, str]] = field(default_factory=list)
    satisfied: bool = False


@dataclass
class EditOutcome:
    traces: list[EditTrace]
    requests: list[GenRequest]
    responses: list[GenResponse]


async def iterative_edit(items: list[EditItem], evaluators: list[Evaluator], generate: Generate,
                         *, candidates: int = 4, rounds: int = 3,
                         sampling: SamplingParams | None = None) -> EditOutcome:
    """Edit every item toward its targets: ``candidates`` rewrites per round, keep the best by
    reward, stop at reward 0 or after ``rounds`` rounds. One ``generate`` call per round for all
    unfinished items (so local backends batch them). Each round's samples get their own
    ``sample`` numbers, so a resumed run replays the same rounds from the cache."""
    traces = []
    for it in items:
        values = score_all(evaluators, it.text)
        start = Candidate(it.text, values, reward(evaluators, values, it.targets), -1)
        traces.append(EditTrace(it, start, start,
                                satisfied=all_satisfied(evaluators, values, it.targets)))
    all_requests: list[GenRequest] = []
    all_responses: list[GenResponse] = []
    for r in range(rounds):
        active = [t for t in traces if not t.satisfied]
        if not active:
            break
        batch: list[tuple[EditTrace, GenRequest]] = []
        for t in active:
            prompt = edit_prompt(evaluators, t.best.text, t.best.values, t.item.targets)
            t.prompts.append(prompt)
            t.rounds.append([])
            for j in range(candidates):
                batch.append((t, GenRequest(
                    messages=[Message(role="user", content=prompt)], sampling=sampling,
                    sample=r * candidates + j,
                    meta={"item": t.item.item_id, "round": r, "candidate": j,
                          "targets": t.item.targets})))
        responses = await generate([q for _, q in batch])
        all_requests += [q for _, q in batch]
        all_responses += responses
        for (t, q), resp in zip(batch, responses):
            problem = response_problem(resp)
            text = "" if problem else clean_output(resp.text or "")
            if not problem and not text:
                problem = "empty after cleaning"
            if problem:
                t.failures.append((q, resp, problem))
                continue
            values = score_all(evaluators, text)
            t.rounds[-1].append(Candidate(text, values, reward(evaluators, values, t.item.targets),
                                          r, q.messages[0].content, resp.key))
        for t in active:
            if t.rounds[-1]:
                top = max(t.rounds[-1], key=lambda c: c.reward)
                if top.reward > t.best.reward:
                    t.best = top
            t.satisfied = all_satisfied(evaluators, t.best.values, t.item.targets)
    return EditOutcome(traces, all_requests, all_responses)


@dataclass
class EditSummary:
    """The editing metric: share of items within tolerance on every attribute, mean distance."""

    n: int
    satisfied: int
    satisfied_share: float
    mean_distance: float
    mean_reward: float


def summarize(traces: list[EditTrace], evaluators: list[Evaluator]) -> EditSummary:
    """Over items' final texts; distance = mean over attributes of |value - target| / range."""
    n = len(traces)
    if n == 0:
        return EditSummary(0, 0, 0.0, 0.0, 0.0)
    ok = sum(t.satisfied for t in traces)
    dist = [mean_distance(evaluators, t.best.values, t.item.targets) for t in traces]
    return EditSummary(n, ok, ok / n, sum(dist) / n, sum(t.best.reward for t in traces) / n)


def summarize_instances(instances: list[Instance]) -> EditSummary:
    """The same metric from a run's stored ``edit-item`` instances (valid or not)."""
    items = [x.meta for x in instances if x.meta.get("kind") == "edit-item"]
    n = len(items)
    if n == 0:
        return EditSummary(0, 0, 0.0, 0.0, 0.0)
    ok = sum(bool(m["satisfied"]) for m in items)
    return EditSummary(n, ok, ok / n, sum(m["distance"] for m in items) / n,
                       sum(m["reward"] for m in items) / n)


# -- edit pairs from paraphrases -----------------------------------------------------------------
@dataclass
class Member:
    text: str
    values: dict[str, float]
    origin: str  # "source" or "paraphrase:<j>"


@dataclass
class EditPairChoice:
    group: int
    src: int
    dst: int
    distance: float
    bin: int
    weight: float = 1.0


def sample_edit_pairs(groups: list[list[Member]], evaluators: list[Evaluator], budget: int,
                      bins: int, rng: random.Random) -> list[EditPairChoice]:
    """Ordered pairs within groups, sampled balanced over distance bins; see the module doc."""
    pool = [EditPairChoice(g, i, j, mean_distance(evaluators, a.values, b.values), 0)
            for g, members in enumerate(groups)
            for i, a in enumerate(members) for j, b in enumerate(members) if i != j]
    if not pool or budget <= 0:
        return []
    dmax = max(p.distance for p in pool)
    by_bin: dict[int, list[EditPairChoice]] = {}
    for p in pool:
        p.bin = 0 if dmax == 0 else min(int(p.distance / dmax * bins), bins - 1)
        by_bin.setdefault(p.bin, []).append(p)
    for b in by_bin:
        rng.shuffle(by_bin[b])
    take = dict.fromkeys(by_bin, 0)
    left = min(budget, len(pool))
    while left > 0:
        open_bins = [b for b in sorted(by_bin) if take[b] < len(by_bin[b])]
        share = max(1, left // len(open_bins))
        for b in open_bins:
            add = min(share, len(by_bin[b]) - take[b], left)
            take[b] += add
            left -= add
            if left == 0:
                break
    used = [b for b in sorted(by_bin) if take[b]]
    chosen = [p for b in used for p in by_bin[b][:take[b]]]
    for p in chosen:
        p.weight = (len(chosen) / len(used)) / take[p.bin]
    return chosen


# -- the method ----------------------------------------------------------------------------------
class MultiAttributeEditArgs(MethodArgs):
    #: column map: text (the source), targets (optional {evaluator: value} per row)
    columns: dict[str, str] | None = None
    #: evaluator names with optional range/tolerance overrides, e.g. {length: {high: 200}}
    evaluators: dict[str, EvaluatorSettings | None] = Field(
        default_factory=lambda: dict.fromkeys(DEFAULT_EVALUATORS))
    #: paraphrases per source (0: no paraphrases, no edit pairs; rows then need targets)
    k: int = Field(4, ge=0, le=64)
    bins: int = Field(4, ge=1, le=50)
    edit_pairs_per_source: int = Field(6, ge=0)
    #: editing rounds at most (0: no iterative editing)
    rounds: int = Field(3, ge=0, le=50)
    candidates: int = Field(4, ge=1, le=64)
    #: editor spec (provider:model); default: the generator itself
    editor: str | None = None
    #: sampling for editor requests, replacing the editor spec's whole sampling; default: its own
    editor_sampling: SamplingParams | None = None
    reward_beta: float = Field(5.0, ge=0)
    seed: int = 0


class MultiAttributeEdit(Method):
    """MACS-style multi-attribute editing; see the module docstring."""

    dry_run_exact = False
    name = "multi-attribute-edit"
    makes_pairs = True
    version = "2"  # 2: pairs carry a weight
    Args = MultiAttributeEditArgs
    args: MultiAttributeEditArgs
    default_source = "builtin:macs"

    async def run(self, ctx: MethodContext) -> Produced:
        a = self.args
        if a.k == 0 and a.rounds == 0:
            raise ConfigError(f"{self.name}: k=0 and rounds=0 leave nothing to do")
        evaluators = make_evaluators(a.evaluators)
        sources = self._sources(ctx, evaluators)
        out = Produced()
        groups = [[Member(s["text"], score_all(evaluators, s["text"]), "source")]
                  for s in sources]
        if a.k:
            await self._paraphrase(ctx, sources, groups, evaluators, out)
            self._edit_pair_instances(sources, groups, evaluators, out)
        if a.rounds:
            items = self._items(sources, groups, evaluators)
            editor = self._editor(ctx)
            outcome = await iterative_edit(items, evaluators, editor, candidates=a.candidates,
                                           rounds=a.rounds, sampling=a.editor_sampling)
            out.extra_responses += outcome.responses
            self._edit_outputs(outcome.traces, evaluators, out)
        return out

    # -- inputs ----------------------------------------------------------------------------------
    def _sources(self, ctx: MethodContext, evaluators: list[Evaluator]) -> list[dict[str, Any]]:
        rows, src, cols = ctx.rows, ctx.source, self.args.columns or {}
        if not rows:
            raise InputError(f"{src}: no source rows")
        names = list(rows[0])
        text_col = cols.get("text") or next((g for g in _TEXT_GUESSES if g in names), None)
        if text_col is None or text_col not in names:
            raise InputError(f"{src}: no text column; map one with --columns text=NAME "
                             f"(columns: {', '.join(names)})")
        tcol = cols.get("targets", "targets")
        if tcol not in names and "targets" in cols:
            raise InputError(f"column {tcol!r} not in {src}; columns are: {', '.join(names)}")
        known = {ev.name for ev in evaluators}
        out = []
        for i, row in enumerate(rows):
            text = str(row.get(text_col) or "").strip()
            if not text:
                raise InputError(f"{src}: row {i + 1}: column {text_col!r} is empty")
            s: dict[str, Any] = {"id": str(row.get("id", i)), "text": text}
            raw = row.get(tcol)
            if raw is not None:
                targets = orjson.loads(raw) if isinstance(raw, str) else raw
                if not isinstance(targets, dict) or not set(targets) <= known or not all(
                        isinstance(v, int | float) for v in targets.values()):
                    raise InputError(f"{src}: row {i + 1}: targets must map evaluator names "
                                     f"({', '.join(sorted(known))}) to numbers")
                s["targets"] = {k: float(v) for k, v in targets.items()}
            out.append(s)
        if self.args.k == 0 and not any("targets" in s for s in out):
            raise InputError(f"{src}: with k=0 every target comes from a 'targets' column "
                             "({evaluator: value}); none found")
        return out

    def _editor(self, ctx: MethodContext) -> Generate:
        if self.args.editor is None:
            return ctx.generate
        if ctx.generate_with is None:
            raise ConfigError(f"{self.name}: this context cannot call a separate editor")
        return ctx.generate_with(self.args.editor)

    # -- paraphrases and edit pairs --------------------------------------------------------------
    async def _paraphrase(self, ctx: MethodContext, sources: list[dict[str, Any]],
                          groups: list[list[Member]], evaluators: list[Evaluator],
                          out: Produced) -> None:
        tpl = template("paraphrase", PROMPT_DIR)
        styles = [s.strip() for s in template("styles", PROMPT_DIR).template.splitlines()
                  if s.strip()]
        where: list[int] = []
        for g, s in enumerate(sources):
            rng = random.Random(f"{self.args.seed}:{s['id']}")
            order = rng.sample(styles, len(styles))
            for j in range(self.args.k):
                style = order[j % len(order)]
                out.requests.append(GenRequest(
                    messages=[Message(role="user", content=tpl.substitute(text=s["text"],
                                                                          style=style))],
                    sample=j, meta={"source_id": s["id"], "style": style, "paraphrase": j}))
                where.append(g)
        out.responses = await ctx.generate(out.requests)
        for g, q, resp in zip(where, out.requests, out.responses):
            problem = response_problem(resp)
            text = "" if problem else clean_output(resp.text or "")
            seen = {" ".join(m.text.lower().split()) for m in groups[g]}
            if not problem and not text:
                problem = "empty after cleaning"
            elif not problem and " ".join(text.lower().split()) in seen:
                problem = "paraphrase repeats the source or another paraphrase"
            if problem:
                self._reject(out, q, resp, problem, "paraphrase", sources[g]["id"])
                continue
            groups[g].append(Member(text, score_all(evaluators, text),
                                    f"paraphrase:{q.meta['paraphrase']}"))

    def _edit_pair_instances(self, sources: list[dict[str, Any]], groups: list[list[Member]],
                             evaluators: list[Evaluator], out: Produced) -> None:
        budget = self.args.edit_pairs_per_source * sum(len(g) > 1 for g in groups)
        rng = random.Random(self.args.seed)
        for p in sample_edit_pairs(groups, evaluators, budget, self.args.bins, rng):
            a, b = groups[p.group][p.src], groups[p.group][p.dst]
            user = edit_prompt(evaluators, a.text, a.values, b.values)
            out.instances.append(Instance(
                index=len(out.instances), instance_id=stable_hash([user, b.text]),
                messages=[Message(role="user", content=user),
                          Message(role="assistant", content=b.text)],
                meta={"kind": "edit-pair", "source_id": sources[p.group]["id"],
                      "from": a.origin, "to": b.origin, "values": a.values,
                      "targets": b.values, "distance": p.distance, "bin": p.bin,
                      "weight": p.weight}))

    def _items(self, sources: list[dict[str, Any]], groups: list[list[Member]],
               evaluators: list[Evaluator]) -> list[EditItem]:
        """Targets from the row, else from a group member the source does not yet satisfy."""
        items = []
        for s, group in zip(sources, groups):
            start = group[0].values
            if "targets" in s:
                targets = {ev.name: s["targets"].get(ev.name, start[ev.name]) for ev in evaluators}
            else:
                rng = random.Random(f"{self.args.seed}:target:{s['id']}")
                far = [m for m in group[1:] if not all_satisfied(evaluators, start, m.values)]
                if not far:
                    continue  # nothing reachable to aim at: no edit item for this source
                targets = dict(rng.choice(far).values)
            targets = {ev.name: ev.clip(targets[ev.name]) for ev in evaluators}
            items.append(EditItem(s["id"], s["text"], targets))
        return items

    # -- editing outputs -------------------------------------------------------------------------
    def _edit_outputs(self, traces: list[EditTrace], evaluators: list[Evaluator],
                      out: Produced) -> None:
        label = "+".join(ev.name for ev in evaluators)
        for t in traces:
            for q, resp, problem in t.failures:
                self._reject(out, q, resp, problem, "edit-candidate", t.item.item_id)
            improved = t.best.round >= 0
            reason = None
            if not t.rounds:
                reason = "already within tolerance"
            elif not improved:
                reason = "no candidate improved on the input"
            user = edit_prompt(evaluators, t.item.text, t.start.values, t.item.targets)
            msgs = [Message(role="user", content=user)]
            if improved:
                msgs.append(Message(role="assistant", content=t.best.text))
            out.instances.append(Instance(
                index=len(out.instances), instance_id=stable_hash([user, t.best.text]),
                messages=msgs, valid=reason is None, reject_reason=reason,
                meta={"kind": "edit-item", "item_id": t.item.item_id, "targets": t.item.targets,
                      "start_values": t.start.values, "values": t.best.values,
                      "start_reward": t.start.reward, "reward": t.best.reward,
                      "satisfied": t.satisfied, "rounds": len(t.rounds),
                      "distance": mean_distance(evaluators, t.best.values, t.item.targets),
                      "weight": math.exp(self.args.reward_beta * t.best.reward)}))
            for r, (prompt, cands) in enumerate(zip(t.prompts, t.rounds)):
                if len(cands) < 2:
                    continue
                hi = max(cands, key=lambda c: c.reward)
                lo = min(cands, key=lambda c: c.reward)
                if hi.reward <= lo.reward:
                    continue
                out.pairs.append(Pair(
                    index=len(out.pairs), pair_id=stable_hash([prompt, hi.text, lo.text]),
                    prompt=[Message(role="user", content=prompt)],
                    chosen=[Message(role="assistant", content=hi.text)],
                    rejected=[Message(role="assistant", content=lo.text)],
                    attribute=label, margin=hi.reward - lo.reward,
                    weight=min(1.0, (hi.reward - lo.reward) / len(evaluators)),
                    evidence={"targets": t.item.targets,
                              "chosen": {"values": hi.values, "reward": hi.reward,
                                         "key": hi.key},
                              "rejected": {"values": lo.values, "reward": lo.reward,
                                           "key": lo.key}},
                    meta={"item_id": t.item.item_id, "round": r}))

    @staticmethod
    def _reject(out: Produced, q: GenRequest, resp: GenResponse, problem: str, kind: str,
                source_id: str) -> None:
        msgs = [q.messages[0]]
        if resp.text:
            msgs.append(Message(role="assistant", content=resp.text))
        out.instances.append(Instance(
            index=len(out.instances), instance_id=stable_hash([kind, resp.key]), messages=msgs,
            valid=False, reject_reason=f"{kind}: {problem}",
            meta={"kind": kind, "source_id": source_id, "key": resp.key}))

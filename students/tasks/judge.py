"""Judge win-rate: a judge LM compares the student's answer with a reference answer.

Any (instruction, reference) set works; the default is the built-in general seed set with its
hand-written ``response`` as the reference, so the student is measured against a human answer
directly (as HREF argues, a human reference is a steadier yardstick than another model's
output). When the set also carries a separate human-written answer (``guide_field``, e.g. a
set whose ``reference`` is a baseline model's output), the judge is shown it as a guide to what a
good answer contains, as HREF's reference-guided judge is.

LM judges favour a position, so every item is judged twice, with the student's answer first
(as A) and second (as B); a verdict counts 1 for a win, 0.5 for a tie and 0 for a loss, and the
item's score is the mean over the two orders. A judge that always picks A thus gives 0.5, not a
win. ``consistency`` (share of items whose two verdicts agree once un-swapped) and
``prefers_first`` (share of decisive verdicts that picked A) show how position-biased the judge
was. A verdict that cannot be read is left out; an item with no readable verdict is unjudged
(score None, not counted in the win rate).

With ``category_field`` the task judges HREF-style (:mod:`students.tasks.href`): each category
is judged by its own method (``methods``, or the one a human-labelled ``agreement`` set agrees
with most: the judge with the human answer, without it, or embedding similarity to it), and the
metrics add per-category win rates and the agreement of every method. ``win_rate`` is always
the pooled mean over items with a 95% bootstrap interval (``win_rate_ci_low``/``_high``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field, model_validator

from datagen_core.records import GenRequest, GenResponse, Message, SamplingParams
from students.tasks.base import EvalItem, ItemScore, ScoreContext, Task, TaskArgs
from students.tasks.href import Choice, Method

JUDGE_SYSTEM = "You are a fair, careful judge of answers to user instructions."
JUDGE_PROMPT = """\
Compare the two responses to the instruction below and decide which one is better: more \
helpful, correct, complete and faithful to what was asked. Judge substance, not length or \
style, and do not let the order in which the responses appear influence you.

# Instruction
{instruction}
{guide}
# Response A
{a}

# Response B
{b}

Explain your reasoning in a few sentences, then end with exactly one line: "Verdict: A", \
"Verdict: B" or "Verdict: tie"."""
GUIDE = """
# Reference answer written by a person
(A guide to what a good response contains; it is neither A nor B.)
{guide}
"""

_VERDICT = re.compile(r"verdict\s*(?:is)?\s*[:=\-]?\s*[*_\[(\"'`]*\s*(A|B|tie)\b", re.IGNORECASE)
_BRACKETS = re.compile(r"\[\[\s*(A|B|tie)\s*\]\]", re.IGNORECASE)
_BARE = re.compile(r"^\W*(A|B|tie)\W*$", re.IGNORECASE)


def parse_verdict(text: str | None) -> str | None:
    """"A", "B" or "tie" from a judge's reply (its last ``Verdict: X`` or ``[[X]]``, or a reply
    that is just the letter), else None."""
    if not text:
        return None
    hits = list(_VERDICT.finditer(text)) or list(_BRACKETS.finditer(text))
    if hits:
        found = hits[-1][1]
    else:
        bare = _BARE.match(text.strip())
        if not bare:
            return None
        found = bare[1]
    return "tie" if found.lower() == "tie" else found.upper()


def outcome(verdict: str | None, student_is: str) -> float | None:
    """The student's result in one order: 1 win, 0.5 tie, 0 loss, None unreadable."""
    if verdict is None:
        return None
    if verdict == "tie":
        return 0.5
    return 1.0 if verdict == student_is else 0.0


class JudgeArgs(TaskArgs):
    source: str | None = Field(
        "builtin:general-eval", description="(instruction, reference) rows; the default is "
        "24 instructions written for this project, disjoint from the builtin:general seeds")
    instruction_field: str = "instruction"
    reference_field: str = Field("response", description="the answer the student is compared to")
    guide_field: str | None = Field(None, description="a human answer shown to the judge as a "
                                    "guide (HREF), when the reference is not one itself")
    judge_max_tokens: int = Field(512, ge=1)
    category_field: str | None = Field(None, description="the row's task category: a method "
                                       "and a win rate per category (HREF)")
    methods: dict[str, Method] = Field(
        default_factory=dict, description="judging method per category ('*': any other): "
        "judge-reference, judge or embedding; overrides the agreement set's choice")
    agreement: str | None = Field(
        None, description="human-labelled pairs (instruction, output_a, output_b, preference, "
        "category, reference): each category is judged by the method people agree with most")
    embedder: str = Field("smollm2", description="model of the embedding method")
    n_boot: int = Field(1000, ge=100, description="bootstrap replicates of the win-rate CI")

    @model_validator(mode="after")
    def _human_answer(self) -> JudgeArgs:
        wants = {m for m in self.methods.values() if m != "judge"}
        if (wants or self.agreement) and not self.guide_field:
            raise ValueError("judge-reference, embedding and an agreement set need guide_field "
                             "(the human answer, apart from the reference it is compared with)")
        return self


class JudgeWinRate(Task):
    name = "winrate"
    version = "2"  # 2: default set builtin:general-eval (was the builtin:general seeds)
    Args = JudgeArgs
    primary_metric = "win_rate"
    needs_judge = True
    max_tokens = 1024

    choice: Choice | None = None  # the agreement set's verdict, once scored
    _embedder: Any = None

    @property
    def judge_args(self) -> JudgeArgs:
        assert isinstance(self.args, JudgeArgs)
        return self.args

    def id_args(self) -> dict[str, Any]:
        """The agreement set enters the id by its content, not its path."""
        args = super().id_args()
        if self.judge_args.agreement:
            from datagen_core.sources import load_rows

            args["agreement"] = load_rows(self.judge_args.agreement)[1].fingerprint
        return args

    def method_for(self, item: EvalItem) -> str:
        a = self.judge_args
        cat = item.data.get("category", "")
        chosen = self.choice.chosen.get(cat) if self.choice else None
        return (a.methods.get(cat) or chosen or a.methods.get("*")
                or ("judge-reference" if a.guide_field else "judge"))

    def items(self, rows: list[dict[str, Any]]) -> list[EvalItem]:
        a = self.judge_args
        items = []
        for i, row in enumerate(rows):
            data = {"reference": str(row[a.reference_field])}
            if a.guide_field:
                data["guide"] = str(row[a.guide_field])
            if a.category_field:
                data["category"] = str(row[a.category_field])
            items.append(EvalItem(item_id=str(row.get("id", i)), index=i,
                                  prompt=str(row[a.instruction_field]), data=data))
        return items

    def judge_request(self, item: EvalItem, a: str, b: str, student_is: str,
                      with_guide: bool = True) -> GenRequest:
        guide = GUIDE.format(guide=item.data["guide"]) if with_guide and "guide" in item.data \
            else ""
        content = JUDGE_PROMPT.format(instruction=item.prompt, guide=guide, a=a, b=b)
        return GenRequest(
            messages=[Message(role="system", content=JUDGE_SYSTEM),
                      Message(role="user", content=content)],
            sampling=SamplingParams(temperature=0.0, max_tokens=self.judge_args.judge_max_tokens),
            meta={"task": self.name, "index": item.index, "student_is": student_is},
        )

    async def score(self, items: Sequence[EvalItem], responses: Sequence[GenResponse],
                    ctx: ScoreContext) -> list[ItemScore]:
        if ctx.judge is None:
            from datagen_core.errors import ConfigError

            raise ConfigError(f"task {self.name} needs a judge: pass judge=SPEC (--judge)")
        if self.judge_args.agreement:
            self.choice = await self._choose(ctx)
        answered = [(item, r.text or "") for item, r in zip(items, responses) if r.ok]
        method = {item.index: self.method_for(item) for item, _ in answered}
        requests = []
        for item, answer in answered:
            if method[item.index] == "embedding":
                continue
            ref, guided = item.data["reference"], method[item.index] == "judge-reference"
            requests.append(self.judge_request(item, answer, ref, "A", guided))
            requests.append(self.judge_request(item, ref, answer, "B", guided))
        replies = await ctx.judge(requests) if requests else []
        by_item: dict[int, list[GenResponse]] = {}
        for request, reply in zip(requests, replies):
            by_item.setdefault(request.meta["index"], []).append(reply)
        embedded = [(it, ans) for it, ans in answered if method[it.index] == "embedding"]
        sims = await self._similarities(
            [(ans, it.data["reference"], it.data["guide"]) for it, ans in embedded])
        by_sim = {it.index: s for (it, _), s in zip(embedded, sims)}
        results = []
        for item, response in zip(items, responses):
            if not response.ok:
                results.append(self.failed(item, response))
                continue
            tags = {"method": method[item.index], "category": item.data.get("category")}
            if item.index in by_sim:
                student, ref = by_sim[item.index]
                score = 1.0 if student > ref else 0.0 if student < ref else 0.5
                results.append(ItemScore(item.item_id, item.index, score, detail={
                    **tags, "similarity": [student, ref]}))
                continue
            pair = by_item[item.index]
            verdicts = [parse_verdict(r.text) if r.ok else None for r in pair]
            outcomes = [outcome(v, s) for v, s in zip(verdicts, ("A", "B"))]
            known = [o for o in outcomes if o is not None]
            detail: dict[str, Any] = {
                **tags, "verdicts": verdicts, "outcomes": outcomes,
                "consistent": outcomes[0] == outcomes[1] if len(known) == 2 else None,
            }
            errors = [r.error.message for r in pair if r.error is not None]
            if errors:
                detail["judge_errors"] = errors
            results.append(ItemScore(item.item_id, item.index,
                                     sum(known) / len(known) if known else None, detail=detail))
        return results

    async def _choose(self, ctx: ScoreContext) -> Choice:
        """Every method's preferences on the agreement set, and the choice per category."""
        from datagen_core.sources import load_rows
        from students.tasks import href

        a = self.judge_args
        assert a.agreement is not None and ctx.judge is not None
        rows = href.read_agreement(load_rows(a.agreement)[0], a.agreement)
        requests = []
        for guided in (True, False):
            for i, r in enumerate(rows):
                item = EvalItem(f"agreement-{i}", i, r.instruction, {"guide": r.human})
                requests.append(self.judge_request(item, r.a, r.b, "A", guided))
                requests.append(self.judge_request(item, r.b, r.a, "B", guided))
        replies = await ctx.judge(requests)
        predictions: dict[str, list[str | None]] = {}
        for m, block in (("judge-reference", replies[:2 * len(rows)]),
                         ("judge", replies[2 * len(rows):])):
            preds: list[str | None] = []
            for i in range(len(rows)):
                found = [outcome(parse_verdict(x.text) if x.ok else None, side)
                         for x, side in zip(block[2 * i:2 * i + 2], ("A", "B"))]
                known = [o for o in found if o is not None]
                preds.append(href.preference(sum(known) / len(known) if known else None))
            predictions[m] = preds
        sims = await self._similarities([(r.a, r.b, r.human) for r in rows])
        predictions["embedding"] = [href.embedding_preference(x, y) for x, y in sims]
        return href.choose(rows, predictions, href.METHODS)

    async def _similarities(self, triples: list[tuple[str, str, str]]
                            ) -> list[tuple[float, float]]:
        """Cosine similarity of x and of y to h, for each (x, y, h)."""
        import asyncio

        if not triples:
            return []
        if self._embedder is None:
            from students.embed import Embedder

            self._embedder = Embedder(self.judge_args.embedder, max_length=512)
        texts = [t for triple in triples for t in triple]
        vecs = await asyncio.to_thread(self._embedder.embed, texts)
        return [(float(vecs[3 * i] @ vecs[3 * i + 2]), float(vecs[3 * i + 1] @ vecs[3 * i + 2]))
                for i in range(len(triples))]

    def aggregate(self, scores: Sequence[ItemScore]) -> dict[str, float]:
        from students.tasks.href import composite

        judged = [s for s in scores if s.score is not None]
        pairs = [s.detail["consistent"] for s in scores
                 if s.detail.get("consistent") is not None]
        decisive = [v for s in scores for v in s.detail.get("verdicts", []) if v in ("A", "B")]
        nan = float("nan")  # nothing judged: no win rate, not a win rate of 0
        out = composite([float(s.score) for s in judged if s.score is not None],
                        [str(s.detail.get("category")) for s in judged], self.judge_args.n_boot)
        if not self.judge_args.category_field:
            out = {k: v for k, v in out.items() if "/" not in k}
        if self.choice is not None:
            for cat, rates in self.choice.agreement.items():
                out[f"agreement/{cat}"] = rates[self.choice.chosen[cat]]
                out.update({f"agreement/{cat}/{m}": v for m, v in rates.items()})
        return {
            **out,
            "consistency": sum(pairs) / len(pairs) if pairs else nan,
            "prefers_first": decisive.count("A") / len(decisive) if decisive else nan,
            "judged": float(len(judged)),
        }

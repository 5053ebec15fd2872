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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from datagen_core.records import GenRequest, GenResponse, Message, SamplingParams
from students.tasks.base import EvalItem, ItemScore, ScoreContext, Task, TaskArgs

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


class JudgeWinRate(Task):
    name = "winrate"
    version = "2"  # 2: default set builtin:general-eval (was the builtin:general seeds)
    Args = JudgeArgs
    primary_metric = "win_rate"
    needs_judge = True
    max_tokens = 1024

    @property
    def judge_args(self) -> JudgeArgs:
        assert isinstance(self.args, JudgeArgs)
        return self.args

    def items(self, rows: list[dict[str, Any]]) -> list[EvalItem]:
        a = self.judge_args
        items = []
        for i, row in enumerate(rows):
            data = {"reference": str(row[a.reference_field])}
            if a.guide_field:
                data["guide"] = str(row[a.guide_field])
            items.append(EvalItem(item_id=str(row.get("id", i)), index=i,
                                  prompt=str(row[a.instruction_field]), data=data))
        return items

    def judge_request(self, item: EvalItem, a: str, b: str, student_is: str) -> GenRequest:
        guide = GUIDE.format(guide=item.data["guide"]) if "guide" in item.data else ""
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
        answered = [(item, r.text or "") for item, r in zip(items, responses) if r.ok]
        requests = []
        for item, answer in answered:
            ref = item.data["reference"]
            requests.append(self.judge_request(item, answer, ref, "A"))
            requests.append(self.judge_request(item, ref, answer, "B"))
        replies = await ctx.judge(requests) if requests else []
        by_item: dict[int, list[GenResponse]] = {}
        for request, reply in zip(requests, replies):
            by_item.setdefault(request.meta["index"], []).append(reply)
        results = []
        for item, response in zip(items, responses):
            if not response.ok:
                results.append(self.failed(item, response))
                continue
            pair = by_item[item.index]
            verdicts = [parse_verdict(r.text) if r.ok else None for r in pair]
            outcomes = [outcome(v, s) for v, s in zip(verdicts, ("A", "B"))]
            known = [o for o in outcomes if o is not None]
            detail: dict[str, Any] = {
                "verdicts": verdicts, "outcomes": outcomes,
                "consistent": outcomes[0] == outcomes[1] if len(known) == 2 else None,
            }
            errors = [r.error.message for r in pair if r.error is not None]
            if errors:
                detail["judge_errors"] = errors
            results.append(ItemScore(item.item_id, item.index,
                                     sum(known) / len(known) if known else None, detail=detail))
        return results

    def aggregate(self, scores: Sequence[ItemScore]) -> dict[str, float]:
        judged = [s.score for s in scores if s.score is not None]
        pairs = [s.detail["consistent"] for s in scores
                 if s.detail.get("consistent") is not None]
        decisive = [v for s in scores for v in s.detail.get("verdicts", []) if v in ("A", "B")]
        nan = float("nan")  # nothing judged: no win rate, not a win rate of 0
        return {
            "win_rate": sum(judged) / len(judged) if judged else nan,
            "consistency": sum(pairs) / len(pairs) if pairs else nan,
            "prefers_first": decisive.count("A") / len(decisive) if decisive else nan,
            "judged": float(len(judged)),
        }

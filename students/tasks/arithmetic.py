"""``arithmetic``: two-number sums ("What is 37 plus 45?"), held out from the built-in seeds.

The offline quickstart's task: the 500 questions of ``builtin:arithmetic-test`` share no (A, B)
pair with the 1,024 training seeds of ``builtin:arithmetic``. The student sees the bare question,
as in its training data, and is scored 1 when the last integer of its answer is the sum: whether
it says "82" or "37 + 45 = 82" does not matter, whether the sum is right does.
"""

from __future__ import annotations

from typing import Any

from generators.domains.base import last_integer
from students.tasks.base import EvalItem, ItemScore, ScoreContext, Task


class Arithmetic(Task):
    name = "arithmetic"
    version = "1"
    max_tokens = 16

    def default_hub_uri(self) -> str | None:
        return "builtin:arithmetic-test"

    def items(self, rows: list[dict[str, Any]]) -> list[EvalItem]:
        return [EvalItem(item_id=str(row.get("id", f"arithmetic-{i}")), index=i,
                         prompt=row["instruction"], data={"gold": str(row["answer"]).strip()})
                for i, row in enumerate(rows)]

    async def score_item(self, item: EvalItem, answer: str, ctx: ScoreContext) -> ItemScore:
        pred = last_integer(answer)
        gold = item.data["gold"]
        return ItemScore(item.item_id, item.index, 1.0 if pred == gold else 0.0, extracted=pred,
                         detail={"gold": gold})

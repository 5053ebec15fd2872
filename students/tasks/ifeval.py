"""IFEval: verifiable instructions ("no commas", "at least 300 words", "end with P.S."), checked
by program, strictly and loosely, as the IFEval paper defines them.

- strict: the response as it is follows the instruction;
- loose: the response, or it with the first line, the last line or both removed, each with or
  without markdown asterisks, follows it (so "Sure, here it is:" or ``**bold**`` does not fail
  an otherwise followed instruction).

Four metrics: ``prompt_strict`` / ``prompt_loose`` (share of prompts whose every instruction is
followed) and ``inst_strict`` / ``inst_loose`` (share of all instructions followed). The item
score is the prompt-level strict verdict. The checks are in :mod:`students.tasks.ifeval_checks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datagen_core.errors import InputError
from datagen_core.records import GenResponse
from generators.domains import ifeval_checks as checks
from students.tasks.base import EvalItem, ItemScore, ScoreContext, Task, failed_generation


class IFEval(Task):
    """google/IFEval (541 prompts on the Hub, 540 in the original release), one turn each."""

    name = "ifeval"
    version = "2"  # 2: sentences and capital words counted as NLTK punkt / word_tokenize do
    primary_metric = "prompt_strict"
    hub_uri = "hf://google/IFEval:train"
    local_path = "ifeval/input_data.jsonl"
    max_tokens = 1280

    def items(self, rows: list[dict[str, Any]]) -> list[EvalItem]:
        items = []
        for i, row in enumerate(rows):
            ids = list(row["instruction_id_list"])
            kwargs = [checks.clean_kwargs(k) for k in row["kwargs"]]
            if len(kwargs) != len(ids):
                raise InputError(f"ifeval row {row.get('key', i)}: {len(ids)} instructions but "
                                 f"{len(kwargs)} kwargs")
            for instruction_id, kw in zip(ids, kwargs):
                checks.validate(instruction_id, kw)
            items.append(EvalItem(item_id=str(row.get("key", i)), index=i, prompt=row["prompt"],
                                  data={"instructions": ids, "kwargs": kwargs}))
        return items

    def concurrency(self) -> int:
        return 1  # pure CPU work in the event loop: nothing to overlap

    async def score_item(self, item: EvalItem, answer: str, ctx: ScoreContext) -> ItemScore:
        ids, kwargs = item.data["instructions"], item.data["kwargs"]
        strict = [checks.follows(i, kw, answer) for i, kw in zip(ids, kwargs)]
        loose = [checks.follows(i, kw, answer, loose=True) for i, kw in zip(ids, kwargs)]
        return ItemScore(item.item_id, item.index, 1.0 if all(strict) else 0.0,
                         detail={"instructions": ids, "strict": strict, "loose": loose})

    def failed(self, item: EvalItem, response: GenResponse) -> ItemScore:
        """No answer: every instruction of the prompt counts as not followed."""
        result = failed_generation(item, response)
        none = [False] * len(item.data["instructions"])
        result.detail.update(instructions=item.data["instructions"], strict=none, loose=none)
        return result

    def aggregate(self, scores: Sequence[ItemScore]) -> dict[str, float]:
        prompts = [s for s in scores if "strict" in s.detail]
        n_prompts = len(scores) or 1
        inst_total = sum(len(s.detail["strict"]) for s in prompts) or 1
        return {
            "prompt_strict": sum(all(s.detail["strict"]) for s in prompts) / n_prompts,
            "prompt_loose": sum(all(s.detail["loose"]) for s in prompts) / n_prompts,
            "inst_strict": sum(sum(s.detail["strict"]) for s in prompts) / inst_total,
            "inst_loose": sum(sum(s.detail["loose"]) for s in prompts) / inst_total,
        }

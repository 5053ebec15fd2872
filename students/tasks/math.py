"""GSM8K and MATH-500: zero-shot, greedy, final answer extracted and matched exactly.

Extraction and matching are :mod:`generators.domains.math`, the rules the math validator applies
to generated data, so a student is scored by the same normalisation its training data was
filtered with. MATH-500 adds the question-aware rules of :mod:`students.tasks.math_answers`: an
answer in a base must be in that base, and numeric answers are exact unless the question asks
for rounding, and then at the precision asked. Extraction is lenient here (a solution without
``####`` or ``\\boxed{}`` is read by its last number): small students often ignore the answer
format, and the metric is whether the answer is right, not whether the format was followed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from datagen_core.errors import InputError
from generators.domains.math import answers_match, extract_answer, gsm8k_gold
from students.tasks.base import EvalItem, ItemScore, ScoreContext, Task
from students.tasks.math_answers import math500_answers_match

GSM8K_PROMPT = (
    "Solve the following math problem step by step. At the end, write the final answer on its "
    "own line as '#### <answer>' (a number only, no units).\n\n"
    "Problem: {question}"
)
MATH_PROMPT = (
    "Solve the following math problem step by step. Put your final answer within "
    "\\boxed{{}}.\n\n"
    "Problem: {question}"
)


class _FinalAnswerTask(Task):
    """A question whose gold is one final answer; the score is 1 when the answers match."""

    prompt_template: ClassVar[str]

    def messages_text(self, question: str) -> str:
        return self.prompt_template.format(question=question)

    def matches(self, pred: str, item: EvalItem) -> bool:
        return answers_match(pred, item.data["gold"])

    async def score_item(self, item: EvalItem, answer: str, ctx: ScoreContext) -> ItemScore:
        pred = extract_answer(answer, fallback_last_number=True)
        gold = item.data["gold"]
        ok = pred is not None and self.matches(pred, item)
        return ItemScore(item.item_id, item.index, 1.0 if ok else 0.0, extracted=pred,
                         detail={"gold": gold})


class Gsm8k(_FinalAnswerTask):
    """GSM8K test (1,319 grade-school word problems); gold is the number after ``####``."""

    name = "gsm8k"
    version = "1"
    hub_uri = "hf://openai/gsm8k/main:test"
    local_path = "gsm8k/test.jsonl"
    max_tokens = 512
    prompt_template = GSM8K_PROMPT

    def items(self, rows: list[dict[str, Any]]) -> list[EvalItem]:
        return [EvalItem(item_id=f"gsm8k-test-{i}", index=i,
                         prompt=self.messages_text(row["question"]),
                         data={"gold": gsm8k_gold(row["answer"]), "reference": row["answer"]})
                for i, row in enumerate(rows)]


class Math500(_FinalAnswerTask):
    """MATH-500 (the PRM800K test subset of MATH); gold is the ``\\boxed{}`` answer.

    Reads the Hub layout (``problem``, ``answer`` = the bare answer, ``unique_id``) and the
    offline asset's (``question``, ``answer`` = a full solution ending in ``\\boxed{...}``).
    """

    name = "math500"
    version = "2"  # 2: bases and rounding read from the question (students.tasks.math_answers)
    hub_uri = "hf://HuggingFaceH4/MATH-500:test"
    local_path = "math500/test.jsonl"
    max_tokens = 1024
    prompt_template = MATH_PROMPT

    def items(self, rows: list[dict[str, Any]]) -> list[EvalItem]:
        items = []
        for i, row in enumerate(rows):
            question = row.get("problem") or row["question"]
            gold = str(row["answer"])
            if "\\boxed" in gold or "####" in gold:  # a worked solution, not the bare answer
                found = extract_answer(gold)
                if found is None:
                    raise InputError(f"math500 row {i}: no final answer in {gold[-80:]!r}")
                gold = found
            item_id = str(row.get("unique_id") or f"math500-{i}")
            items.append(EvalItem(item_id=item_id, index=i, prompt=self.messages_text(question),
                                  data={"gold": gold, "question": question,
                                        "reference": row.get("solution") or row["answer"]}))
        return items

    def matches(self, pred: str, item: EvalItem) -> bool:
        return math500_answers_match(pred, item.data["gold"], item.data.get("question", ""))

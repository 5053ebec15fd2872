"""Evaluation tasks: a data set plus a scorer, registered by name (entry-point group
``datagen.tasks``; the built-ins are listed in :data:`TASKS` too, so a bare checkout works).

Built-ins: ``gsm8k``, ``math500`` (final-answer exact match), ``mbpp``, ``humaneval`` (pass@1 in
the sandbox), ``ifeval`` (instruction checks, strict and loose) and ``winrate`` (an LM judge
compares the student's answer with a reference answer, in both orders). Importing this package
imports no task module, no data set library and no model.
"""

from students.tasks.base import (
    EVAL_DIR_ENV,
    TASKS,
    EvalItem,
    ItemScore,
    ScoreContext,
    Task,
    TaskArgs,
    get_task,
)

__all__ = [
    "EVAL_DIR_ENV",
    "TASKS",
    "EvalItem",
    "ItemScore",
    "ScoreContext",
    "Task",
    "TaskArgs",
    "get_task",
]

"""Evaluation hygiene of a suite: what decontamination indexes, and seeds that are eval items.

Why a rule of the bench and not a curation setting: a generator ranked on data that contains
the items its students are scored on is ranked on a leak. So a suite (1) decontaminates against
exactly the items its tasks score (the task's own split: MBPP test ids 11-510, not the train
split that seeds a code cell; the win-rate task's instruction set), (2) cannot be run when a
domain's seed set contains evaluation items verbatim (the same data used twice is a
configuration mistake, named in one line before any work), and (3) drops seed rows that only
*overlap* an evaluation item (the n-gram rule of decontamination) before generation, with a
count in the plan and the run (see :func:`datagen.run_curation.drop_seed_items`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from datagen_core.errors import ConfigError, InputError, MissingDependencyError
from datagen_core.records import validation_message

if TYPE_CHECKING:
    from datagen.suite import Suite

Fail = Callable[[str, str], None]


def suite_eval_sets(suite: Suite) -> list[str]:
    """The evaluation sets a suite's tasks score, as decontamination names them: a built-in
    name when the task reads its default data (split-aware), else the task's source."""
    return list(_sets_by_task(suite))


def _sets_by_task(suite: Suite) -> dict[str, list[str]]:
    from generators.curation import BUILTIN_EVALS
    from students.tasks.base import get_task

    out: dict[str, list[str]] = {}
    for dom in suite.domains.values():
        for t in dom.tasks:
            if "source" not in t.args and t.name in BUILTIN_EVALS:
                name = t.name
            else:
                name = get_task(t.name, **t.args).source_uri()
            if t.name not in out.setdefault(name, []):
                out[name].append(t.name)
    return out


def curation_settings(suite: Suite) -> dict[str, Any]:
    """The suite's curation settings with ``eval_sets`` defaulting to the suite's own tasks
    (only when decontamination is on, so an opted-out suite keeps its run ids)."""
    settings = dict(suite.curation)
    if settings.get("decontaminate", True) and "eval_sets" not in settings:
        settings["eval_sets"] = suite_eval_sets(suite)
    return settings


def check_hygiene(suite: Suite, fail: Fail) -> None:
    """Curation settings are valid; decontamination can read every evaluation set (unless the
    suite opts out); no readable seed set holds an evaluation item verbatim."""
    from pydantic import ValidationError

    from generators.curation import CurationConfig, load_eval_texts

    try:
        cfg = CurationConfig(**curation_settings(suite))
    except ValidationError as e:
        fail("curation", validation_message(e))
        return
    names = cfg.eval_sets if cfg.decontaminate else _task_sets(suite)
    texts: dict[str, list[str]] = {}
    for name in names:
        try:
            texts[name] = load_eval_texts(name, root=cfg.eval_dir)
        except (ConfigError, InputError, MissingDependencyError) as e:
            if cfg.decontaminate:
                fail("curation", f"decontamination cannot read eval set {name!r} ({e}); set "
                     "DATAGEN_EVAL_DIR to a folder of local copies, or opt out with "
                     "curation: {decontaminate: false}")
    if texts:
        _check_seed_overlap(suite, texts, fail)


def _task_sets(suite: Suite) -> list[str]:
    try:
        return suite_eval_sets(suite)
    except (ConfigError, InputError):
        return []  # an opted-out suite whose eval data is not here: nothing to compare


def _check_seed_overlap(suite: Suite, texts: dict[str, list[str]], fail: Fail) -> None:
    from datagen_core.sources import load_rows
    from generators.curation import normalize
    from generators.methods.seeded import seed_rows

    items: dict[str, tuple[str, int]] = {}
    for name, prompts in texts.items():
        for i, t in enumerate(prompts):
            key = normalize(t)
            if key:
                items.setdefault(key, (name, i))
    for d in suite.domains:
        uri = suite.seeds_for(d)
        if uri.startswith("hf://"):
            continue  # read at run time, where overlapping rows are dropped and counted
        try:
            rows, _ = load_rows(uri)
            seeds = seed_rows(rows, None, uri, need_response=False)
        except (ConfigError, InputError):
            continue  # _check_seeds reports an unreadable seed set
        hits = [(i, items[k]) for i, s in enumerate(seeds)
                if (k := normalize(s["instruction"])) in items]
        if hits:
            tasks = _task_names(suite)
            i, (name, j) = hits[0]
            sets = sorted({n for _, (n, _) in hits})
            what = ", ".join(f"task {tasks.get(n, '?')} ({n})" for n in sets)
            fail(f"domains.{d}.seeds", f"{len(hits)} of {len(seeds)} seed rows of {uri} are "
                 f"evaluation items of {what} (e.g. seed #{i} is {name} item #{j}): train and "
                 "evaluate on disjoint data")


def _task_names(suite: Suite) -> dict[str, str]:
    try:
        return {k: "/".join(v) for k, v in _sets_by_task(suite).items()}
    except (ConfigError, InputError):
        return {}

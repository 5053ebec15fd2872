"""Curation of accepted rows: dedup (within a run and against the seeds) and decontamination.

Why: repeated rows spend a student's training budget on one example; rows that contain evaluation
items inflate the very scores (and so the PGR) the benchmark ranks generators by. Both checks drop
a row with a reason, never silently, so a report can say what curation removed and why.

The checks live in :mod:`.text` (tokens and hashes), :mod:`.dedup` and :mod:`.contamination`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from datagen_core.errors import ConfigError
from datagen_core.records import Instance
from generators.curation.contamination import (
    BUILTIN_EVALS,
    Contamination,
    EvalIndex,
    EvalSource,
    load_eval_texts,
)
from generators.curation.dedup import (
    DedupConfig,
    DedupResult,
    dedup,
    dedup_tokens,
    minhash_signatures,
)
from generators.curation.text import gc_paused, normalize, tokenize

__all__ = [
    "BUILTIN_EVALS", "Contamination", "CurationConfig", "CurationReport", "DedupConfig",
    "DedupResult", "EvalIndex", "EvalSource", "curate", "curate_instances", "dedup",
    "load_eval_texts", "minhash_signatures", "normalize", "prompt_text", "tokenize",
]


class CurationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dedup: bool = True
    near_dup_threshold: float = Field(0.8, gt=0.0, le=1.0)
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(5, ge=1, le=32)
    decontaminate: bool = True
    eval_sets: list[str] = Field(default_factory=lambda: list(BUILTIN_EVALS))
    eval_dir: str | None = Field(None, description="folder of eval files; else $DATAGEN_EVAL_DIR "
                                                   "or the HF Hub")
    ngram: int = Field(8, ge=1)
    coverage_threshold: float = Field(0.5, ge=0.0, lt=1.0)
    drop_contaminated: bool = True

    def dedup_config(self) -> DedupConfig:
        return DedupConfig(threshold=self.near_dup_threshold, num_perm=self.num_perm,
                           shingle=self.shingle)


@dataclass
class CurationReport:
    """Index-aligned with the input rows; ``counts`` holds input, kept, exact, near, seed and
    contaminated (rows found contaminated, dropped or not); ``contaminated_by`` is per eval set.
    Only rows that survive dedup are checked for contamination."""

    keep: list[bool]
    reasons: list[str | None]
    contamination: list[Contamination | None]
    counts: dict[str, int]
    contaminated_by: dict[str, int]


def curate(texts: Sequence[str], seeds: Sequence[str], config: CurationConfig | None = None,
           eval_index: EvalIndex | None = None) -> CurationReport:
    """Dedup, then decontaminate what is left; ``eval_index`` saves rebuilding the index."""
    with gc_paused():
        return _curate(texts, seeds, config or CurationConfig(), eval_index)


def _curate(texts: Sequence[str], seeds: Sequence[str], cfg: CurationConfig,
            eval_index: EvalIndex | None) -> CurationReport:
    toks = [tokenize(t) for t in texts]  # once, for both checks
    if cfg.dedup:
        d = dedup_tokens(toks, [tokenize(t) for t in seeds], cfg.dedup_config())
        keep, reasons, counts = d.keep, d.reasons, dict(d.counts)
    else:
        keep, reasons, counts = [True] * len(texts), [None] * len(texts), {}
    found: list[Contamination | None] = [None] * len(texts)
    by: dict[str, int] = {}
    if cfg.decontaminate and (cfg.eval_sets or eval_index is not None):
        if eval_index is None:
            eval_index = EvalIndex.from_names(cfg.eval_sets, n=cfg.ngram, root=cfg.eval_dir)
        elif eval_index.n != cfg.ngram:
            raise ConfigError(f"eval index uses {eval_index.n}-grams, config asks for {cfg.ngram}")
        live = [i for i, k in enumerate(keep) if k]
        for i, c in zip(live, eval_index._check([toks[i] for i in live], cfg.coverage_threshold)):
            found[i] = c
            if c is not None and cfg.drop_contaminated:
                keep[i] = False
                reasons[i] = f"contaminated by {c.eval_set} #{c.item} (coverage {c.coverage:.2f})"
        by = eval_index.summary(found)
    counts = {"input": len(texts), "kept": sum(keep), **counts,
              "contaminated": sum(c is not None for c in found)}
    return CurationReport(keep, reasons, found, counts, by)


def prompt_text(instance: Instance) -> str:
    """What curation compares for an SFT row: its user turns."""
    return "\n".join(m.content for m in instance.messages if m.role == "user")


def curate_instances(instances: Sequence[Instance], seeds: Sequence[str],
                     config: CurationConfig | None = None,
                     eval_index: EvalIndex | None = None) -> CurationReport:
    """Curate the valid instances in place: a dropped one becomes invalid with the reason, a
    contaminated one records it in ``meta["contamination"]``. The report's rows are the valid
    instances in order."""
    live = [x for x in instances if x.valid]
    report = curate([prompt_text(x) for x in live], seeds, config, eval_index)
    for x, keep, why, c in zip(live, report.keep, report.reasons, report.contamination):
        if c is not None:
            x.meta["contamination"] = {"eval_set": c.eval_set, "item": c.item,
                                       "coverage": c.coverage}
        if not keep:
            # "#k" in a dedup reason counts valid rows; say which instance it really is
            why = re.sub(r"(?<=duplicate of )#(\d+)", lambda m: f"#{live[int(m.group(1))].index}",
                         why or "dropped by curation")
            x.valid, x.reject_reason = False, why
    return report

"""What a run returns (:class:`RunResult`) and when a finished run is still a failure
(:func:`run_problem`): shared by the in-memory runs (:mod:`datagen.runs`) and streamed ones
(:mod:`datagen.run_stream`), which keep counts instead of every row."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen_core.records import Instance, Pair
from generators.progress import EngineStats


@dataclass
class RowCounts:
    """What a streamed run wrote, counted as it went (what the run record and summary say)."""

    requests: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # by error type
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    instances: int = 0
    valid: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by reason kind
    head: list[Instance] = field(default_factory=list)  # the first valid rows


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    stats: EngineStats
    #: every row, valid or not; a streamed run's are read back from the store when first used
    instances: Sequence[Instance]
    pairs: list[Pair] = field(default_factory=list)
    curation: dict[str, Any] = field(default_factory=dict)  # what curation did, and whether
    # the rows were decontaminated (``decontaminated``; ``skipped`` says why not)
    counts: RowCounts | None = None  # a streamed run's counts, kept while it wrote

    @property
    def valid(self) -> list[Instance]:
        return [x for x in self.instances if x.valid]

    @property
    def n_valid(self) -> int:
        return self.counts.valid if self.counts is not None else sum(
            x.valid for x in self.instances)

    def rejections(self) -> dict[str, int]:
        """Rejected rows by kind of reason (the reason without the row it points at)."""
        if self.counts is not None:
            return dict(self.counts.rejected)
        out: dict[str, int] = {}
        for x in self.instances:
            if not x.valid:
                kind = re.sub(r"\s*#\d+.*$", "", x.reject_reason or "rejected")
                out[kind] = out.get(kind, 0) + 1
        return out

    def head(self, k: int = 2) -> list[Instance]:
        """The first ``k`` valid rows (without reading a streamed run's rows back)."""
        if self.counts is not None:
            return self.counts.head[:k]
        return [x for x in self.instances if x.valid][:k]

    @property
    def data_path(self) -> Path:
        return self.run_dir / "data.parquet"



def run_problem(run_id: str, n_valid: int, n_pairs: int, failed: Mapping[str, int], total: int,
                reasons: Mapping[str, int], max_failure_rate: float | None) -> str | None:
    """Why a run that ran to its end is still a failure, or None: no row kept (a script must
    not go on with an empty dataset), or more failed requests than the user allows.
    ``failed``: failed requests by error type; ``reasons``: rejected rows by reason."""
    n_failed = sum(failed.values())
    why = ", ".join(f"{k} x {v}" for k, v in Counter(failed).most_common(3))
    retry = "; run the same command again to retry the failed requests" if n_failed else ""
    if not n_valid and not n_pairs:
        if n_failed:
            return (f"run {run_id} kept no row: {n_failed} of {total} requests failed "
                    f"({why}){retry}")
        top = ", ".join(f"{r} x {k}" for r, k in Counter(reasons).most_common(3)) or "no rows"
        return f"run {run_id} kept no row ({top}): see `datagen runs show {run_id}`"
    if max_failure_rate is not None and total and n_failed / total > max_failure_rate:
        return (f"run {run_id}: {n_failed} of {total} requests failed ({why}), more "
                f"than the allowed {max_failure_rate:.0%}{retry}")
    return None

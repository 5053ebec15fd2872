"""Choosing k training rows for a target set: RDS+ round-robin, and the random baseline.

RDS+ (Ivison et al. 2025, arXiv 2503.01807; the released code's ``get_top_influences.py`` with
``--selection_method max``, the setting the README runs for every task) scores every pool row by
its cosine similarity to every target item and then lets the target items take turns: in each
round every target item, in order, takes its most similar row not taken yet, until k rows are
taken. So each target item pulls in its own neighbourhood, and one item with many near
neighbours cannot fill the budget alone. When the target rows belong to several tasks
(``groups``), the turns go to the tasks instead, each task scoring a row by its best similarity
to any of its items: the paper's multi-task round-robin (``get_top_aggregated_influences.py``),
which keeps tasks whose similarities are on different scales from crowding each other out.

The paper's pools hold up to 5.8M rows, so nothing here builds the pool x target matrix: the
pool is scanned in chunks keeping, per target item (or task), only its best ``depth`` rows,
which is all a round-robin that stops at k can reach unless turns collide; when they do and a
list runs dry, the scan is repeated deeper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datagen_core.errors import ConfigError


@dataclass(frozen=True)
class Pick:
    """One selected pool row: its index, its similarity to the target that took it, that
    target (item index, or group index with ``groups``), and the round it was taken in."""

    index: int
    score: float
    target: int
    round: int


def random_select(n: int, k: int, seed: int = 0) -> list[Pick]:
    """k of n rows uniformly at random (seeded), in the order drawn."""
    import numpy as np

    _check(n, k)
    order = np.random.default_rng(seed).permutation(n)[:k]
    return [Pick(int(i), 0.0, -1, r) for r, i in enumerate(order)]


def rds_select(pool: Any, target: Any, k: int, groups: Sequence[int] | None = None,
               chunk: int = 65536) -> list[Pick]:
    """k pool rows for the target set by RDS+ round-robin (see the module doc).

    ``pool`` (n, d) and ``target`` (t, d) are unit vectors (cosine = dot product); ``groups``
    gives each target row's task, for the multi-task round-robin.
    """
    import numpy as np

    pool = np.asarray(pool, dtype=np.float32)
    target = np.asarray(target, dtype=np.float32)
    _check(len(pool), k)
    if len(target) == 0:
        raise ConfigError("the target set is empty: RDS+ needs at least one target row")
    if pool.shape[1] != target.shape[1]:
        raise ConfigError(f"pool and target vectors differ in size ({pool.shape[1]} vs "
                          f"{target.shape[1]}): embed both with the same model")
    group_ids = list(range(len(target))) if groups is None else [int(g) for g in groups]
    if len(group_ids) != len(target):
        raise ConfigError(f"{len(group_ids)} groups for {len(target)} target rows")
    labels = sorted(set(group_ids))
    members = [np.flatnonzero(np.asarray(group_ids) == g) for g in labels]
    depth = min(len(pool), -(-k // len(labels)) + 8)
    while True:
        ranked, scores = _top_per_group(pool, target, members, depth, chunk)
        picks = _round_robin(ranked, scores, k)
        if picks is not None or depth >= len(pool):
            break
        depth = min(len(pool), depth * 4)
    if picks is None:  # every list is complete: cannot run dry before k distinct rows
        raise AssertionError("round-robin ran dry with full lists")
    return picks


def _check(n: int, k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if k > n:
        raise ConfigError(f"cannot select k={k} rows from a pool of {n}: lower -k or add runs")


def _top_per_group(pool: Any, target: Any, members: list[Any], depth: int,
                   chunk: int) -> tuple[Any, Any]:
    """Per group, the indices of its ``depth`` most similar pool rows (best first) and their
    scores, a group scoring a row by its best similarity to any of the group's items."""
    import numpy as np

    g = len(members)
    best_idx = np.zeros((g, 0), dtype=np.int64)
    best_val = np.zeros((g, 0), dtype=np.float32)
    for start in range(0, len(pool), chunk):
        sims = pool[start:start + chunk] @ target.T  # (c, t)
        per_group = np.stack([sims[:, m].max(axis=1) for m in members])  # (g, c)
        idx = np.concatenate([best_idx, np.broadcast_to(
            np.arange(start, start + sims.shape[0]), per_group.shape)], axis=1)
        val = np.concatenate([best_val, per_group], axis=1)
        if val.shape[1] > depth:
            keep = np.argpartition(-val, depth - 1, axis=1)[:, :depth]
            idx = np.take_along_axis(idx, keep, axis=1)
            val = np.take_along_axis(val, keep, axis=1)
        best_idx, best_val = idx, val
    # best first; equal scores by pool order, so a selection is deterministic
    order = np.lexsort((best_idx, -best_val), axis=1)
    return np.take_along_axis(best_idx, order, axis=1), np.take_along_axis(best_val, order,
                                                                           axis=1)


def _round_robin(ranked: Any, scores: Any, k: int) -> list[Pick] | None:
    """Groups take turns taking their best row not yet taken; None when a group's list runs
    dry before k rows are taken (the caller scans deeper)."""
    taken: set[int] = set()
    picks: list[Pick] = []
    cursor = [0] * len(ranked)
    rnd = 0
    while len(picks) < k:
        for g in range(len(ranked)):
            row = ranked[g]
            while cursor[g] < len(row) and int(row[cursor[g]]) in taken:
                cursor[g] += 1
            if cursor[g] >= len(row):
                return None
            i = int(row[cursor[g]])
            taken.add(i)
            picks.append(Pick(i, float(scores[g][cursor[g]]), g, rnd))
            if len(picks) == k:
                break
        rnd += 1
    return picks

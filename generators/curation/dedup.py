"""Exact and near-duplicate removal (within a run, and against the seeds).

Dedup: exact duplicates share the hash of the normalised text; near duplicates are candidates from
datasketch's ``MinHashLSH`` over word ``shingle``-gram MinHashes, confirmed by the Jaccard of the
two shingle sets. Signatures are computed in bulk with numpy from datasketch's own affine32
permutations (equal to ``MinHash(hashfunc=<shingle hash>)``, ~10x its per-object path). The first
occurrence is kept; a row is compared with the seeds and the earlier kept rows. One changed word
removes ``shingle`` shingles: Jaccard ~0.84 on a 60-word row (caught at 0.8), ~0.4 on 15 words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from datagen_core.errors import MissingDependencyError
from generators.curation.text import (
    CHUNK,
    MULT,
    U64,
    encode_tokens,
    fmix32,
    fmix64,
    gc_paused,
    ngram_hashes,
    text_hash,
    tokenize,
)


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exact: bool = True
    near: bool = True
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard of shingle sets")
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(5, ge=1, le=32, description="words per shingle")
    recall_weight: float = Field(0.95, ge=0.0, le=1.0, description="LSH false-negative weight")
    seed: int = Field(1, description="datasketch permutation seed")


@dataclass
class DedupResult:
    """Index-aligned with the input: ``keep[i]``, and why not in ``reasons[i]``."""

    keep: list[bool]
    reasons: list[str | None]
    counts: dict[str, int] = field(default_factory=dict)  # exact, near, seed

    @property
    def kept(self) -> list[int]:
        return [i for i, k in enumerate(self.keep) if k]


def _shingle_hashes(token_lists: Sequence[list[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every text's word k-grams and the text of each, ascending; a text shorter
    than k is one shingle (itself), an empty text has none."""
    h, rows, _ = ngram_hashes(*encode_tokens(token_lists), k)
    short = [i for i, t in enumerate(token_lists) if 0 < len(t) < k]
    if short:
        extra = fmix64(np.array([text_hash(token_lists[i]) for i in short], U64))
        h, rows = np.concatenate([h, extra]), np.concatenate([rows, np.array(short, np.int64)])
        order = np.argsort(rows, kind="stable")
        h, rows = h[order], rows[order]
    return h, rows


def minhash_signatures(token_lists: Sequence[list[str]], *, num_perm: int = 128, shingle: int = 5,
                       seed: int = 1) -> np.ndarray:
    """(N, num_perm) uint32 MinHash signatures, equal to datasketch's affine32 ``MinHash`` updated
    with the high 32 bits of each shingle hash; an empty text gets the empty sketch (all 2^32-1)."""
    return _signatures(*_shingle_hashes(token_lists, shingle), len(token_lists), num_perm, seed)


def _datasketch() -> Any:
    """datasketch, imported when first needed (it pulls in scipy: ~0.6 s)."""
    try:
        import datasketch
    except ImportError:
        datasketch = None
    if datasketch is None or int(datasketch.__version__.split(".")[0]) < 2:  # affine32 is 2.0
        raise MissingDependencyError("near-duplicate detection", "datasketch>=2.0", "metrics")
    return datasketch


def _signatures(h: np.ndarray, rows: np.ndarray, n_rows: int, num_perm: int,
                seed: int) -> np.ndarray:
    perm = _datasketch().MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    a, b = perm[0].astype(np.uint32), perm[1].astype(np.uint32)
    hv = fmix32((h >> U64(32)).astype(np.uint32))
    sig = np.full((n_rows, num_perm), 0xFFFFFFFF, np.uint32)
    buf = np.empty((CHUNK, num_perm), np.uint32)  # small enough to stay in cache
    for lo in range(0, len(hv), CHUNK):
        r = rows[lo:lo + CHUNK]
        first, block = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]), buf[:len(r)]
        np.multiply(hv[lo:lo + CHUNK, None], a, out=block)
        block += b
        sig[r[first]] = np.minimum(sig[r[first]], np.minimum.reduceat(block, first, axis=0))
    return sig


def dedup(texts: Sequence[str], *, against: Sequence[str] = (),
          config: DedupConfig | None = None) -> DedupResult:
    """Drop exact and near duplicates of earlier kept rows and of the ``against`` rows (seeds)."""
    with gc_paused():
        return dedup_tokens([tokenize(t) for t in texts], [tokenize(t) for t in against],
                      config or DedupConfig())


def dedup_tokens(toks: list[list[str]], seed_toks: list[list[str]], cfg: DedupConfig
                 ) -> DedupResult:
    keep = [True] * len(toks)
    reason: list[str | None] = [None] * len(toks)
    counts = {"exact": 0, "near": 0, "seed": 0}
    seed_first: dict[int, int] = {}
    for j, t in enumerate(seed_toks):
        seed_first.setdefault(text_hash(t), j)
    seen: dict[int, int] = {}
    for i, t in enumerate(toks):
        if not cfg.exact:
            break
        h = text_hash(t)
        if h in seed_first:
            keep[i], reason[i] = False, f"duplicate of seed #{seed_first[h]}"
            counts["seed"] += 1
        elif h in seen:
            keep[i], reason[i] = False, f"exact duplicate of #{seen[h]}"
            counts["exact"] += 1
        else:
            seen[h] = i
    if cfg.near:
        seeds = sorted(set(seed_first.values())) if cfg.exact else list(range(len(seed_toks)))
        _near(toks, seed_toks, seeds, cfg, keep, reason, counts)
    return DedupResult(keep, reason, counts)


def _near(toks: list[list[str]], seed_toks: list[list[str]], seed_ids: list[int],
          cfg: DedupConfig, keep: list[bool], reason: list[str | None],
          counts: dict[str, int]) -> None:
    """Stream the rows in order: query the LSH of the seeds and of the rows kept so far, confirm a
    candidate by the Jaccard of the two shingle-hash sets, insert the row if it stays. Only kept
    rows are in the index, so a mode-collapsed run (10k near-identical rows) costs one candidate
    per query, not the whole cluster that bulk-inserting every row would return each time."""
    ds = _datasketch()
    live = [i for i, k in enumerate(keep) if k]
    keys = [-1 - j for j in seed_ids] + live  # seeds get negative keys
    h, rows = _shingle_hashes([seed_toks[j] for j in seed_ids] + [toks[i] for i in live],
                              cfg.shingle)
    sig = _signatures(h, rows, len(keys), cfg.num_perm, cfg.seed)
    bounds = np.searchsorted(rows, np.arange(len(keys) + 1)).tolist()
    row_of = {k: r for r, k in enumerate(keys)}
    # Candidates are verified, so a false positive costs one comparison while a false negative
    # is a missed duplicate: weighted 0.5/0.5, the LSH finds only 40% of pairs at the threshold.
    lsh = ds.MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm,
                     weights=(1 - cfg.recall_weight, cfg.recall_weight))

    def sketch_of(r: int) -> Any:
        return ds.LeanMinHash(seed=cfg.seed, hashvalues=sig[r], scheme="affine32")

    def shingles(r: int) -> np.ndarray:
        return np.unique(h[bounds[r]:bounds[r + 1]])

    # A row sharing no band with any other can neither find nor be found by a query: most rows.
    # Skipping them (found with numpy over the LSH's own bands) changes no result.
    shared = np.zeros(len(keys), bool)
    mult = np.array([pow(MULT, j + 1, 1 << 64) for j in range(cfg.num_perm)], U64)
    for lo, hi in lsh.hashranges:  # equal bands give equal keys (a rare false "shared" is fine)
        band = (sig[:, lo:hi].astype(U64) * mult[:hi - lo]).sum(axis=1, dtype=U64)
        _, inv, cnt = np.unique(band, return_inverse=True, return_counts=True)
        shared |= cnt[inv] > 1
    with lsh.insertion_session() as session:
        for r in np.flatnonzero(shared[:len(seed_ids)]).tolist():
            session.insert(keys[r], sketch_of(r), check_duplication=False)
    for r in (np.flatnonzero(shared[len(seed_ids):]) + len(seed_ids)).tolist():
        i, sketch = keys[r], sketch_of(r)
        best: tuple[float, int] | None = None
        mine = None
        for k in sorted(lsh.query(sketch), key=lambda k: (k >= 0, abs(k))):  # seeds first
            mine = shingles(r) if mine is None else mine
            other = shingles(row_of[k])
            inter = len(np.intersect1d(mine, other, assume_unique=True))
            jac = inter / max(1, len(mine) + len(other) - inter)
            if jac >= cfg.threshold and (best is None or jac > best[0]):
                best = (jac, k)
        if best is None:
            lsh.insert(i, sketch, check_duplication=False)
            continue
        jac, k = best
        kind, ref = ("seed", f"seed #{-1 - k}") if k < 0 else ("near", f"#{k}")
        keep[i], reason[i] = False, f"near duplicate of {ref} (jaccard~{jac:.2f})"
        counts[kind] += 1

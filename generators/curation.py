"""Curation of accepted rows: dedup (within a run and against the seeds) and decontamination.

Why: repeated rows spend a student's training budget on one example; rows that contain evaluation
items inflate the very scores (and so the PGR) the benchmark ranks generators by. Both checks drop
a row with a reason, never silently, so a report can say what curation removed and why.

Tokens (both checks): the lowercased text's runs of word characters (regex ``\\w+``); punctuation
and whitespace only separate, so "It costs $5." and "it costs 5" match and formatting (LaTeX
dollars, quotes, bullets) hides neither a duplicate nor an eval item. Hashes are deterministic
across processes (xxh64 per distinct word; an n-gram hash is a fixed polynomial of its word hashes
through the MurmurHash3 finaliser, computed for all texts at once with numpy), so stored results
compare.

Dedup: exact duplicates share the hash of the normalised text; near duplicates are candidates from
datasketch's ``MinHashLSH`` over word ``shingle``-gram MinHashes, confirmed by the Jaccard of the
two shingle sets. Signatures are computed in bulk with numpy from datasketch's own affine32
permutations (equal to ``MinHash(hashfunc=<shingle hash>)``, ~10x its per-object path). The first
occurrence is kept; a row is compared with the seeds and the earlier kept rows. One changed word
removes ``shingle`` shingles: Jaccard ~0.84 on a 60-word row (caught at 0.8), ~0.4 on 15 words.

Decontamination (Tulu 3 style): an instance is contaminated by an eval item when more than
``threshold`` of the item's tokens are covered by n-grams (n = 8) the two share. An inverted index
maps n-gram hashes to (item, position); all instances' n-grams are looked up at once and coverage
is the length of the union of matched ``[pos, pos + n)`` over the item's length. An item shorter
than n tokens matches only an instance whose whole token sequence equals it (coverage 1.0): a
copied short item is caught, a few common words inside a longer text are not. Empty items are
skipped.
"""

from __future__ import annotations

import gc
import gzip
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from datagen_core.errors import ConfigError, InputError, MissingDependencyError
from datagen_core.records import Instance

_TOKEN = re.compile(r"\w+")
_U64 = np.uint64
_MULT = 0x9E3779B97F4A7C15  # odd: the powers below are distinct odd multipliers
_CHUNK = 1 << 12  # shingles per numpy block of signatures: 2 MiB at 128 perms, cache-sized


def tokenize(text: str) -> list[str]:
    """The tokens both checks compare: lowercased runs of word characters."""
    return _TOKEN.findall(text.lower())


def normalize(text: str) -> str:
    """What exact dedup compares: lowercase, punctuation dropped, whitespace collapsed."""
    return " ".join(tokenize(text))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Millions of small acyclic containers (token lists, LSH buckets) set off the cyclic GC
    again and again, each pass walking the whole heap: a third of dedup's time at 100k rows."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _fmix(h: np.ndarray, s1: int, m1: int, s2: int, m2: int, s3: int) -> np.ndarray:
    t = h.dtype.type
    h = (h ^ (h >> t(s1))) * t(m1)
    h = (h ^ (h >> t(s2))) * t(m2)
    return h ^ (h >> t(s3))


def _fmix64(h: np.ndarray) -> np.ndarray:
    return _fmix(h, 33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """datasketch's pre-mix for the affine32 scheme (MurmurHash3's 32-bit finaliser)."""
    return _fmix(h, 16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)


def _encode(token_lists: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes of all texts, concatenated, and the offsets where each text starts (N + 1)."""
    lengths = np.fromiter(map(len, token_lists), np.int64, len(token_lists))
    offsets = np.zeros(len(token_lists) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = list(chain.from_iterable(token_lists))
    ids = {w: i for i, w in enumerate(dict.fromkeys(flat))}
    word_h = np.fromiter((xxhash.xxh64_intdigest(w.encode()) for w in ids), _U64, len(ids))
    return word_h[np.fromiter(map(ids.__getitem__, flat), np.int64, len(flat))], offsets


def _ngrams(word_h: np.ndarray, offsets: np.ndarray,
            n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash, text, position) of every n-gram of every text; texts shorter than n give none."""
    m = len(word_h) - n + 1
    if m <= 0:
        empty = np.zeros(0, np.int64)
        return np.zeros(0, _U64), empty, empty
    h = np.zeros(m, _U64)
    for j in range(n):
        h += word_h[j:j + m] * _U64(pow(_MULT, n - j, 1 << 64))
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[:m]
    start = np.arange(m)
    ok = start + n <= offsets[rows + 1]
    rows = rows[ok]
    return _fmix64(h[ok]), rows, start[ok] - offsets[rows]


def _text_hash(tokens: list[str]) -> int:
    return xxhash.xxh3_64_intdigest(" ".join(tokens).encode())


# -- dedup --------------------------------------------------------------------------------------
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
    h, rows, _ = _ngrams(*_encode(token_lists), k)
    short = [i for i, t in enumerate(token_lists) if 0 < len(t) < k]
    if short:
        extra = _fmix64(np.array([_text_hash(token_lists[i]) for i in short], _U64))
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
    hv = _fmix32((h >> _U64(32)).astype(np.uint32))
    sig = np.full((n_rows, num_perm), 0xFFFFFFFF, np.uint32)
    buf = np.empty((_CHUNK, num_perm), np.uint32)  # small enough to stay in cache
    for lo in range(0, len(hv), _CHUNK):
        r = rows[lo:lo + _CHUNK]
        first, block = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]), buf[:len(r)]
        np.multiply(hv[lo:lo + _CHUNK, None], a, out=block)
        block += b
        sig[r[first]] = np.minimum(sig[r[first]], np.minimum.reduceat(block, first, axis=0))
    return sig


def dedup(texts: Sequence[str], *, against: Sequence[str] = (),
          config: DedupConfig | None = None) -> DedupResult:
    """Drop exact and near duplicates of earlier kept rows and of the ``against`` rows (seeds)."""
    with _gc_paused():
        return _dedup([tokenize(t) for t in texts], [tokenize(t) for t in against],
                      config or DedupConfig())


def _dedup(toks: list[list[str]], seed_toks: list[list[str]], cfg: DedupConfig) -> DedupResult:
    keep = [True] * len(toks)
    reason: list[str | None] = [None] * len(toks)
    counts = {"exact": 0, "near": 0, "seed": 0}
    seed_first: dict[int, int] = {}
    for j, t in enumerate(seed_toks):
        seed_first.setdefault(_text_hash(t), j)
    seen: dict[int, int] = {}
    for i, t in enumerate(toks):
        if not cfg.exact:
            break
        h = _text_hash(t)
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
    mult = np.array([pow(_MULT, j + 1, 1 << 64) for j in range(cfg.num_perm)], _U64)
    for lo, hi in lsh.hashranges:  # equal bands give equal keys (a rare false "shared" is fine)
        band = (sig[:, lo:hi].astype(_U64) * mult[:hi - lo]).sum(axis=1, dtype=_U64)
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


# -- evaluation sets ----------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSource:
    """A built-in eval set: its file under the eval folder, and where the HF Hub keeps it."""

    path: str
    field: str
    hub: str
    hub_config: str | None
    hub_split: str
    hub_field: str


BUILTIN_EVALS: dict[str, EvalSource] = {
    "gsm8k": EvalSource("gsm8k/test.jsonl", "question", "openai/gsm8k", "main", "test",
                        "question"),
    "math500": EvalSource("math500/test.jsonl", "question", "HuggingFaceH4/MATH-500", None,
                          "test", "problem"),
    # every MBPP split: the local file holds all 974 tasks, and any of them may be evaluated on
    "mbpp": EvalSource("mbpp/mbpp.jsonl", "text", "google-research-datasets/mbpp", "full",
                       "train+validation+test+prompt", "text"),
    "humaneval": EvalSource("humaneval/HumanEval.jsonl.gz", "prompt", "openai/openai_humaneval",
                            None, "test", "prompt"),
    "ifeval": EvalSource("ifeval/input_data.jsonl", "prompt", "google/IFEval", None, "train",
                         "prompt"),
}
_TEXT_FIELDS = ("question", "prompt", "problem", "text", "instruction", "input")


def load_eval_texts(name_or_path: str, *, root: str | os.PathLike[str] | None = None,
                    field: str | None = None) -> list[str]:
    """An eval set's prompts: a built-in name (read from ``root`` or ``$DATAGEN_EVAL_DIR``, else
    from the HF Hub) or a .jsonl / .jsonl.gz path (``field`` or the first question-like one)."""
    src = BUILTIN_EVALS.get(name_or_path)
    if src is not None:
        base = root or os.environ.get("DATAGEN_EVAL_DIR")
        if base:
            return _read_jsonl(Path(base) / src.path, field or src.field)
        return _load_hub(name_or_path, src)
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(f"eval set {name_or_path!r} is neither a built-in "
                         f"({', '.join(BUILTIN_EVALS)}) nor a file")
    return _read_jsonl(path, field)


def _read_jsonl(path: Path, field: str | None) -> list[str]:
    if not path.is_file():
        raise InputError(f"eval file {path} not found (set DATAGEN_EVAL_DIR to the eval folder)")
    with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
        rows: list[dict[str, Any]] = [orjson.loads(line) for line in f if line.strip()]
    if not rows:
        return []
    name = field or next((c for c in _TEXT_FIELDS if c in rows[0]), None)
    if name is None or name not in rows[0]:
        raise InputError(f"{path}: no field {field or '/'.join(_TEXT_FIELDS)!r}; "
                         f"fields are: {', '.join(rows[0])}")
    return [str(r.get(name) or "") for r in rows]


def _load_hub(name: str, src: EvalSource) -> list[str]:  # pragma: no cover - needs the Hub
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError(f"eval set {name!r} from the HF Hub", "datasets") from None
    try:
        ds = datasets.load_dataset(src.hub, src.hub_config, split=src.hub_split)
    except Exception as e:
        raise InputError(f"cannot load eval set {name!r} ({src.hub}) from the HF Hub: {e}; "
                         f"set DATAGEN_EVAL_DIR to a folder holding {src.path}") from None
    return [str(x or "") for x in ds[src.hub_field]]


# -- decontamination ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Contamination:
    eval_set: str
    item: int  # index of the item within its eval set
    coverage: float  # share of the item's tokens covered by shared n-grams


class EvalIndex:
    """An inverted index from n-gram hashes to (eval item, position) over one or more eval sets."""

    def __init__(self, sets: Mapping[str, Sequence[str]], n: int = 8) -> None:
        if n < 1:
            raise ConfigError(f"decontamination n-gram size must be >= 1, got {n}")
        self.n = n
        self.names = list(sets)
        self.sizes = {k: len(v) for k, v in sets.items()}
        self._set_of = np.repeat(np.arange(len(self.names)), [len(v) for v in sets.values()])
        self._local = np.concatenate([np.zeros(0, np.int64)]
                                     + [np.arange(len(v)) for v in sets.values()])
        toks = [tokenize(t) for t in chain.from_iterable(sets.values())]
        self._len = np.array([len(t) for t in toks], np.int64)
        self.skipped = {k: 0 for k in self.names}  # items without a single token
        self._short: dict[int, int] = {}  # whole-text hash -> item, for items shorter than n
        for g, t in enumerate(toks):
            if not t:
                self.skipped[self.names[self._set_of[g]]] += 1
            elif len(t) < n:
                self._short.setdefault(_text_hash(t), g)
        h, item, pos = _ngrams(*_encode(toks), n)
        order = np.argsort(h, kind="stable")
        self._h, self._item, self._pos = h[order], item[order], pos[order]

    @classmethod
    def build(cls, sets: Mapping[str, Sequence[str]], n: int = 8) -> EvalIndex:
        return cls(sets, n)

    @classmethod
    def from_names(cls, names: Sequence[str], n: int = 8,
                   root: str | os.PathLike[str] | None = None) -> EvalIndex:
        return cls({x: load_eval_texts(x, root=root) for x in names}, n)

    def check(self, texts: Sequence[str], threshold: float = 0.5) -> list[Contamination | None]:
        """For each text, its most-covered eval item if coverage > ``threshold``, else None."""
        with _gc_paused():
            return self._check([tokenize(t) for t in texts], threshold)

    def _check(self, toks: list[list[str]], threshold: float) -> list[Contamination | None]:
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"coverage threshold must be in [0, 1), got {threshold}")
        n = self.n
        out: list[Contamination | None] = [None] * len(toks)
        for i, t in enumerate(toks):
            if 0 < len(t) < n and (g := self._short.get(_text_hash(t))) is not None:
                out[i] = self._hit(g, 1.0)
        h, rows, _ = _ngrams(*_encode(toks), n)
        if len(self._h) == 0 or len(h) == 0:
            return out
        at = np.minimum(np.searchsorted(self._h, h), len(self._h) - 1)
        hit = self._h[at] == h
        if not hit.any():  # no shared n-gram at all: nothing below has a row to work on
            return out
        pairs = np.unique(np.stack([rows[hit], h[hit].view(np.int64)], axis=1), axis=0)
        rows, h = pairs[:, 0], pairs[:, 1].view(_U64)  # one per (text, distinct n-gram)
        lo, hi = np.searchsorted(self._h, h), np.searchsorted(self._h, h, side="right")
        cnt = hi - lo
        idx = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt - lo, cnt)
        row, item, pos = np.repeat(rows, cnt), self._item[idx], self._pos[idx]
        o = np.lexsort((pos, item, row))
        row, item, pos = row[o], item[o], pos[o]
        new = np.r_[True, (row[1:] != row[:-1]) | (item[1:] != item[:-1])]
        last = np.r_[new[1:], True]
        # union of the sorted intervals [pos, pos + n): each adds up to the next one's start
        step = np.where(last, n, np.minimum(n, np.r_[pos[1:] - pos[:-1], n]))
        starts = np.flatnonzero(new)
        cov = np.add.reduceat(step, starts) / self._len[item[starts]]
        g_row, g_item = row[starts], item[starts]
        best = np.lexsort((g_item, -cov, g_row))  # per text: highest coverage, then first item
        first = best[np.r_[True, g_row[best][1:] != g_row[best][:-1]]]
        for k in first[cov[first] > threshold]:
            if out[g_row[k]] is None:
                out[g_row[k]] = self._hit(int(g_item[k]), float(cov[k]))
        return out

    def _hit(self, g: int, coverage: float) -> Contamination:
        return Contamination(self.names[self._set_of[g]], int(self._local[g]), round(coverage, 4))

    def summary(self, results: Sequence[Contamination | None]) -> dict[str, int]:
        """How many texts each eval set contaminated (every set listed, zeros included)."""
        counts = {k: 0 for k in self.names}
        for c in results:
            if c is not None:
                counts[c.eval_set] += 1
        return counts


# -- curation -----------------------------------------------------------------------------------
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
    with _gc_paused():
        return _curate(texts, seeds, config or CurationConfig(), eval_index)


def _curate(texts: Sequence[str], seeds: Sequence[str], cfg: CurationConfig,
            eval_index: EvalIndex | None) -> CurationReport:
    toks = [tokenize(t) for t in texts]  # once, for both checks
    if cfg.dedup:
        d = _dedup(toks, [tokenize(t) for t in seeds], cfg.dedup_config())
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

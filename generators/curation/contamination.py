"""Evaluation sets and decontamination against them.

Decontamination (Tulu 3 style): an instance is contaminated by an eval item when more than
``threshold`` of the item's tokens are covered by n-grams (n = 8) the two share. An inverted index
maps n-gram hashes to (item, position); all instances' n-grams are looked up at once and coverage
is the length of the union of matched ``[pos, pos + n)`` over the item's length. An item shorter
than n tokens matches only an instance whose whole token sequence equals it (coverage 1.0): a
copied short item is caught, a few common words inside a longer text are not. Empty items are
skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from datagen_core.errors import ConfigError, InputError, MissingDependencyError
from datagen_core.sources import check_hub, load_rows
from generators.curation.text import (
    U64,
    encode_tokens,
    gc_paused,
    ngram_hashes,
    text_hash,
    tokenize,
)


# -- evaluation sets ----------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSource:
    """A built-in eval set: its file under the eval folder, and where the HF Hub keeps it.
    ``ids`` (a field and the ids kept) cuts a file that holds several splits to the items the
    task scores: decontaminating against a train split would throw away the seeds themselves."""

    path: str
    field: str
    hub: str
    hub_config: str | None
    hub_split: str
    hub_field: str
    ids: tuple[str, range] | None = None


BUILTIN_EVALS: dict[str, EvalSource] = {
    "gsm8k": EvalSource("gsm8k/test.jsonl", "question", "openai/gsm8k", "main", "test",
                        "question"),
    "math500": EvalSource("math500/test.jsonl", "question", "HuggingFaceH4/MATH-500", None,
                          "test", "problem"),
    # the items the mbpp task scores: the test split, task ids 11-510 (the local file holds all
    # 974 tasks; the train split seeds code cells and must not count as contamination)
    "mbpp": EvalSource("mbpp/mbpp.jsonl", "text", "google-research-datasets/mbpp", "full",
                       "test", "text", ids=("task_id", range(11, 511))),
    "humaneval": EvalSource("humaneval/HumanEval.jsonl.gz", "prompt", "openai/openai_humaneval",
                            None, "test", "prompt"),
    "ifeval": EvalSource("ifeval/input_data.jsonl", "prompt", "google/IFEval", None, "train",
                         "prompt"),
}
_TEXT_FIELDS = ("question", "prompt", "problem", "text", "instruction", "input")


def load_eval_texts(name_or_path: str, *, root: str | os.PathLike[str] | None = None,
                    field: str | None = None) -> list[str]:
    """An eval set's prompts: a built-in name (read from ``root`` or ``$DATAGEN_EVAL_DIR``, else
    from the HF Hub), a ``builtin:``/``hf://`` source, or a .jsonl / .jsonl.gz path (``field`` or
    the first question-like one)."""
    src = BUILTIN_EVALS.get(name_or_path)
    if src is not None:
        base = root or os.environ.get("DATAGEN_EVAL_DIR")
        if base:
            return _read_jsonl(Path(base) / src.path, field or src.field, src.ids)
        return _load_hub(name_or_path, src)
    if name_or_path.startswith(("builtin:", "hf://")):  # any seed-style source (winrate's set)
        rows, _ = load_rows(name_or_path)
        return _texts(rows, field, name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(f"eval set {name_or_path!r} is neither a built-in "
                         f"({', '.join(BUILTIN_EVALS)}), a builtin:/hf:// source nor a file")
    return _read_jsonl(path, field)


def _read_jsonl(path: Path, field: str | None, ids: tuple[str, range] | None = None
                ) -> list[str]:
    if not path.is_file():
        raise InputError(f"eval file {path} not found (set DATAGEN_EVAL_DIR to the eval folder)")
    rows, _ = load_rows(str(path))  # .jsonl or .jsonl.gz; a bad line is one clear error
    if ids is not None:
        key, keep = ids
        rows = [r for r in rows if str(r.get(key, "")).isdigit() and int(r[key]) in keep]
    return _texts(rows, field, str(path))


def _texts(rows: list[dict[str, object]], field: str | None, where: str) -> list[str]:
    if not rows:
        return []
    name = field or next((c for c in _TEXT_FIELDS if c in rows[0]), None)
    if name is None or name not in rows[0]:
        raise InputError(f"{where}: no field {field or '/'.join(_TEXT_FIELDS)!r}; "
                         f"fields are: {', '.join(rows[0])}")
    return [str(r.get(name) or "") for r in rows]


def _load_hub(name: str, src: EvalSource) -> list[str]:  # pragma: no cover - needs the Hub
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError(f"eval set {name!r} from the HF Hub", "datasets") from None
    check_hub(f"eval set {name!r} ({src.hub}; or set DATAGEN_EVAL_DIR to a folder holding "
              f"{src.path})")
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
                self._short.setdefault(text_hash(t), g)
        h, item, pos = ngram_hashes(*encode_tokens(toks), n)
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
        with gc_paused():
            return self._check([tokenize(t) for t in texts], threshold)

    def _check(self, toks: list[list[str]], threshold: float) -> list[Contamination | None]:
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"coverage threshold must be in [0, 1), got {threshold}")
        n = self.n
        out: list[Contamination | None] = [None] * len(toks)
        for i, t in enumerate(toks):
            if 0 < len(t) < n and (g := self._short.get(text_hash(t))) is not None:
                out[i] = self._hit(g, 1.0)
        h, rows, _ = ngram_hashes(*encode_tokens(toks), n)
        if len(self._h) == 0 or len(h) == 0:
            return out
        at = np.minimum(np.searchsorted(self._h, h), len(self._h) - 1)
        hit = self._h[at] == h
        if not hit.any():  # no shared n-gram at all: nothing below has a row to work on
            return out
        pairs = np.unique(np.stack([rows[hit], h[hit].view(np.int64)], axis=1), axis=0)
        rows, h = pairs[:, 0], pairs[:, 1].view(U64)  # one per (text, distinct n-gram)
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

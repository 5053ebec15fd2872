"""Tokens and hashes both curation checks share.

Tokens (both checks): the lowercased text's runs of word characters (regex ``\\w+``); punctuation
and whitespace only separate, so "It costs $5." and "it costs 5" match and formatting (LaTeX
dollars, quotes, bullets) hides neither a duplicate nor an eval item. Hashes are deterministic
across processes (xxh64 per distinct word; an n-gram hash is a fixed polynomial of its word hashes
through the MurmurHash3 finaliser, computed for all texts at once with numpy), so stored results
compare.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain

import numpy as np
import xxhash

_TOKEN = re.compile(r"\w+")
U64 = np.uint64
MULT = 0x9E3779B97F4A7C15  # odd: the powers below are distinct odd multipliers
CHUNK = 1 << 12  # shingles per numpy block of signatures: 2 MiB at 128 perms, cache-sized


def tokenize(text: str) -> list[str]:
    """The tokens both checks compare: lowercased runs of word characters."""
    return _TOKEN.findall(text.lower())


def normalize(text: str) -> str:
    """What exact dedup compares: lowercase, punctuation dropped, whitespace collapsed."""
    return " ".join(tokenize(text))


@contextmanager
def gc_paused() -> Iterator[None]:
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


def fmix64(h: np.ndarray) -> np.ndarray:
    return _fmix(h, 33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)


def fmix32(h: np.ndarray) -> np.ndarray:
    """datasketch's pre-mix for the affine32 scheme (MurmurHash3's 32-bit finaliser)."""
    return _fmix(h, 16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)


def encode_tokens(token_lists: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes of all texts, concatenated, and the offsets where each text starts (N + 1)."""
    lengths = np.fromiter(map(len, token_lists), np.int64, len(token_lists))
    offsets = np.zeros(len(token_lists) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = list(chain.from_iterable(token_lists))
    ids = {w: i for i, w in enumerate(dict.fromkeys(flat))}
    word_h = np.fromiter((xxhash.xxh64_intdigest(w.encode()) for w in ids), U64, len(ids))
    return word_h[np.fromiter(map(ids.__getitem__, flat), np.int64, len(flat))], offsets


def ngram_hashes(word_h: np.ndarray, offsets: np.ndarray,
            n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash, text, position) of every n-gram of every text; texts shorter than n give none."""
    m = len(word_h) - n + 1
    if m <= 0:
        empty = np.zeros(0, np.int64)
        return np.zeros(0, U64), empty, empty
    h = np.zeros(m, U64)
    for j in range(n):
        h += word_h[j:j + m] * U64(pow(MULT, n - j, 1 << 64))
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[:m]
    start = np.arange(m)
    ok = start + n <= offsets[rows + 1]
    rows = rows[ok]
    return fmix64(h[ok]), rows, start[ok] - offsets[rows]


def text_hash(tokens: list[str]) -> int:
    return xxhash.xxh3_64_intdigest(" ".join(tokens).encode())


# -- dedup --------------------------------------------------------------------------------------

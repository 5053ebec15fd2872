"""Curation throughput: dedup and decontamination of 100k generated-looking rows, against baselines.

The rows are built deterministically from GSM8K *train* sentences with their numbers re-drawn
(about 60 words each, like a generated math question), and seeded with known problems:
4% exact duplicates of an earlier row (case and punctuation changed), 4% near duplicates (one
word of an earlier row replaced), and 200 GSM8K *test* questions wrapped in a lead-in and a
sign-off. The eval sets are gsm8k (test), math500, mbpp, humaneval and ifeval, read from
``$DATAGEN_EVAL_DIR`` or the shared offline assets.

Measured in the same run:

1. dedup with ``generators.curation.dedup`` (numpy bulk MinHash signatures + datasketch
   ``MinHashLSH``) on every row; then the signature step alone against datasketch's own
   per-object paths on a sample: ``MinHash(num_perm=128).update_batch(shingles)`` per row and
   ``MinHash.bulk(...)`` (both with datasketch's default SHA-1 hash).
2. decontamination with ``EvalIndex`` (an inverted 8-gram index) on every row, against a naive
   pairwise check (each sampled row against each eval item, Python sets, the same coverage rule)
   on a sample, extrapolated; the two must agree on the sample.

    python benchmarks/curation.py             # 100,000 rows
    python benchmarks/curation.py --quick     # 10,000 rows, small baseline samples
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generators.curation import (  # noqa: E402
    BUILTIN_EVALS,
    DedupConfig,
    EvalIndex,
    dedup,
    load_eval_texts,
    minhash_signatures,
    tokenize,
)

ASSETS = Path(os.environ.get("DATAGEN_EVAL_DIR") or ROOT.parent / "shared" / "assets")
N = 8
THRESHOLD = 0.5


def build_rows(n_rows: int, seed: int = 0) -> tuple[list[str], dict[str, dict[int, int]]]:
    """Rows plus the planted problems: kind -> {row: what it copies (row or test item)}."""
    rng = random.Random(seed)
    train = load_eval_texts(str(ASSETS / "gsm8k" / "train.jsonl"))
    test = load_eval_texts(str(ASSETS / "gsm8k" / "test.jsonl"))
    sentences = [s for q in train for s in re.split(r"(?<=[.?!])\s+", q) if len(s.split()) > 3]
    words = sorted({w for s in sentences[:2000] for w in s.split() if w.isalpha()})
    planted: dict[str, dict[int, int]] = {"exact": {}, "near": {}, "contaminated": {}}
    contaminate = set(rng.sample(range(n_rows), min(200, n_rows // 50)))
    rows: list[str] = []
    for i in range(n_rows):
        r = rng.random()
        if i in contaminate:
            item = rng.randrange(len(test))
            planted["contaminated"][i] = item
            rows.append(f"Solve this: {test[item]} Show your work and give the final answer.")
        elif rows and r < 0.04:
            src = rng.randrange(len(rows))
            planted["exact"][i] = src
            rows.append(rows[src].upper() if r < 0.02 else rows[src].replace(".", " !"))
        elif rows and r < 0.08:
            src = rng.randrange(len(rows))
            toks = rows[src].split()
            toks[rng.randrange(len(toks))] = rng.choice(words)
            planted["near"][i] = src
            rows.append(" ".join(toks))
        else:
            parts: list[str] = []
            while sum(len(p.split()) for p in parts) < 55:
                parts.append(re.sub(r"\d+", lambda _: str(rng.randint(2, 999)),
                                    rng.choice(sentences)))
            rows.append(" ".join(parts))
    return rows, planted


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def shingles(text: str, k: int = 5) -> list[bytes]:
    t = tokenize(text)
    return [" ".join(t[i:i + k]).encode() for i in range(max(1, len(t) - k + 1))]


def naive_check(rows: list[str], evals: dict[str, list[str]]) -> list[tuple[str, int] | None]:
    """Every row against every eval item: the pairwise baseline the inverted index replaces."""
    items = []
    for name, texts in evals.items():
        for j, text in enumerate(texts):
            t = tokenize(text)
            if len(t) >= N:
                items.append((name, j, len(t), [tuple(t[p:p + N]) for p in range(len(t) - N + 1)]))
    out: list[tuple[str, int] | None] = []
    for row in rows:
        t = tokenize(row)
        grams = {tuple(t[p:p + N]) for p in range(len(t) - N + 1)}
        best: tuple[float, str, int] | None = None
        for name, j, length, item_grams in items:
            covered: set[int] = set()
            for p, g in enumerate(item_grams):
                if g in grams:
                    covered.update(range(p, p + N))
            cov = len(covered) / length
            if cov > THRESHOLD and (best is None or cov > best[0]):
                best = (cov, name, j)
        out.append(best and (best[1], best[2]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="10,000 rows, small baseline samples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_rows = 10_000 if args.quick else args.rows
    sig_sample, naive_sample = (500, 10) if args.quick else (2000, 40)

    import datasketch  # noqa: F401  (imported before the clocks start: its scipy import is ~0.6 s)

    rows, planted = build_rows(n_rows, args.seed)
    words = sum(len(r.split()) for r in rows) / len(rows)
    evals = {name: load_eval_texts(name, root=ASSETS) for name in BUILTIN_EVALS}
    print(f"rows: {len(rows):,} (~{words:.0f} words each; planted: "
          f"{len(planted['exact'])} exact, {len(planted['near'])} near duplicates, "
          f"{len(planted['contaminated'])} GSM8K test questions)")
    print("eval items: " + ", ".join(f"{k} {len(v)}" for k, v in evals.items())
          + f" (from {ASSETS})")

    # -- dedup ----------------------------------------------------------------------------------
    print("\n== dedup (exact + MinHash LSH, threshold 0.8, 128 perms, word 5-grams) ==")
    res, t_dedup = timed(dedup, rows, config=DedupConfig())
    exact_ok = sum(not res.keep[i] for i in planted["exact"]) / max(1, len(planted["exact"]))
    near_ok = sum(not res.keep[i] for i in planted["near"]) / max(1, len(planted["near"]))
    print(f"datagen dedup:               {t_dedup:7.2f} s  {len(rows) / t_dedup:>9,.0f} rows/s  "
          f"dropped {res.counts}; planted exact caught {exact_ok:.1%}, near {near_ok:.1%}")
    toks = [tokenize(r) for r in rows]
    _, t_sig = timed(minhash_signatures, toks)
    sample = rows[:sig_sample]
    _, t_sample = timed(minhash_signatures, [tokenize(r) for r in sample])
    from datasketch import MinHash, MinHashLSH

    def per_object() -> None:
        for r in sample:
            m = MinHash(num_perm=128)
            m.update_batch(shingles(r))

    _, t_obj = timed(per_object)
    _, t_bulk = timed(MinHash.bulk, [shingles(r) for r in sample], num_perm=128)
    def textbook() -> int:
        """The datasketch README way: a MinHash per row, query the LSH, insert if new."""
        lsh, dropped = MinHashLSH(threshold=0.8, num_perm=128), 0
        for i, r in enumerate(sample):
            m = MinHash(num_perm=128)
            m.update_batch(shingles(r))
            if lsh.query(m):
                dropped += 1
            else:
                lsh.insert(i, m)
        return dropped

    dropped, t_textbook = timed(textbook)
    base = sig_sample / t_textbook
    n_ours = sum(not k for k in res.keep[:sig_sample])  # decided by earlier rows: comparable
    print(f"textbook datasketch dedup:   {len(rows) / base:7.2f} s* {base:>9,.0f} rows/s  "
          f"(*extrapolated from the first {sig_sample} rows: MinHash per row, query, insert; "
          f"dropped {dropped} of them, datagen {n_ours}) -> datagen dedup is "
          f"{len(rows) / t_dedup / base:.1f}x")
    base = sig_sample / t_obj
    print(f"signatures, numpy bulk:      {t_sig:7.2f} s  {len(rows) / t_sig:>9,.0f} rows/s  "
          f"(all rows, tokenised; {sig_sample / t_sample:,.0f} rows/s incl. tokenising on the "
          f"{sig_sample}-row sample)")
    print(f"signatures, MinHash.bulk:    {sig_sample / t_bulk:>19,.0f} rows/s  "
          f"({sig_sample}-row sample, incl. tokenising)")
    print(f"signatures, MinHash per row: {base:>19,.0f} rows/s  ({sig_sample}-row sample) -> "
          f"numpy bulk is {sig_sample / t_sample / base:.0f}x per-object, "
          f"{(sig_sample / t_sample) / (sig_sample / t_bulk):.0f}x MinHash.bulk")

    # -- decontamination ------------------------------------------------------------------------
    print(f"\n== decontamination ({N}-gram coverage > {THRESHOLD}) ==")
    index, t_build = timed(EvalIndex.build, evals, n=N)
    found, t_check = timed(index.check, rows, threshold=THRESHOLD)
    hit = sum(found[i] is not None and found[i].item == it
              for i, it in planted["contaminated"].items())
    extra = sum(1 for i, c in enumerate(found) if c and i not in planted["contaminated"])
    print(f"datagen EvalIndex:           {t_check:7.2f} s  {len(rows) / t_check:>9,.0f} rows/s  "
          f"(index built in {t_build:.2f} s) per set {index.summary(found)}; planted caught "
          f"{hit}/{len(planted['contaminated'])}, other rows flagged {extra} (GSM8K train "
          f"sentences that are templated siblings of test items: real overlaps)")
    rng = random.Random(1)
    pick = rng.sample(sorted(planted["contaminated"]), min(5, len(planted["contaminated"])))
    pick += rng.sample(range(len(rows)), naive_sample - len(pick))
    naive, t_naive = timed(naive_check, [rows[i] for i in pick], evals)
    ours = [found[i] and (found[i].eval_set, found[i].item) for i in pick]
    agree = "agree" if naive == ours else f"DISAGREE on {sum(a != b for a, b in zip(naive, ours))}"
    base = len(pick) / t_naive
    print(f"naive pairwise coverage:     {len(rows) / base:7.0f} s* {base:>9,.1f} rows/s  "
          f"(*extrapolated from {len(pick)} rows x {sum(map(len, evals.values()))} items; "
          f"results {agree}) -> EvalIndex is {len(rows) / t_check / base:,.0f}x")


if __name__ == "__main__":
    main()

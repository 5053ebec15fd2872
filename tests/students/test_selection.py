"""RDS+ selection: the round-robin, the embedder (a tiny real Llama), and a planted pool on which
RDS+ picks the near-target rows first and beats random."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from datagen_core.errors import ConfigError
from students.selection import random_select, rds_select
from tests.tiny_embedder import WORDS, build_tiny_embedder

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


def _unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_targets_take_turns_and_no_row_is_taken_twice():
    # rows 0, 1 are near target 0; rows 2, 3 near target 1; row 4 near neither
    pool = _unit([[1, 0.1, 0], [1, 0.2, 0], [0.1, 1, 0], [0.2, 1, 0], [0, 0, 1]])
    target = _unit([[1, 0, 0], [0, 1, 0]])
    picks = rds_select(pool, target, 4)
    assert [p.index for p in picks] == [0, 2, 1, 3]
    assert [p.target for p in picks] == [0, 1, 0, 1]
    assert [p.round for p in picks] == [0, 0, 1, 1]
    # the same best row for both targets is taken once; the second target moves on
    same = rds_select(_unit([[1, 1, 0], [1, 0, 0], [0, 1, 0]]), target, 3)
    assert sorted(p.index for p in same) == [0, 1, 2]


def test_a_large_pool_scanned_in_chunks_and_deepened_gives_the_full_scan_result():
    rng = np.random.default_rng(0)
    pool = _unit(rng.normal(size=(500, 8)).tolist())
    # three near-identical targets: their short lists collide, so the scan must go deeper
    target = _unit((np.ones((3, 8)) + rng.normal(scale=0.01, size=(3, 8))).tolist())
    full = rds_select(pool, target, 60, chunk=10_000)
    chunked = rds_select(pool, target, 60, chunk=37)
    assert [p.index for p in chunked] == [p.index for p in full]
    assert len({p.index for p in full}) == 60


def test_groups_take_turns_by_task_each_scoring_by_its_best_item():
    pool = _unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1], [0, 0, 1]])
    target = _unit([[1, 0, 0], [1, 0.05, 0], [0, 0, 1]])  # task 0: two items, task 1: one
    picks = rds_select(pool, target, 3, groups=[0, 0, 1])
    assert [p.target for p in picks] == [0, 1, 0]
    assert picks[0].index == 0 and picks[1].index == 4


def test_bad_selections_are_one_clear_line():
    pool = _unit([[1, 0], [0, 1]])
    with pytest.raises(ConfigError, match="k=3 rows from a pool of 2"):
        rds_select(pool, pool, 3)
    with pytest.raises(ConfigError, match="differ in size"):
        rds_select(pool, _unit([[1, 0, 0]]), 1)
    with pytest.raises(ConfigError, match="k must be at least 1"):
        random_select(5, 0)
    assert [p.index for p in random_select(10, 4, seed=3)] == \
        [p.index for p in random_select(10, 4, seed=3)]


def test_weighted_mean_ignores_padding_and_is_unit_length(tiny: Path):
    from students.embed import Embedder

    emb = Embedder(str(tiny), batch_size=4)
    alone = emb.embed(["apple river"])
    batched = emb.embed(["apple river", " ".join(WORDS[:40]), "sea sky"])
    assert np.allclose(alone[0], batched[0], atol=1e-5)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_scratch_base_is_refused():
    from students.embed import resolve_embedder

    with pytest.raises(ConfigError, match="no pretrained representation"):
        resolve_embedder("scratch")


def planted_pool(seed: int = 0) -> tuple[list[str], list[str], set[int]]:
    """40 random-word rows, plus two near copies of each of 3 target texts (planted)."""
    rng = random.Random(seed)
    targets = ["write a poem about the sea and the sky", "what is seven plus three",
               "bread flour oven recipe for the king"]
    pool = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(40)]
    planted = set()
    for t in targets:
        for variant in (f"{t} a", f"{t} the"):
            planted.add(len(pool))
            pool.append(variant)
    order = list(range(len(pool)))
    rng.shuffle(order)
    return [pool[i] for i in order], targets, {order.index(i) for i in planted}


def test_rds_picks_the_planted_near_target_rows_first_and_beats_random(tiny: Path):
    from students.embed import Embedder, chat_text

    pool, targets, planted = planted_pool()
    emb = Embedder(str(tiny))
    as_chat = [chat_text([{"role": "user", "content": t}], emb.eos) for t in pool]
    vecs = emb.embed(as_chat)
    tvecs = emb.embed([chat_text([{"role": "user", "content": t}], emb.eos) for t in targets])
    picks = rds_select(vecs, tvecs, len(planted))
    assert {p.index for p in picks} == planted  # every planted row, and before any other
    rds_hits = len({p.index for p in rds_select(vecs, tvecs, 12)} & planted)
    random_hits = np.mean([len({p.index for p in random_select(len(pool), 12, s)} & planted)
                           for s in range(50)])
    assert rds_hits == len(planted) and random_hits < 3  # 12 of 46 at random: ~1.6 expected

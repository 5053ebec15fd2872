"""The ``pairs`` intrinsic family on hand-built pairs: every figure is worked out by hand below."""

from __future__ import annotations

import pytest

from datagen_core.records import Instance, Message, Pair
from datagen_core.workspace import Workspace
from metrics.intrinsic import compute_intrinsic, read_values
from metrics.pair_metrics import margin_histogram, order_consistent, pair_values, signals
from metrics.store import Store
from tests.metrics.planting import plant_run


def pair(i: int, chosen: str, rejected: str, margin: float | None, **evidence) -> Pair:
    return Pair(index=i, pair_id=f"p{i}", prompt=[Message(role="user", content=f"q{i}")],
                chosen=[Message(role="assistant", content=chosen)],
                rejected=[Message(role="assistant", content=rejected)],
                attribute=evidence.pop("attribute", "overall"), margin=margin, evidence=evidence)


def ab(a: str, b: str) -> dict:
    return {"outcome": "kept", "ab": {"better": a}, "ba": {"better": b}}


# p0: chosen longer in chars (12 > 3) and words (3 > 2); aspects agree; both orders agree; the
#     reward model agrees.
# p1: chosen shorter; aspects conflict (helpfulness +2, honesty -1); the judge picked A in both
#     orders (position-inconsistent); the reward model disagrees.
# p2: chosen longer in chars (10 > 5) but not in words (1 < 3); aspects agree (+1, 0); no
#     both-order check, no reward.
# p3: attribute-variants style: one attribute scored in both orders; same length; consistent.
PAIRS = [
    pair(0, "aaaa bbbb cc", "x y", 2.0, pairwise=ab("A", "B"),
         chosen_ratings={"helpfulness": 5, "honesty": 4},
         rejected_ratings={"helpfulness": 3, "honesty": 2},
         reward={"model": "rm", "chosen": 1.0, "rejected": 0.5}),
    pair(1, "short", "much longer text", 0.5, pairwise=ab("A", "A"),
         chosen_ratings={"helpfulness": 4, "honesty": 3},
         rejected_ratings={"helpfulness": 2, "honesty": 4},
         reward={"model": "rm", "chosen": 0.2, "rejected": 0.9}),
    pair(2, "abcdefghij", "a b c", 1.0, chosen_ratings={"helpfulness": 5, "honesty": 5},
         rejected_ratings={"helpfulness": 4, "honesty": 5}),
    pair(3, "q3?", "q4?", 3.0, attribute="clarity", ab={"better": "A"}, ba={"better": "B"},
         chosen_scores=[5, 4], rejected_scores=[2, 3]),
]


def test_values_of_hand_built_pairs():
    v = pair_values(PAIRS, excluded=[False], n_position_excluded=1)
    # margins 0.5, 1, 2, 3: numpy's linear quantiles put p25 at 0.5 + 0.75 * 0.5
    assert v["pairs"] == (4, 4)
    assert v["margin_min"] == (0.5, 4) and v["margin_max"] == (3.0, 4)
    assert v["margin_p25"] == (0.875, 4) and v["margin_median"] == (1.5, 4)
    assert v["margin_p75"] == (2.25, 4) and v["margin_mean"] == (1.625, 4)
    assert v["chosen_longer_chars"] == (0.5, 4)
    assert v["chosen_longer_words"] == (0.25, 4)
    # checks: p0 yes, p1 no, p3 yes, and one excluded candidate no
    assert v["both_order_consistency"] == (0.5, 4)
    assert v["position_inconsistent_excluded"] == (1, 1)
    assert v["aspect_conflict_rate"] == (pytest.approx(1 / 3), 3)
    assert v["judge_rm_agreement"] == (0.5, 2)
    assert v["chosen_mean:helpfulness"] == (pytest.approx(14 / 3), 3)
    assert v["rejected_mean:helpfulness"] == (3.0, 3)
    assert v["chosen_mean:honesty"] == (4.0, 3)
    assert v["rejected_mean:honesty"] == (pytest.approx(11 / 3), 3)
    assert v["chosen_mean:clarity"] == (4.5, 1) and v["rejected_mean:clarity"] == (2.5, 1)


def test_without_reward_scores_agreement_is_not_available():
    v = pair_values(PAIRS[2:])
    assert v["judge_rm_agreement"] == (None, 0)
    picked_by_rm = pair(9, "a", "b", 1.0, rule="reward-best-vs-random-lower",
                        reward={"model": "rm", "chosen": 2.0, "rejected": 1.0})
    assert pair_values([picked_by_rm])["judge_rm_agreement"] == (None, 0)
    assert v["both_order_consistency"] == (1.0, 1)  # only p3 was checked


def test_signals_and_order_consistency():
    assert order_consistent("A", "B") and order_consistent("tie", "tie")
    assert order_consistent("A", "A") is False and order_consistent("B", "B") is False
    assert order_consistent("A", None) is None
    s = signals(PAIRS[1])
    assert s.aspect_diffs == {"helpfulness": 2, "honesty": -1} and s.aspect_conflict == 0.5
    assert s.order_consistent is False and s.rm_agrees is False
    assert signals(PAIRS[3]).aspect_conflict is None  # one aspect: nothing to conflict with


@pytest.fixture
def store() -> Store:
    return Store(Workspace.resolve().ensure().db_path)


def test_computed_from_the_store_with_excluded_candidates(store: Store):
    plant_run(store, "run-p", [], method="preference-pairs")
    inconsistent = {"outcome": "position-inconsistent (both orders picked A)",
                    "ab": {"better": "A"}, "ba": {"better": "A"}}
    reason = "pairwise check failed: position-inconsistent (both orders picked A)"
    store.write_instances("run-p", [  # two completions of one excluded prompt, one kept answer
        Instance(index=i, instance_id=f"i{i}", messages=[Message(role="user", content="q")],
                 valid=False, reject_reason=reason,
                 meta={"row_id": "r9", "pairwise": inconsistent}) for i in range(2)] + [
        Instance(index=2, instance_id="i2", messages=[Message(role="user", content="q")],
                 meta={"row_id": "r0", "pairwise": ab("A", "B")})])
    store.write_pairs("run-p", PAIRS)
    res = compute_intrinsic(store, "run-p", "pairs")
    assert res.computed
    assert res.values["position_inconsistent_excluded"] == (1, 1)
    assert res.values["both_order_consistency"] == (0.5, 4)  # p0, p1, p3 and the one prompt
    assert read_values(store, "run-p")["judge_rm_agreement"] == (0.5, 2)
    # margins 0.5, 1, 2, 3 in five equal buckets from 0.5 to 3
    assert margin_histogram(store, "run-p") == [(0.5, 1.0, 1), (1.0, 1.5, 1), (1.5, 2.0, 0),
                                                (2.0, 2.5, 1), (2.5, 3.0, 1)]
    assert not compute_intrinsic(store, "run-p", "pairs").computed
    # a reward model scoring p2 later changes only evidence: the family is computed again
    scored = [p.model_copy(update={"evidence": {**p.evidence, "reward": {
        "model": "rm", "chosen": 3.0, "rejected": 1.0}}}) if p.index == 2 else p for p in PAIRS]
    store.write_pairs("run-p", scored)
    again = compute_intrinsic(store, "run-p", "pairs")
    assert again.computed and again.values["judge_rm_agreement"] == (pytest.approx(2 / 3), 3)


def test_a_run_without_pairs(store: Store):
    plant_run(store, "run-s", [("q", "a", True, None)])
    res = compute_intrinsic(store, "run-s", "pairs")
    assert res.values["pairs"] == (0, 0) and res.values["margin_mean"] == (None, 0)
    assert margin_histogram(store, "run-s") == []


def test_pair_metrics_beside_pgr_on_the_leaderboard(store: Store):
    from datagen.cli.metrics import leaderboard_table
    from metrics.leaderboard import cells, overall
    from tests.metrics.planting import plant_benchmark

    runs = plant_benchmark(store, n_items=20)
    rid = next(iter(runs.values()))
    store.write_pairs(rid, PAIRS)
    compute_intrinsic(store, rid, "pairs")
    rows = cells(store)
    mine = next(r for r in rows if r["run_id"] == rid)
    assert mine["chosen_longer_chars"] == 0.5 and mine["judge_rm_agreement"] == 0.5
    assert mine["margin_median"] == 1.5
    assert all(r["chosen_longer_chars"] is None for r in rows if r["run_id"] != rid)
    gen = next(r for r in overall(store) if r["generator"] == mine["generator"])
    assert gen["chosen_longer_chars"] == 0.5  # the mean over its cells that have pairs
    table, _ = leaderboard_table(rows, "cell", 240)
    assert [c.header for c in table.columns][-7:-3] == ["margin", "longer", "consistent",
                                                        "judge~RM"]

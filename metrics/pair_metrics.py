"""Intrinsic metrics of preference pairs (the ``pairs`` family), and the per-pair reliability
signals that both these metrics and human routing (:mod:`datagen.routing`) read.

What a pair set looks like before any student is trained on it, from the evidence the methods
store with every pair (``preference-pairs``: per-aspect ratings, both-order verdicts, reward
scores; ``attribute-variants``: both-order verdicts and scores; ``multi-attribute-edit``: the
constraint reward's margin):

- **margin distribution**: min, quartiles, mean and max of ``Pair.margin`` (the judge's gap,
  chosen minus rejected, in the method's own units); every pair's margin is also stored as an
  item of ``margin_mean``, so a histogram can be drawn from the store (:func:`margin_histogram`).
- **length bias**: the share of pairs whose chosen side is longer than the rejected one, in
  characters and in whitespace-separated words. LM judges favour longer answers (AlpacaEval's
  length-controlled win rate exists because of it); a rate far above 0.5 says the pair set
  teaches length as much as quality.
- **both-order consistency**: of the pairs a judge compared in both orders (A/B and B/A), the
  share whose two verdicts name the same answer (or both call a tie). Methods keep only
  consistent pairs, so the candidates they excluded are read from the run's rejected instances
  where they record the verdicts (``preference-pairs``' ``meta.pairwise``); and the number of
  prompts excluded as position-inconsistent (the judge picked the same position both times).
- **judge vs reward model**: the share of pairs whose reward-model scores (``evidence.reward``)
  also put chosen above rejected; absent (n/a) when no reward model scored the pairs, or when
  the reward model itself picked them (``preference-pairs`` with ``scorer: reward-model``).
- **per-aspect means** of the chosen and rejected sides (``chosen_mean:<aspect>``,
  ``rejected_mean:<aspect>``), and ``aspect_conflict_rate``: the share of multi-aspect pairs
  where at least one aspect rates the rejected side higher, i.e. the mean hides a trade-off.

All of it is plain Python over the run's pairs (a pair set is thousands, not millions, of rows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from datagen_core.records import Pair
from metrics.intrinsic import Metric, MetricConfig, MetricContext, MetricResult, read_items
from metrics.store import Store

VERDICTS = ("A", "B", "tie")


@dataclass(frozen=True)
class PairSignals:
    """What a pair's evidence says about how sure its label is. ``None`` = not measured."""

    margin: float | None
    chosen_chars: int
    rejected_chars: int
    chosen_words: int
    rejected_words: int
    #: both-order verdicts name the same answer (True), different ones (False), or no check
    order_consistent: bool | None
    #: per aspect, chosen rating minus rejected rating
    aspect_diffs: dict[str, float]
    chosen_ratings: dict[str, float]
    rejected_ratings: dict[str, float]
    #: the reward model also scores chosen above rejected (None: no reward scores)
    rm_agrees: bool | None

    @property
    def aspect_conflict(self) -> float | None:
        """Share of aspects rating the rejected side strictly higher (None below 2 aspects)."""
        if len(self.aspect_diffs) < 2:
            return None
        return sum(d < 0 for d in self.aspect_diffs.values()) / len(self.aspect_diffs)


def _text(messages: Sequence[Any]) -> str:
    return "\n".join(m.content for m in messages if m.role == "assistant") or "\n".join(
        m.content for m in messages)


def verdict_pair(evidence: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """(A/B verdict, B/A verdict) from ``evidence.pairwise`` (preference-pairs) or
    ``evidence.ab``/``ba`` (attribute-variants), in both methods with chosen shown as A first."""
    src = evidence.get("pairwise") if isinstance(evidence.get("pairwise"), dict) else evidence
    assert isinstance(src, Mapping)
    ab, ba = src.get("ab"), src.get("ba")
    if not isinstance(ab, Mapping) or not isinstance(ba, Mapping):
        return None
    return ab.get("better"), ba.get("better")


def order_consistent(ab: Any, ba: Any) -> bool | None:
    """Whether two verdicts on swapped orders name the same answer; None if one is unreadable."""
    if ab not in VERDICTS or ba not in VERDICTS:
        return None
    return (ab, ba) in (("A", "B"), ("B", "A"), ("tie", "tie"))


def _ratings(evidence: Mapping[str, Any], attribute: str | None, side: str) -> dict[str, float]:
    got = evidence.get(f"{side}_ratings")
    if isinstance(got, Mapping):
        return {str(k): float(v) for k, v in got.items() if isinstance(v, int | float)}
    scores = evidence.get(f"{side}_scores")  # attribute-variants: the attribute, both orders
    if isinstance(scores, list) and attribute:
        vals = [float(v) for v in scores if isinstance(v, int | float)]
        if vals:
            return {attribute: sum(vals) / len(vals)}
    return {}


def _rm_agrees(evidence: Mapping[str, Any]) -> bool | None:
    rm = evidence.get("reward")
    if not isinstance(rm, Mapping) or str(evidence.get("rule", "")).startswith("reward"):
        return None  # no reward scores, or the reward model itself picked the pair
    c, r = rm.get("chosen"), rm.get("rejected")
    if not isinstance(c, int | float) or not isinstance(r, int | float):
        return None
    return c > r


def signals(pair: Pair) -> PairSignals:
    """The reliability signals of one pair, from its sides and evidence."""
    ev = pair.evidence
    chosen, rejected = _text(pair.chosen), _text(pair.rejected)
    verdicts = verdict_pair(ev)
    cr, rr = _ratings(ev, pair.attribute, "chosen"), _ratings(ev, pair.attribute, "rejected")
    return PairSignals(
        margin=pair.margin, chosen_chars=len(chosen), rejected_chars=len(rejected),
        chosen_words=len(chosen.split()), rejected_words=len(rejected.split()),
        order_consistent=None if verdicts is None else order_consistent(*verdicts),
        aspect_diffs={a: cr[a] - rr[a] for a in cr if a in rr},
        chosen_ratings=cr, rejected_ratings=rr, rm_agrees=_rm_agrees(ev))


def excluded_checks(store: Store, run_id: str) -> tuple[list[bool | None], int]:
    """Both-order checks of candidates a method excluded (one per prompt, from rejected
    instances that record ``meta.pairwise``), and how many prompts were excluded as
    position-inconsistent (by their reject reason)."""
    with store.connect() as con:
        rows = con.execute(
            "SELECT coalesce(json_extract_string(meta, '$.row_id'), "
            "json_extract_string(meta, '$.row'), CAST(idx AS VARCHAR)) AS prompt, "
            "any_value(json_extract(meta, '$.pairwise')), "
            "bool_or(reject_reason LIKE '%position-inconsistent%') "
            "FROM instances WHERE run_id = ? AND NOT valid AND (reject_reason LIKE "
            "'%position-inconsistent%' OR (json_extract(meta, '$.pairwise') IS NOT NULL AND "
            "json_type(json_extract(meta, '$.pairwise')) = 'OBJECT' AND "
            "json_extract_string(meta, '$.pairwise.outcome') <> 'kept')) GROUP BY 1",
            [run_id]).fetchall()
    checks: list[bool | None] = []
    for _, pw, _pos in rows:
        got = verdict_pair({"pairwise": orjson.loads(pw)}) if pw else None
        if got is not None:
            checks.append(order_consistent(*got))
    return checks, sum(1 for r in rows if r[2])


def _quantiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    q = np.quantile(np.asarray(values, dtype=float), [0.0, 0.25, 0.5, 0.75, 1.0])
    return {"margin_min": float(q[0]), "margin_p25": float(q[1]), "margin_median": float(q[2]),
            "margin_p75": float(q[3]), "margin_max": float(q[4]),
            "margin_mean": float(np.mean(values))}


def share(flags: Sequence[bool | None]) -> tuple[float | None, int]:
    got = [f for f in flags if f is not None]
    return (sum(got) / len(got) if got else None), len(got)


def pair_values(pairs: Sequence[Pair], excluded: Sequence[bool | None] = (),
                n_position_excluded: int = 0) -> dict[str, tuple[float | None, int]]:
    """Every ``pairs`` metric as (value, n items it is over); pure, so tests give exact pairs."""
    sig = [signals(p) for p in pairs]
    margins = [s.margin for s in sig if s.margin is not None]
    values: dict[str, tuple[float | None, int]] = {"pairs": (float(len(pairs)), len(pairs))}
    q = _quantiles(margins) if margins else {}
    for name in ("margin_min", "margin_p25", "margin_median", "margin_p75", "margin_mean",
                 "margin_max"):
        values[name] = (q.get(name), len(margins))
    values["chosen_longer_chars"] = share([s.chosen_chars > s.rejected_chars for s in sig])
    values["chosen_longer_words"] = share([s.chosen_words > s.rejected_words for s in sig])
    values["both_order_consistency"] = share([s.order_consistent for s in sig] + list(excluded))
    values["position_inconsistent_excluded"] = (float(n_position_excluded), n_position_excluded)
    conflicts = [s.aspect_conflict for s in sig if s.aspect_conflict is not None]
    values["aspect_conflict_rate"] = share([c > 0 for c in conflicts])
    values["judge_rm_agreement"] = share([s.rm_agrees for s in sig])
    aspects = sorted({a for s in sig for a in (*s.chosen_ratings, *s.rejected_ratings)})
    for a in aspects:
        for side in ("chosen", "rejected"):
            got = [(s.chosen_ratings if side == "chosen" else s.rejected_ratings).get(a)
                   for s in sig]
            vals = [v for v in got if v is not None]
            values[f"{side}_mean:{a}"] = (sum(vals) / len(vals) if vals else None, len(vals))
    return values


class PairsConfig(MetricConfig):
    pass


class PairsMetric(Metric):
    """Margin distribution, length bias, both-order consistency, judge vs reward model and
    per-aspect means of a run's preference pairs; see the module doc. A run without pairs gets
    ``pairs`` = 0 and every other value missing."""

    name = "pairs"
    version = "1"
    outputs = ("pairs", "margin_min", "margin_p25", "margin_median", "margin_p75",
               "margin_mean", "margin_max", "chosen_longer_chars", "chosen_longer_words",
               "both_order_consistency", "position_inconsistent_excluded",
               "aspect_conflict_rate", "judge_rm_agreement")
    Config = PairsConfig

    def fingerprint_extra(self, con: Any, run_id: str) -> str:
        """Evidence is not in the shared data fingerprint (pairs hash their texts only); a
        reward model scoring the pairs afterwards changes it and must recompute this family."""
        row = con.execute("SELECT count(*), sum(hash(idx, evidence, margin)::HUGEINT) FROM pairs "
                          "WHERE run_id = ?", [run_id]).fetchone()
        return str(tuple(row or ()))

    def compute(self, ctx: MetricContext) -> MetricResult:
        pairs = ctx.store.read_pairs(ctx.run_id)
        excluded, n_pos = excluded_checks(ctx.store, ctx.run_id)
        values = pair_values(pairs, excluded, n_pos)
        items = {"margin_mean": [(p.index, p.margin, None if p.margin is not None else
                                  "no margin") for p in pairs]}
        return MetricResult(values=values, items=items)


def margin_histogram(store: Store, run_id: str, bins: int = 5
                     ) -> list[tuple[float, float, int]]:
    """(low, high, count) buckets of the margins stored by the latest ``pairs`` computation,
    equal-width between the smallest and largest margin (numpy's histogram)."""
    import numpy as np

    margins = [r["value"] for r in read_items(store, run_id, "margin_mean")
               if r["value"] is not None]
    if not margins:
        return []
    counts, edges = np.histogram(np.asarray(margins, dtype=float), bins=bins)
    return [(float(edges[i]), float(edges[i + 1]), int(c)) for i, c in enumerate(counts)]


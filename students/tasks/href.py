"""HREF-style judging: per task category, the judging method people agree with most, and a
composite win rate with bootstrap CIs.

HREF (Lyu et al. 2024, "HREF: Human Response-Guided Evaluation of Instruction Following in
Language Models", arXiv 2412.15524; code github.com/allenai/href) found that showing the judge a
human-written answer raises its agreement with human judges (by up to 3.2 points), and that no
one method is best everywhere: for each of its 11 categories (4,258 human-written instructions)
it uses the method that agreed most with human preference labels on a development set. The
methods compared here are the paper's three families:

- ``judge-reference``: the LM judge compares the two answers and is shown the human answer as a
  guide (the ``winrate`` task's ``guide_field``);
- ``judge``: the same judge without the human answer;
- ``embedding``: no judge; the answer whose embedding is closer (cosine) to the human answer's
  wins, equal similarity is a tie (the paper embeds with a sentence encoder; here the student's
  base model pools its hidden states, :mod:`students.embed`).

Agreement is computed as in HREF's ``calculate_human_agreement_rate.py``: a method's preference
on a pair is compared, leave-one-out, with the mode of the other annotators' labels, averaged
over annotators and pairs (one label per pair reduces this to plain accuracy). Where several
labels tie for the mode the code draws one at random; here the expected value of that draw is
used, so a choice never depends on a seed. A judge's preference on a pair is taken from both
orders, as the ``winrate`` task scores (it prefers a side only when the two orders, un-swapped,
lean the same way); an unreadable verdict counts as a disagreement. Equal agreement keeps the
earlier method in the order above (HREF's default is the reference-guided judge).

The composite is HREF's "Average": the mean over *all* items of (win + tie / 2) against the
baseline answer, so a category weighs by its number of items; its 95% interval is a percentile
bootstrap that resamples items within each category (a category's share of the set is fixed by
design, not sampled).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from datagen_core.errors import InputError

Method = Literal["judge-reference", "judge", "embedding"]
METHODS: tuple[Method, ...] = ("judge-reference", "judge", "embedding")
LABELS = ("a", "b", "tie")
_INT_LABELS = {1: "a", 2: "b", 0: "tie"}  # AlpacaEval's preference codes (1.5 is also a tie)


@dataclass
class AgreementRow:
    """One human-labelled pair: which of two answers people preferred, and the human answer."""

    instruction: str
    a: str
    b: str
    labels: list[str]
    category: str
    human: str


@dataclass
class Choice:
    """Per category: every candidate's agreement and the method chosen."""

    agreement: dict[str, dict[str, float]] = field(default_factory=dict)
    n_pairs: dict[str, int] = field(default_factory=dict)
    chosen: dict[str, str] = field(default_factory=dict)


def label(value: Any, where: str) -> str:
    """A preference as ``a``, ``b`` or ``tie`` (also 1, 2, 0 / 1.5, or ``A``/``B``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == 1.5:
            return "tie"
        if value in _INT_LABELS:
            return _INT_LABELS[int(value)]
    text = str(value).strip().lower()
    if text in LABELS:
        return text
    raise InputError(f"{where}: preference {value!r} is not a, b or tie (or 1, 2, 0)")


def read_agreement(rows: list[dict[str, Any]], where: str) -> list[AgreementRow]:
    """Rows of an agreement set: instruction, two answers (``output_a``/``output_b`` or
    ``response_a``/``response_b``), the people's preference (``preference``, one label, or
    ``annotations``, a list), ``category``, and the human answer (``reference``)."""
    out = []
    for i, r in enumerate(rows):
        at = f"{where} row {i}"

        def get(*names: str, r: dict[str, Any] = r, at: str = at) -> Any:
            for n in names:
                if r.get(n) is not None:
                    return r[n]
            raise InputError(f"{at}: no {' or '.join(names)} field (an agreement row has "
                             "instruction, output_a, output_b, preference, category, reference)")

        raw = get("annotations", "preference")
        labels = [label(v, at) for v in (raw if isinstance(raw, list) else [raw])]
        if not labels:
            raise InputError(f"{at}: no preference label")
        out.append(AgreementRow(str(get("instruction")), str(get("output_a", "response_a")),
                                str(get("output_b", "response_b")), labels,
                                str(get("category")), str(get("reference", "human_reference"))))
    if not out:
        raise InputError(f"{where}: the agreement set has no rows")
    return out


def agreement(predicted: str | None, labels: Sequence[str]) -> float:
    """HREF's leave-one-out agreement of one prediction with a pair's labels: for each
    annotator, whether the prediction equals the mode of the others' labels (a tie of modes
    counts as the chance of drawing the prediction); one label: whether they are equal."""
    if predicted is None:
        return 0.0
    if len(labels) == 1:
        return float(predicted == labels[0])
    total, labels = 0.0, list(labels)
    for i in range(len(labels)):
        counts = Counter(labels[:i] + labels[i + 1:])
        top = max(counts.values())
        modes = [k for k, v in counts.items() if v == top]
        total += (predicted in modes) / len(modes)
    return total / len(labels)


def preference(score_a: float | None) -> str | None:
    """A side from a's mean outcome over the judge's two orders (0.5 either way is a tie)."""
    if score_a is None:
        return None
    return "a" if score_a > 0.5 else "b" if score_a < 0.5 else "tie"


def embedding_preference(sim_a: float, sim_b: float) -> str:
    return "a" if sim_a > sim_b else "b" if sim_b > sim_a else "tie"


def choose(rows: Sequence[AgreementRow], predictions: Mapping[str, Sequence[str | None]],
           candidates: Sequence[str]) -> Choice:
    """Per category, the candidate with the highest mean agreement (earlier wins ties)."""
    choice = Choice()
    by_cat: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_cat.setdefault(r.category, []).append(i)
    for cat, idx in by_cat.items():
        rates = {m: sum(agreement(predictions[m][i], rows[i].labels) for i in idx) / len(idx)
                 for m in candidates}
        choice.agreement[cat] = rates
        choice.n_pairs[cat] = len(idx)
        choice.chosen[cat] = max(candidates, key=lambda m: (rates[m], -candidates.index(m)))
    return choice


def composite(scores: Sequence[float], categories: Sequence[str], n_boot: int = 1000,
              seed: int = 0) -> dict[str, float]:
    """The pooled mean, per-category means, and a 95% bootstrap interval of the pooled mean
    with items resampled within their category."""
    import numpy as np

    nan = float("nan")
    if not scores:
        return {"win_rate": nan, "win_rate_ci_low": nan, "win_rate_ci_high": nan}
    values = np.asarray(scores, dtype=np.float64)
    cats = np.asarray(categories)
    out: dict[str, float] = {"win_rate": float(values.mean())}
    rng = np.random.default_rng(seed)
    sums = np.zeros(n_boot)
    for cat in sorted(set(categories)):
        v = values[cats == cat]
        out[f"win_rate/{cat}"] = float(v.mean())
        out[f"items/{cat}"] = float(len(v))
        sums += v[rng.integers(0, len(v), size=(n_boot, len(v)))].sum(axis=1)
    boot = sums / len(values)
    out["win_rate_ci_low"], out["win_rate_ci_high"] = (float(np.quantile(boot, 0.025)),
                                                       float(np.quantile(boot, 0.975)))
    return out

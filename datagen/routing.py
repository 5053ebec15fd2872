"""Route to people the preference pairs an LM judge is least reliable on, read their labels back,
and measure how often the judge agreed with them.

The idea is Hybrid Preferences (Miranda et al. 2024, arXiv 2410.19133; code
allenai/hybrid-preferences): human annotation is expensive and LM annotation is cheap but wrong
on some kinds of instances, so spend a human budget only where the LM is least reliable and keep
LM labels for the rest. There, each instance is described by binary features (length and
prompt-length terciles from percentile ranks, prompt categories...), a regressor learns what
routing instances with each feature gains downstream, and ``topk`` routing takes the budget's
share of instances with the highest summed gain (``int(budget * n)`` of them when the budget is
a share). Here the features are signals of the judge's own unreliability that a datagen pair
carries (:func:`metrics.pair_metrics.signals`), each in [0, 1], higher = less reliable:

- ``order_disagree``: 1 when the judge's A/B and B/A verdicts name different answers, else 0;
- ``small_margin``: 1 minus the percentile rank of the pair's margin within its run (rank 0 =
  the smallest margin, ties share their mean rank), so 1 is the run's closest call; percentile
  ranks, as in the paper, make runs with different margin scales comparable;
- ``aspect_conflict``: the share of rated aspects that prefer the rejected side;
- ``rm_disagree``: 1 when a reward model scores the rejected side at least as high, else 0.

A feature a pair does not have (no both-order check, fewer than two aspects, no reward model)
is missing, not zero. **The score** is, without human labels, the mean of the features a pair
has (``fixed``). Once people have labelled pairs (of this run or any other in the workspace;
at least :data:`MIN_LABELS`, with both agreement and disagreement among them) it is a logistic
regression's P(people disagree with the judge | features) trained on them (``learned``: missing
values imputed with the training mean, plus missing-value indicators; a tie counts as
disagreeing, since it does not confirm the judge's strict preference). Pairs already labelled
are not routed again; the rest are sorted by score (then smaller margin, then index) and the
top ``budget`` go out.

Files for annotation hold a stable ``pair_id``, the prompt and both answers as ``response_a``
and ``response_b`` in a blind order: which side is A is a hash of the pair id
(:func:`a_side`), so it looks random, never says which side the judge chose, and maps any
returned label back to chosen/rejected whatever file it came from. Formats: ``jsonl`` (an empty
``label`` field to fill with A, B or tie), ``csv`` (the same columns; cells that a spreadsheet
would read as a formula, starting with = + - @ tab or carriage return, get a leading ``'``) and
``label-studio`` (its JSON task import, a list of ``{"data": {...}}``, with the labelling config
written beside it). Argilla is not offered: its SDK is not installed here, and its records need a
running server to be useful.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from datagen_core.errors import ConfigError, InputError, NotFoundError
from datagen_core.fingerprint import stable_hash
from datagen_core.records import Message, Pair
from metrics.labels import consensus_labels, labelled_runs, write_labels
from metrics.pair_metrics import PairSignals, signals
from metrics.store import Store

FEATURES = ("order_disagree", "small_margin", "aspect_conflict", "rm_disagree")
ROUTE_FORMATS = ("jsonl", "csv", "label-studio")
#: labelled pairs needed (with both outcomes among them) before the learned score is used
MIN_LABELS = 8
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

LABEL_STUDIO_CONFIG = """<View>
  <Header value="Prompt"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Response A"/>
  <Text name="response_a" value="$response_a"/>
  <Header value="Response B"/>
  <Text name="response_b" value="$response_b"/>
  <Choices name="preference" toName="prompt" choice="single" showInline="true">
    <Choice value="A"/>
    <Choice value="B"/>
    <Choice value="tie"/>
  </Choices>
</View>
"""


# -- features and scores ---------------------------------------------------------------------------
def a_side(pair_id: str) -> str:
    """Which side of a pair annotation files show as A: ``chosen`` or ``rejected``, by a hash
    of the pair id (blind, stable across files and runs of ``route``)."""
    return "chosen" if int(stable_hash(["blind-order", pair_id], 8), 16) % 2 == 0 else "rejected"


def pair_features(pairs: Sequence[Pair]) -> list[dict[str, float | None]]:
    """The routing features of a run's pairs (see the module doc), in pair order."""
    from scipy.stats import rankdata

    sig = [signals(p) for p in pairs]
    with_margin = [i for i, s in enumerate(sig) if s.margin is not None]
    small: dict[int, float] = {}
    if with_margin:
        ranks = rankdata([sig[i].margin for i in with_margin], method="average")
        n = len(with_margin)
        for i, r in zip(with_margin, ranks):
            small[i] = 1.0 - ((float(r) - 1) / (n - 1) if n > 1 else 0.5)
    return [_features(s, small.get(i)) for i, s in enumerate(sig)]


def _features(s: PairSignals, small_margin: float | None) -> dict[str, float | None]:
    def flag(v: bool | None) -> float | None:
        return None if v is None else float(v)

    return {"order_disagree": flag(None if s.order_consistent is None else
                                   not s.order_consistent),
            "small_margin": small_margin, "aspect_conflict": s.aspect_conflict,
            "rm_disagree": flag(None if s.rm_agrees is None else not s.rm_agrees)}


def fixed_score(feats: dict[str, float | None]) -> float:
    """The mean of the features a pair has (0 when it has none)."""
    got = [v for v in feats.values() if v is not None]
    return sum(got) / len(got) if got else 0.0


@dataclass
class Scorer:
    """How pairs are scored: ``fixed`` or ``learned`` (with the labels it was trained on)."""

    kind: str
    n_labels: int = 0
    note: str = ""
    model: Any = None
    #: the features the model was trained on: those some labelled pair had
    features: tuple[str, ...] = FEATURES

    def scores(self, feats: list[dict[str, float | None]]) -> list[float]:
        if self.model is None:
            return [fixed_score(f) for f in feats]
        return [float(p) for p in
                self.model.predict_proba(_matrix(feats, self.features))[:, 1]]


def _matrix(feats: list[dict[str, float | None]], names: Sequence[str] = FEATURES) -> Any:
    import numpy as np

    return np.array([[math.nan if f[k] is None else f[k] for k in names] for f in feats],
                    dtype=float).reshape(len(feats), len(names))


def training_set(store: Store) -> tuple[list[dict[str, float | None]], list[int]]:
    """Features and targets (1 = people did not side with the judge) of every labelled pair
    in the workspace, features computed within each pair's own run."""
    feats: list[dict[str, float | None]] = []
    target: list[int] = []
    for rid in labelled_runs(store):
        labels = consensus_labels(store, rid)
        pairs = store.read_pairs(rid)
        for p, f in zip(pairs, pair_features(pairs)):
            if p.pair_id in labels:
                feats.append(f)
                target.append(int(labels[p.pair_id] != "chosen"))
    return feats, target


def build_scorer(store: Store) -> Scorer:
    """The learned scorer when the workspace's labels allow one, else the fixed one (with why)."""
    feats, target = training_set(store)
    if len(target) < MIN_LABELS:
        return Scorer("fixed", len(target), f"the learned score needs {MIN_LABELS} labelled "
                      f"pairs, {len(target)} so far")
    if len(set(target)) < 2:
        return Scorer("fixed", len(target), "people agreed with the judge on every labelled "
                      "pair, or on none: nothing to learn from")
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    seen = tuple(k for k in FEATURES if any(f[k] is not None for f in feats))
    model = make_pipeline(SimpleImputer(strategy="mean", add_indicator=True),
                          LogisticRegression())
    model.fit(_matrix(feats, seen), target)
    return Scorer("learned", len(target), f"logistic regression on {len(target)} labelled "
                  f"pairs ({', '.join(seen)})", model, seen)


# -- routing ---------------------------------------------------------------------------------------
@dataclass
class RoutedPair:
    pair_id: str
    idx: int
    score: float
    features: dict[str, float | None]
    a_side: str


@dataclass
class RouteResult:
    """What :func:`route_pairs` did. ``pairs`` are the routed ones, least reliable first."""

    run_id: str
    path: Path | None
    fmt: str
    scorer: str
    note: str
    n_pairs: int
    n_labelled: int
    pairs: list[RoutedPair] = field(default_factory=list)
    config_path: Path | None = None
    #: the routed pairs as annotators see them (:func:`annotation_row`), for :func:`write_routed`
    rows: list[dict[str, Any]] = field(default_factory=list)


def _run_pairs(store: Store, run_id: str) -> tuple[str, list[Pair]]:
    rid = store.resolve_run(run_id)
    pairs = store.read_pairs(rid)
    if not pairs:
        raise NotFoundError(f"run {rid} has no preference pairs: pairs come from methods such "
                            "as preference-pairs, attribute-variants and multi-attribute-edit")
    return rid, pairs


def budget_count(budget: float, n: int) -> int:
    """A budget as a number of pairs: a share of ``n`` when at most 1 (the paper's
    ``int(n * budget)``, at least one pair), else a count."""
    if not budget > 0 or not math.isfinite(budget):
        raise ConfigError(f"budget must be above 0 (a share up to 1, or a count): got {budget}")
    if budget <= 1:
        return max(1, int(n * budget))
    if budget != int(budget):
        raise ConfigError(f"a budget above 1 is a number of pairs: got {budget}")
    return int(budget)


def rank_pairs(run_id: str, *, workspace: str | Path | None = None
               ) -> tuple[str, list[Pair], list[RoutedPair], Scorer, dict[str, str]]:
    """Every pair of a run with its features and score, least reliable first; the scorer used
    and the run's consensus labels."""
    store = Store.open_existing(workspace)
    rid, pairs = _run_pairs(store, run_id)
    scorer = build_scorer(store)
    feats = pair_features(pairs)
    scores = scorer.scores(feats)
    rows = [RoutedPair(p.pair_id, p.index, s, f, a_side(p.pair_id))
            for p, f, s in zip(pairs, feats, scores)]
    margin = {p.pair_id: (p.margin if p.margin is not None else math.inf) for p in pairs}
    rows.sort(key=lambda r: (-r.score, margin[r.pair_id], r.idx))
    return rid, pairs, rows, scorer, consensus_labels(store, rid)


def route_pairs(run_id: str, budget: float = 0.2, out: str | Path | None = None,
                fmt: str = "jsonl", *, workspace: str | Path | None = None) -> RouteResult:
    """Pick the ``budget`` of a run's pairs the judge is least reliable on (not yet labelled)
    and, given ``out``, write them for annotation in ``fmt``; see the module doc."""
    if fmt not in ROUTE_FORMATS:
        raise ConfigError(f"unknown routing format {fmt!r}: use one of {', '.join(ROUTE_FORMATS)}")
    rid, pairs, ranked, scorer, labels = rank_pairs(run_id, workspace=workspace)
    k = budget_count(budget, len(pairs))
    chosen = [r for r in ranked if r.pair_id not in labels][:k]
    by_id = {p.pair_id: p for p in pairs}
    result = RouteResult(rid, None, fmt, scorer.kind, scorer.note, len(pairs), len(labels),
                         chosen, rows=[annotation_row(rid, by_id[r.pair_id]) for r in chosen])
    if out is not None:
        write_routed(result, out)
    return result


def default_route_path(result: RouteResult) -> Path:
    """``routed-<run id>.<jsonl|csv|json>`` in the current folder."""
    ext = {"label-studio": "json"}.get(result.fmt, result.fmt)
    return Path(f"routed-{result.run_id}.{ext}")


def write_routed(result: RouteResult, out: str | Path) -> Path:
    """Write a routing's pairs for annotation (its format); sets and returns the path."""
    result.path, result.config_path = write_annotation_file(Path(out), result.rows, result.fmt)
    return result.path


def _conversation(messages: Sequence[Message]) -> str:
    if len(messages) == 1:
        return messages[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in messages)


def annotation_row(run_id: str, pair: Pair) -> dict[str, Any]:
    """One pair as people see it: prompt, answers A and B in the blind order, an empty label."""
    first = a_side(pair.pair_id)
    sides = {"chosen": pair.chosen, "rejected": pair.rejected}
    second = "rejected" if first == "chosen" else "chosen"
    return {"pair_id": pair.pair_id, "run_id": run_id, "attribute": pair.attribute,
            "prompt": _conversation(pair.prompt),
            "response_a": _conversation(sides[first]), "response_b": _conversation(sides[second]),
            "label": ""}


def spreadsheet_safe(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ``'`` on what it would run as a
    formula (OWASP's CSV injection advice)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_annotation_file(path: Path, rows: list[dict[str, Any]], fmt: str
                          ) -> tuple[Path, Path | None]:
    """Write rows for annotation; Label Studio also gets its labelling config beside them."""
    from datagen_core.files import write_output

    if fmt == "jsonl":
        return write_output(path, (orjson.dumps(r) + b"\n" for r in rows)), None
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["pair_id", "run_id", "attribute", "prompt", "response_a", "response_b",
                         "label"])
        for r in rows:
            writer.writerow([spreadsheet_safe(r[k]) for k in ("pair_id", "run_id", "attribute",
                                                             "prompt", "response_a",
                                                             "response_b", "label")])
        return write_output(path, buf.getvalue().encode()), None
    tasks = [{"data": {k: v for k, v in r.items() if k != "label"}} for r in rows]
    written = write_output(path, orjson.dumps(tasks, option=orjson.OPT_INDENT_2))
    config = path.with_name(path.stem + ".label-config.xml")
    write_output(config, LABEL_STUDIO_CONFIG.encode())
    return written, config


# -- reading labels back ---------------------------------------------------------------------------
@dataclass
class ImportResult:
    run_id: str
    annotators: list[str]
    n_labels: int
    counts: dict[str, int]
    n_unlabelled: int


_LABEL_WORDS = {"a": "A", "b": "B", "tie": "tie"}


def _read_rows(path: Path, fmt: str, annotator: str) -> list[tuple[str, str, Any, str]]:
    """(where, pair id, raw label, annotator) per labelled item of a file, in file order."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    found: list[tuple[str, str, Any, str]] = []
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig", errors="replace")))
        missing = {"pair_id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}: no {' or '.join(sorted(missing))} column (the columns "
                             "are those `datagen pairs route` writes)")
        for n, row in enumerate(reader, start=2):
            found.append((f"{path} line {n}", (row.get("pair_id") or "").lstrip("'"),
                          row.get("label"), annotator))
        return found
    if fmt == "jsonl":
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise InputError(f"{path} line {n}: not a JSON object") from None
            if not isinstance(row, dict):
                raise InputError(f"{path} line {n}: not a JSON object")
            found.append((f"{path} line {n}", str(row.get("pair_id") or ""), row.get("label"),
                          annotator))
        return found
    try:
        tasks = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InputError(f"{path}: not JSON (a Label Studio export is a JSON list of "
                         "tasks)") from None
    if not isinstance(tasks, list):
        raise InputError(f"{path}: a Label Studio export is a JSON list of tasks")
    who = {str(a.get("completed_by")) for t in tasks if isinstance(t, dict)
           for a in t.get("annotations") or [] if isinstance(a, dict)}
    for n, task in enumerate(tasks, start=1):
        where = f"{path} task {n}"
        if not isinstance(task, dict):
            raise InputError(f"{where}: not a JSON object")
        if "annotations" not in task:  # the JSON-MIN export: data fields and the choice, flat
            found.append((where, str(task.get("pair_id") or ""), task.get("preference"),
                          annotator))
            continue
        data = task.get("data")
        pid = str(data.get("pair_id") or "") if isinstance(data, dict) else ""
        for a in task["annotations"] or []:
            if not isinstance(a, dict) or a.get("was_cancelled"):
                continue
            choices = [c for res in a.get("result") or [] if isinstance(res, dict)
                       and res.get("type") == "choices"
                       for c in (res.get("value") or {}).get("choices") or []]
            name = annotator if len(who) <= 1 else f"{annotator}:{a.get('completed_by')}"
            found.append((where, pid, choices[0] if len(choices) == 1 else
                          choices or None, name))
    return found


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return "csv" if suffix == ".csv" else "label-studio" if suffix == ".json" else "jsonl"


def import_labels(run_id: str, path: str | Path, annotator: str | None = None,
                  fmt: str | None = None, *, workspace: str | Path | None = None
                  ) -> ImportResult:
    """Read people's labels (A, B or tie, as written by :func:`route_pairs`) from a jsonl, csv
    or Label Studio export (full JSON or JSON-MIN) and store them as chosen/rejected/tie in the
    ``labels`` table. Rows without a label are skipped; a malformed row is an error naming it,
    and then nothing is stored."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in ROUTE_FORMATS:
        raise ConfigError(f"unknown label file format {fmt!r}: use one of "
                          f"{', '.join(ROUTE_FORMATS)}")
    name = annotator or ("label-studio" if fmt == "label-studio" else "human")
    store = Store.open_existing(workspace)
    rid, pairs = _run_pairs(store, run_id)
    index = {p.pair_id: p.index for p in pairs}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    unlabelled = 0
    for where, pid, raw, who in _read_rows(path, fmt, name):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            unlabelled += 1
            continue
        word = _LABEL_WORDS.get(str(raw).strip().lstrip("'").lower()) \
            if isinstance(raw, str) else None
        if word is None:
            raise InputError(f"{where}: label {raw!r} is not A, B or tie")
        if pid not in index:
            raise InputError(f"{where}: pair {pid!r} is not a pair of run {rid}"
                             if pid else f"{where}: no pair_id")
        first = a_side(pid)
        label = "tie" if word == "tie" else first if word == "A" else (
            "rejected" if first == "chosen" else "chosen")
        rows[(who, pid)] = {"pair_id": pid, "idx": index[pid], "label": label,
                            "shown_first": first}
    by_who: dict[str, list[dict[str, Any]]] = {}
    for (who, _), r in rows.items():
        by_who.setdefault(who, []).append(r)
    for who, group in by_who.items():
        write_labels(store, rid, group, who)
    counts = {k: sum(r["label"] == k for r in rows.values()) for k in ("chosen", "rejected",
                                                                      "tie")}
    return ImportResult(rid, sorted(by_who), len(rows), counts, unlabelled)


# -- agreement -------------------------------------------------------------------------------------
@dataclass
class AgreementRow:
    """Judge-human agreement over one bucket of labelled pairs. ``agreement`` is the share of
    decided labels (chosen or rejected) that side with the judge; ties are counted apart."""

    feature: str
    bucket: str
    n: int
    agree: int
    disagree: int
    tie: int

    @property
    def agreement(self) -> float | None:
        decided = self.agree + self.disagree
        return self.agree / decided if decided else None


def _buckets(pairs: list[Pair], feats: list[dict[str, float | None]],
             scores: list[float]) -> list[dict[str, str]]:
    import numpy as np

    sig = [signals(p) for p in pairs]
    margins = [s.margin for s in sig if s.margin is not None]
    cuts = np.quantile(margins, [1 / 3, 2 / 3]) if margins else None
    score_cuts = np.quantile(scores, [1 / 3, 2 / 3]) if scores else None

    def tercile(v: float | None, c: Any, names: tuple[str, str, str]) -> str:
        if v is None or c is None:
            return "n/a"
        return names[0] if v <= c[0] else names[1] if v <= c[1] else names[2]

    out = []
    for s, f, sc in zip(sig, feats, scores):
        conflict = f["aspect_conflict"]
        out.append({
            "margin tercile": tercile(s.margin, cuts, ("low", "mid", "high")),
            "both orders": "not checked" if s.order_consistent is None else
            "consistent" if s.order_consistent else "inconsistent",
            "aspects": "n/a" if conflict is None else "conflict" if conflict > 0 else "agree",
            "reward model": "n/a" if s.rm_agrees is None else
            "agrees" if s.rm_agrees else "disagrees",
            "fixed score tercile": tercile(sc, score_cuts, ("low", "mid", "high")),
        })
    return out


def label_agreement(run_id: str, *, workspace: str | Path | None = None
                    ) -> list[AgreementRow]:
    """Judge-human agreement on a run's labelled pairs (consensus over annotators): overall,
    then per bucket of each routing feature (margin terciles within the run, both-order
    consistency, aspect conflict, reward model, and terciles of the fixed routing score, which
    does not move as labels come in)."""
    store = Store.open_existing(workspace)
    rid, pairs = _run_pairs(store, run_id)
    labels = consensus_labels(store, rid)
    if not labels:
        raise NotFoundError(f"run {rid} has no labels yet: label pairs with `datagen pairs "
                            "route` and `datagen pairs import-labels`, or in `datagen serve`")
    feats = pair_features(pairs)
    buckets = _buckets(pairs, feats, [fixed_score(f) for f in feats])
    table: dict[tuple[str, str], AgreementRow] = {}
    order = ["low", "mid", "high", "consistent", "inconsistent", "agree", "conflict", "agrees",
             "disagrees", "not checked", "n/a"]
    for p, b in zip(pairs, buckets):
        label = labels.get(p.pair_id)
        if label is None:
            continue
        for feature, bucket in (("overall", "all"), *b.items()):
            row = table.setdefault((feature, bucket), AgreementRow(feature, bucket, 0, 0, 0, 0))
            row.n += 1
            row.agree += label == "chosen"
            row.disagree += label == "rejected"
            row.tie += label == "tie"
    features = ["overall", "margin tercile", "both orders", "aspects", "reward model",
                "fixed score tercile"]
    return sorted(table.values(), key=lambda r: (features.index(r.feature),
                                                 order.index(r.bucket) if r.bucket in order
                                                 else -1))

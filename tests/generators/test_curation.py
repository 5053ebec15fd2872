"""Curation: exact/near/seed dedup, n-gram decontamination against real eval sets, loaders."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from datagen_core.errors import ConfigError, InputError
from datagen_core.records import Instance, Message
from generators.curation import (
    CurationConfig,
    DedupConfig,
    EvalIndex,
    curate,
    curate_instances,
    dedup,
    load_eval_texts,
    minhash_signatures,
    tokenize,
)
from tests.conftest import ASSETS

ROOT = Path(__file__).resolve().parents[2]
LONG = ("Maria runs a small bakery downtown and every morning she bakes forty loaves of sourdough "
        "bread, twenty five baguettes and three dozen croissants before opening the shop at seven "
        "o'clock. On Saturdays she doubles the croissants because the farmers market brings many "
        "extra customers, and she always keeps six loaves aside for the shelter on the corner. "
        "How many pastries does she bake in a typical week?")


def gsm8k(split: str) -> list[str]:
    return load_eval_texts(str(ASSETS / "gsm8k" / f"{split}.jsonl"))


def words_text(rng: random.Random, n: int = 40) -> str:
    vocab = [f"w{k}" for k in range(5000)]
    return " ".join(rng.choice(vocab) for _ in range(n))


# -- dedup --------------------------------------------------------------------------------------
def test_exact_duplicates_ignore_case_punctuation_and_spacing_and_keep_the_first():
    texts = ["What is 2 + 2?", "A different question entirely.", "  what is 2 2 ", "WHAT IS 2+2"]
    r = dedup(texts)
    assert r.keep == [True, True, False, False]
    assert r.reasons[2] == r.reasons[3] == "exact duplicate of #0"
    assert r.counts == {"exact": 2, "near": 0, "seed": 0}
    assert r.kept == [0, 1]


def test_one_word_changed_is_a_near_duplicate_of_the_first():
    assert len(tokenize(LONG)) > 60  # one change kills 5 of ~60 shingles: Jaccard ~0.84
    changed = LONG.replace("shelter", "library")
    rng = random.Random(1)
    texts = [LONG, words_text(rng), changed, words_text(rng)]
    r = dedup(texts)
    assert r.keep == [True, True, False, True]
    assert r.reasons[2] is not None and r.reasons[2].startswith("near duplicate of #0 (jaccard~")
    assert 0.75 <= float(r.reasons[2].split("~")[1].rstrip(")")) < 1.0
    assert r.counts == {"exact": 0, "near": 1, "seed": 0}
    # the near pass off: only exact duplicates go
    assert dedup(texts, config=DedupConfig(near=False)).keep == [True] * 4


def test_a_mode_collapsed_cluster_is_cheap_and_keeps_only_its_first_row():
    base = (LONG + " " + LONG.replace("Maria", "Then Ana")).split()  # ~130 words
    rows = [" ".join(base)]
    for k in range(1, 3000):
        toks = list(base)
        toks[k % len(toks)] = f"x{k}"  # one word differs from the first: Jaccard ~0.92
        rows.append(" ".join(toks))
    r = dedup(rows)
    assert r.kept == [0] and r.counts["near"] == 2999
    assert {x.split(" (")[0] for x in r.reasons[1:] if x} == {"near duplicate of #0"}


def test_with_exact_off_copies_are_near_duplicates_with_jaccard_one():
    r = dedup([LONG, LONG.upper()], against=["seed"], config=DedupConfig(exact=False))
    assert r.reasons == [None, "near duplicate of #0 (jaccard~1.00)"]


def test_distinct_texts_survive():
    rng = random.Random(2)
    texts = [words_text(rng) for _ in range(300)] + gsm8k("train")[:300]
    r = dedup(texts)
    assert sum(r.keep[:300]) == 300
    assert sum(r.keep[300:]) >= 297  # GSM8K has a few templated siblings; none in the first 300
    assert dedup([]).keep == []


def test_seed_duplicates_exact_and_near_are_caught():
    seeds = ["Seed one: name three primary colours.", LONG]
    texts = ["seed ONE - name three primary colours", LONG.replace("forty", "fifty"),
             "A brand new instruction about the solar system and its planets."]
    r = dedup(texts, against=seeds)
    assert r.keep == [False, False, True]
    assert r.reasons[0] == "duplicate of seed #0"
    assert r.reasons[1] is not None and r.reasons[1].startswith("near duplicate of seed #1")
    assert r.counts == {"exact": 0, "near": 0, "seed": 2}


def test_signatures_equal_datasketch_minhash_over_the_same_shingle_hashes():
    from datasketch import MinHash

    from generators.curation.text import encode_tokens, fmix64, ngram_hashes, text_hash

    toks = [tokenize(LONG), tokenize("two words"), []]
    sig = minhash_signatures(toks, num_perm=64)
    h, rows, _ = ngram_hashes(*encode_tokens(toks), 5)
    inputs = [[int(v >> np.uint64(32)) for v in h[rows == 0]],
              [int(fmix64(np.array([text_hash(toks[1])], np.uint64))[0] >> np.uint64(32))]]
    for row, values in enumerate(inputs):
        m = MinHash(num_perm=64, hashfunc=lambda x: x)
        m.update_batch(values)
        assert (m.hashvalues == sig[row]).all()
    assert (sig[2] == 0xFFFFFFFF).all()  # empty text: the empty sketch


# -- decontamination ----------------------------------------------------------------------------
def planted_rows() -> tuple[list[str], dict[int, int]]:
    """2,000 clean rows (GSM8K train questions and generic instructions) with 40 GSM8K test
    questions planted: 20 verbatim, 20 wrapped in a lead-in and a sign-off."""
    rng = random.Random(7)
    train = gsm8k("train")
    topics = ["photosynthesis", "the French revolution", "binary search", "tax brackets",
              "sourdough starters", "plate tectonics", "jazz harmony", "password hygiene"]
    clean = rng.sample(train, 1600) + [
        f"Write a {rng.choice(['short', 'friendly', 'formal'])} explanation of "
        f"{rng.choice(topics)} for a reader aged {rng.randint(8, 80)}, in "
        f"{rng.randint(2, 9)} paragraphs, and end with a question number {k}." for k in range(400)]
    test = gsm8k("test")
    picks = rng.sample(range(len(test)), 40)
    rows, planted = list(clean), dict[int, int]()
    for k, item in enumerate(picks):
        text = test[item] if k < 20 else f"Solve this: {test[item]} Show your work."
        at = rng.randrange(len(rows) + 1)
        rows.insert(at, text)
        planted = {(i + 1 if i >= at else i): it for i, it in planted.items()}
        planted[at] = item
    return rows, planted


@pytest.fixture(scope="module")
def index() -> EvalIndex:
    return EvalIndex.from_names(["gsm8k", "math500", "mbpp", "humaneval", "ifeval"], root=ASSETS)


def test_planted_test_questions_are_found_and_clean_rows_left(index):
    rows, planted = planted_rows()
    found = index.check(rows)
    for i, item in planted.items():
        c = found[i]
        assert c is not None and c.eval_set == "gsm8k" and c.item == item, (i, rows[i])
        assert c.coverage > 0.5
    false_pos = [(i, c) for i, c in enumerate(found) if c is not None and i not in planted]
    # GSM8K train holds a few templated siblings of test questions ("A train travels 270 miles in
    # 3 hours. At the same rate, how many additional hours ..."); 3 of all 7,473 train questions
    # cover more than half of a test item. They are real overlaps, so a handful may show up.
    assert len(false_pos) <= 3, [(rows[i], c) for i, c in false_pos]
    summary = index.summary(found)
    assert summary["gsm8k"] == 40 + len(false_pos)
    assert summary["math500"] == summary["mbpp"] == summary["humaneval"] == summary["ifeval"] == 0


def test_coverage_threshold_and_partial_overlap(index):
    q = gsm8k("test")[0]
    toks = q.split()
    half = " ".join(toks[: len(toks) // 3])  # a third of the item: below 0.5
    assert index.check([f"Intro words here. {half}"]) == [None]
    assert index.check([f"Intro words here. {half}"], threshold=0.2)[0] is not None
    with pytest.raises(ConfigError):
        index.check(["x"], threshold=1.0)


def test_coverage_equals_a_naive_pairwise_computation():
    test = gsm8k("test")[:200]
    idx = EvalIndex.build({"gsm8k": test})
    rng = random.Random(3)
    rows = []
    for _ in range(60):  # slices of several test questions, some overlapping one item twice
        parts = []
        for _ in range(rng.randint(1, 4)):
            t = tokenize(test[rng.randrange(len(test))])
            a = rng.randrange(len(t))
            parts.append(" ".join(t[a:a + rng.randint(5, 30)]))
        rows.append(" filler words ".join(parts))

    def naive(row: str) -> tuple[int, float] | None:
        t = tokenize(row)
        grams = {tuple(t[p:p + 8]) for p in range(len(t) - 7)}
        best: tuple[int, float] | None = None
        for j, q in enumerate(test):
            u = tokenize(q)
            covered = {x for p in range(len(u) - 7) if tuple(u[p:p + 8]) in grams
                       for x in range(p, p + 8)}
            cov = round(len(covered) / len(u), 4)
            if cov > 0 and (best is None or cov > best[1]):
                best = (j, cov)
        return best

    ours = [(c.item, c.coverage) if c else None for c in idx.check(rows, threshold=0.0)]
    assert ours == [naive(r) for r in rows]
    assert sum(c is not None and 0 < c[1] < 1 for c in ours) > 20  # partial coverages exercised


def test_short_eval_items_match_only_a_whole_equal_text():
    idx = EvalIndex.build({"tiny": ["Say hello world.", "", LONG]}, n=8)
    assert idx.skipped == {"tiny": 1}  # the empty item
    found = idx.check(["say HELLO, world!", "Please say hello world to my friend", LONG])
    assert found[0] is not None and (found[0].item, found[0].coverage) == (0, 1.0)
    assert found[1] is None  # three common words inside a longer text are not contamination
    assert found[2] is not None and found[2].item == 2


def test_results_are_deterministic_across_runs_and_processes(index):
    rows, _ = planted_rows()
    first = index.check(rows)
    assert index.check(rows) == first
    assert dedup(rows).reasons == dedup(rows).reasons
    script = ("import json, sys; from generators.curation import EvalIndex; "
              f"idx = EvalIndex.from_names(['gsm8k'], root={str(ASSETS)!r}); "
              "found = idx.check(json.load(sys.stdin)); "
              "print(json.dumps([c and [c.eval_set, c.item, c.coverage] for c in found]))")
    sample = rows[:400]
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps(sample), text=True,
                         capture_output=True, check=True, cwd=ROOT,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
    expected = [c and [c.eval_set, c.item, c.coverage] for c in index.check(sample)]
    assert json.loads(out.stdout) == expected
    assert any(expected)


# -- loaders ------------------------------------------------------------------------------------
def test_load_eval_texts_builtin_names_env_and_paths(monkeypatch):
    assert len(load_eval_texts("gsm8k", root=ASSETS)) == 1319
    monkeypatch.setenv("DATAGEN_EVAL_DIR", str(ASSETS))
    sizes = {name: len(load_eval_texts(name)) for name in
             ("gsm8k", "math500", "mbpp", "humaneval", "ifeval")}
    assert sizes == {"gsm8k": 1319, "math500": 500, "mbpp": 500, "humaneval": 164, "ifeval": 540}
    he = load_eval_texts(str(ASSETS / "humaneval" / "HumanEval.jsonl.gz"))  # picks "prompt"
    assert he[0].startswith("\nfrom typing import List") or "def " in he[0]
    assert load_eval_texts(str(ASSETS / "mbpp" / "mbpp.jsonl"), field="code")[0].startswith("R")
    with pytest.raises(InputError):
        load_eval_texts("no-such-eval")
    with pytest.raises(InputError):
        load_eval_texts(str(ASSETS / "gsm8k" / "test.jsonl"), field="nope")


# -- curate -------------------------------------------------------------------------------------
def test_curate_reports_dedup_and_contamination_per_row(index):
    test_q = gsm8k("test")[5]
    texts = [LONG, LONG.lower(), f"Solve this: {test_q} Show your work.", "Seed instruction one.",
             "Write a haiku about autumn leaves falling in a quiet park."]
    report = curate(texts, ["seed instruction ONE"], CurationConfig(), eval_index=index)
    assert report.keep == [True, False, False, False, True]
    assert report.reasons[1] == "exact duplicate of #0"
    assert (report.reasons[2] or "").startswith("contaminated by gsm8k #5 (coverage 1.00)")
    assert report.reasons[3] == "duplicate of seed #0"
    assert report.counts == {"input": 5, "kept": 2, "exact": 1, "near": 0, "seed": 1,
                             "contaminated": 1}
    assert report.contaminated_by == {"gsm8k": 1, "math500": 0, "mbpp": 0, "humaneval": 0,
                                      "ifeval": 0}
    kept = curate(texts, [], CurationConfig(drop_contaminated=False, dedup=False),
                  eval_index=index)
    assert kept.keep == [True] * 5 and kept.contamination[2] is not None
    with pytest.raises(ConfigError):
        curate(texts, [], CurationConfig(ngram=13), eval_index=index)


def test_curate_builds_the_index_from_config_and_marks_instances():
    with pytest.raises(ValidationError):
        CurationConfig(near_dup_treshold=0.5)  # type: ignore[call-arg]
    test_q = gsm8k("test")[0]
    insts = [Instance(index=i, instance_id=str(i),
                      messages=[Message(role="user", content=t),
                                Message(role="assistant", content="ok")])
             for i, t in enumerate([LONG, test_q, LONG + "!"])]
    insts.insert(1, Instance(index=9, instance_id="bad", messages=[], valid=False,
                             reject_reason="parse"))
    cfg = CurationConfig(eval_sets=["gsm8k"], eval_dir=str(ASSETS))
    report = curate_instances(insts, [], cfg)
    assert report.counts["kept"] == 1
    assert [x.valid for x in insts] == [True, False, False, False]
    assert insts[1].reject_reason == "parse"  # already rejected rows are left alone
    assert (insts[2].reject_reason or "").startswith("contaminated by gsm8k #0")
    assert insts[2].meta["contamination"]["coverage"] == 1.0
    assert insts[3].reject_reason == "exact duplicate of #0"  # instance indices, not row ranks


def test_mbpp_decontamination_indexes_only_the_items_the_task_scores():
    """The mbpp task scores the test split (task ids 11-510); the train split seeds code cells.
    Indexing every split made each train seed contaminate itself, so code cells kept nothing."""
    import orjson

    from tests.conftest import ASSETS

    rows = [orjson.loads(line) for line in (ASSETS / "mbpp" / "mbpp.jsonl").read_bytes()
            .splitlines()]
    assert len(rows) == 974  # every split in one file
    texts = load_eval_texts("mbpp", root=ASSETS)
    assert texts == [r["text"] for r in rows if 11 <= r["task_id"] <= 510]
    index = EvalIndex.from_names(["mbpp"], root=ASSETS)
    test_items = [r["text"] for r in rows if r["task_id"] in (11, 200, 510)]
    assert all(h is not None and h.coverage == 1.0 for h in index.check(test_items))
    train = [r["text"] for r in rows if r["task_id"] >= 601]
    hits = index.check(train)
    # most train seeds are kept (before: none); the rest share a templated 8-gram with a test
    # item, or are one (MBPP repeats a few instructions across splits)
    assert sum(h is None for h in hits) > len(train) / 2

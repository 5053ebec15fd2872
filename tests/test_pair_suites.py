"""Preference suites: pair sources ranked by DPO students (scripted generators, a real tiny DPO
student trained on each source's pairs and evaluated)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from datagen.api import bench
from datagen.suite import load_suite, parse_suite
from datagen_core.errors import ConfigError
from datagen_core.records import GeneratorSpec, GenRequest
from datagen_core.workspace import Workspace
from generators.backends.fake import FakeBackend
from students.train import read_manifest

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "bench"
TWO = re.compile(r"(\d+) plus (\d+)")


def _sum(r: GenRequest) -> int:
    m = TWO.search(r.messages[-1].content)
    return int(m.group(1)) + int(m.group(2)) if m else 0


def _suite(**over: Any) -> dict[str, Any]:
    mixed = {"spec": "fake:mixed", "sampling": {"max_tokens": 16}}
    data: dict[str, Any] = {
        "name": "pairs-mini",
        "n": 8,
        "sources": [
            {"name": "verified", **mixed,
             "method": {"name": "verified-pairs", "args": {"samples": 2}}},
            {"name": "unverified", **mixed,
             "method": {"name": "verified-pairs", "args": {"samples": 2, "verify": False}}}],
        "domains": {"arithmetic": {"tasks": ["arithmetic"], "eval_limit": 6}},
        "curation": {"decontaminate": False},
        "intrinsic": ["stats"],
        "student": {"recipe": "tiny-llama-dpo", "overrides": {"max_steps": 2}},
        "base": {"model": "fake:base"},
        "reference": {"model": "fake:ref"},
        "resources": {"use_ray": False},
    }
    data.update(over)
    return data


def _backends() -> dict[str, FakeBackend]:
    def spec(name: str) -> GeneratorSpec:
        return GeneratorSpec.parse(f"fake:{name}")

    # sample 0 right, sample 1 wrong: every seed has one of each
    mixed = FakeBackend(spec("mixed"),
                        responder=lambda r: f"= {_sum(r) + (1 if r.sample else 0)}")
    return {"verified": mixed, "unverified": mixed,
            "fake:base": FakeBackend(spec("base"), responder=lambda r: "I do not know"),
            "fake:ref": FakeBackend(spec("ref"), responder=lambda r: str(_sum(r)))}


@pytest.mark.parametrize(("change", "message"), [
    ({"sources": [{"name": "a", "spec": "fake:x", "method": "response-generation"}]},
     "sources.0.method: response-generation makes no preference pairs"),
    ({"sources": []}, "give generators and methods"),
    ({"generators": [{"name": "verified", "spec": "fake:y"}], "methods": ["verified-pairs"]},
     "duplicate name(s) verified"),
    ({"generators": [{"name": "g", "spec": "fake:y"}]}, "methods: the generators need"),
    ({"reference": {"pairs": "/no/such/pairs.jsonl"}}, "reference: no such pairs file"),
    ({"domains": {"general": {"tasks": ["ifeval"]}}, "reference": "gold"},
     "gold pairs need gold answers"),
    ({"student": {"recipe": "tiny-llama"}, "reference": {"pairs": __file__}},
     "a pairs reference trains a DPO student"),
])
def test_a_bad_preference_suite_is_one_line_naming_the_key(change: dict[str, Any],
                                                           message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        parse_suite(_suite(**change), "suite.yaml")
    assert "\n" not in str(e.value)


def test_the_shipped_preference_quickstart_is_valid() -> None:
    suite = load_suite(CONFIGS / "pairs-quickstart.yaml")
    assert suite.kind == "dpo"
    assert [(g.name, m.name, d) for g, m, d in suite.cells()] == [
        ("verified", "verified-pairs", "arithmetic"),
        ("unverified", "verified-pairs", "arithmetic")]
    assert suite.reference.kind == "gold"


def test_pair_sources_are_ranked_by_dpo_students_trained_on_their_pairs() -> None:
    backends = _backends()
    result = bench(parse_suite(_suite()), backends=backends)
    assert not result.failed, [c.error for c in result.failed]
    ws = Workspace.resolve(result.workspace)
    for cell in result.cells:
        assert cell.student_id is not None and cell.pgr is not None and cell.ci is not None
        rec = read_manifest(ws, cell.student_id)
        assert rec is not None and rec.data.kind == "dpo"
        assert rec.data.path.endswith(f"{cell.run_id}/pairs.jsonl")
        assert rec.recipe.kind == "dpo" and rec.steps == 2
    # one generation: the second source's answers are the first's, from the cache
    assert len(backends["verified"].history) == 16
    pairs = {c.generator: [orjson.loads(x) for x in (
        ws.run_dir(str(c.run_id)) / "pairs.jsonl").read_bytes().splitlines()]
        for c in result.cells}
    assert len(pairs["verified"]) == 8
    assert all(p["evidence"]["chosen_correct"] for p in pairs["verified"])
    assert {c.generator for c in result.cells} == {r["generator"] for r in result.overall}
    gen = {s.cell.split(" · ")[0]: s.detail for s in result.steps if s.step == "generate"}
    assert "8 pairs" in gen["verified"]


def test_a_gold_reference_is_trained_on_gold_pairs() -> None:
    result = bench(parse_suite(_suite(sources=_suite()["sources"][:1], reference="gold")),
                   backends=_backends())
    step = next(s for s in result.steps if s.step == "train reference")
    assert step.status == "done"
    sid = step.detail.split()[1].rstrip(",")
    rec = read_manifest(Workspace.resolve(result.workspace), sid)
    assert rec is not None and rec.data.kind == "dpo"
    assert re.search(r"gold/arithmetic-pairs-8-\w+\.jsonl$", rec.data.path)
    rows = [orjson.loads(x) for x in Path(rec.data.path).read_bytes().splitlines()]
    assert all(r["chosen"][0]["content"] != r["rejected"][0]["content"] for r in rows)

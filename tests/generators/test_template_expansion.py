"""template-expansion (IssueBench): the template x slot product, exact and capped, exhaustive
or a seeded sample; domain validation, curation and rejections per reason; the shipped set."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import orjson
import pytest

from datagen import api
from datagen_core.errors import ConfigError
from datagen_core.records import GeneratorSpec
from generators.backends.fake import FakeBackend
from generators.methods.base import METHODS
from tests.conftest import ASSETS


def jsonl(path, rows):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return str(path)


@pytest.fixture()
def tables(tmp_path):
    templates = jsonl(tmp_path / "templates.jsonl", [
        {"id": "t-blog", "template": "Write a blog post about {issue} for {reader}."},
        {"id": "t-tweet", "template": "Write a tweet about {issue}."},
        {"id": "t-plain", "template": "Write a haiku about autumn {{no slot}}."},
    ])
    issues = jsonl(tmp_path / "issues.jsonl", [
        {"id": "cash", "neutral": "cash", "pro": "keeping cash", "con": "phasing out cash"},
        {"id": "zoos", "neutral": "zoos", "pro": "zoos being good", "con": "zoos being bad"},
    ])
    readers = tmp_path / "readers.txt"
    readers.write_text("# who reads it\nteenagers\n\nretired teachers\n")
    return {"templates": templates, "slots": {
        "issue": {"source": issues, "variants": ["neutral", "pro", "con"]},
        "reader": str(readers)}}


def expand(**args):
    return METHODS.get("template-expansion")(**args).expand()


def test_the_product_is_exact_template_major_with_every_combination_once(tables):
    out = expand(**tables)
    # blog: 2 issues x 3 framings x 2 readers; tweet: 6; the plain template: itself
    assert len(out) == 12 + 6 + 1
    blog = [x["prompt"] for x in out if x["template_id"] == "t-blog"]
    framings = ["cash", "keeping cash", "phasing out cash", "zoos", "zoos being good",
                "zoos being bad"]
    assert blog == [f"Write a blog post about {i} for {r}." for i, r in
                    itertools.product(framings, ["teenagers", "retired teachers"])]
    assert [x["prompt"] for x in out[12:18]] == [f"Write a tweet about {i}." for i in framings]
    assert out[-1]["prompt"] == "Write a haiku about autumn {no slot}." and not out[-1]["slots"]
    issue = out[2]["slots"]["issue"]
    assert (issue["id"], issue["variant"], issue["value"]) == ("cash", "pro", "keeping cash")
    assert issue["row"]["con"] == "phasing out cash"
    assert out[2]["slots"]["reader"] == {"id": "0", "variant": None, "value": "teenagers",
                                         "row": {"text": "teenagers"}}


def test_exhaustive_above_the_cap_is_an_error_and_a_sample_is_capped_and_seeded(tables):
    with pytest.raises(ConfigError, match="make 19 prompts, more than the limit of 18"):
        expand(**tables, cap=18)
    with pytest.raises(ConfigError, match="sample=true"):
        METHODS.get("template-expansion")(**tables).expand(limit=5)
    everything = [x["prompt"] for x in expand(**tables)]
    a = [x["prompt"] for x in expand(**tables, sample=True, cap=7)]
    assert len(a) == len(set(a)) == 7 and set(a) <= set(everything)
    assert a == [p for p in everything if p in a]  # kept in product order
    assert a == [x["prompt"] for x in expand(**tables, sample=True, cap=7)]  # fixed seed
    assert a != [x["prompt"] for x in expand(**tables, sample=True, cap=7, seed=1)]
    assert len(METHODS.get("template-expansion")(**tables, sample=True).expand(limit=4)) == 4
    assert sorted(x["prompt"] for x in expand(**tables, sample=True, cap=100)) == sorted(
        everything)  # a sample as large as the product is all of it


def test_a_sample_of_a_large_product_never_builds_it(tmp_path):
    values = tmp_path / "v.txt"
    values.write_text("\n".join(f"value {i}" for i in range(1500)))
    templates = tmp_path / "t.txt"
    templates.write_text("Compare {a} with {b}.\n")
    start = time.perf_counter()
    out = expand(templates=str(templates), slots={"a": str(values), "b": str(values)},
                 sample=True, cap=50)
    assert time.perf_counter() - start < 5  # 2.25M combinations, 50 drawn
    assert len({x["prompt"] for x in out}) == 50


def test_template_fields_must_be_slots(tmp_path, tables):
    bad = jsonl(tmp_path / "bad.jsonl", [{"template": "About {issue} and {topic}."}])
    with pytest.raises(ConfigError, match=r"bad.jsonl row 1: template field \{topic\} is not a "
                       r"slot; slots are: issue, reader"):
        expand(**{**tables, "templates": bad})
    odd = jsonl(tmp_path / "odd.jsonl", [{"template": "Unclosed {issue"}])
    with pytest.raises(ConfigError, match="literal braces"):
        expand(**{**tables, "templates": odd})
    with pytest.raises(ConfigError, match="capp"):
        METHODS.get("template-expansion")(capp=3)


def fake(responder):
    spec = GeneratorSpec.parse("fake:scripted", sampling={"max_tokens": 400},
                               limits={"max_retries": 0})
    return spec, FakeBackend(spec, responder=responder)


def test_a_run_answers_validates_and_curates_every_prompt(tmp_path, tables):
    eval_item = orjson.loads((ASSETS / "gsm8k" / "test.jsonl").read_bytes().splitlines()[0])
    templates = jsonl(tmp_path / "run-templates.jsonl", [
        {"template": "Write a tweet about {issue}."},
        {"template": "Write a tweet about {issue}."},          # a duplicate template
        {"template": eval_item["question"] + " Answer for {issue}."},
    ])

    def responder(request):
        prompt = request.messages[0].content
        if "zoos being bad" in prompt:
            return ""
        if "keeping cash" in prompt:
            return {"error": 500}
        return f"A few words on: {prompt[-40:]}"

    spec, backend = fake(responder)
    args = {**tables, "templates": templates}
    res = api.generate(spec, None, method="template-expansion", method_args=args,
                       backend=backend)
    assert len(res.instances) == 18 and len(backend.history) < 18  # duplicates share a key
    reasons = Counter(x.reject_reason for x in res.instances if not x.valid)
    assert reasons["empty response"] == 3
    assert reasons["request failed: http_500"] == 3
    assert sum(n for r, n in reasons.items() if r.startswith("exact duplicate of #")) == 4
    assert sum(n for r, n in reasons.items() if r.startswith("contaminated by gsm8k")) == 4
    assert len(res.valid) == 18 - 14
    assert all(x.meta["slots"]["issue"]["variant"] for x in res.instances)
    again_spec, again = fake(responder)
    rerun = api.generate(again_spec, None, method="template-expansion", method_args=args,
                         backend=again)
    assert rerun.run_id == res.run_id and len(again.history) == 2  # only the failures resent
    (tmp_path / "run-templates.jsonl").write_text('{"template": "Write about {issue}."}\n')
    edited = api.generate(fake(responder)[0], None, method="template-expansion",
                          method_args=args, backend=fake(responder)[1])
    assert edited.run_id != res.run_id


def test_the_shipped_templates_and_issues_run_offline_from_the_defaults():
    m = METHODS.get("template-expansion")()
    out = m.expand()
    assert len(out) == 20 * 12 * 3
    assert {x["slots"]["issue"]["variant"] for x in out} == {"neutral", "pro", "con"}
    res = api.generate("fake", None, n=24, method="template-expansion",
                       method_args={"sample": True})
    assert len(res.instances) == 24 and all(x.valid for x in res.instances)
    with pytest.raises(ConfigError, match="720 prompts, more than the limit of 24"):
        api.generate("fake", None, n=24, method="template-expansion")

"""Every method's output is curated: duplicates and evaluation items never reach the data a
student trains on, pairs included, and a run that could not be decontaminated says so."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from datagen import api
from datagen.cli import app
from datagen.pairs import load_pairs
from datagen_core.records import GeneratorSpec
from generators.backends.fake import FakeBackend
from tests.conftest import ASSETS

GSM8K_0 = orjson.loads((ASSETS / "gsm8k" / "test.jsonl").read_bytes().splitlines()[0])["question"]


def fake(name: str = "fake:gen", responder=None) -> tuple[GeneratorSpec, FakeBackend]:
    spec = GeneratorSpec.parse(name, sampling={"max_tokens": 400}, limits={"max_retries": 0})
    return spec, FakeBackend(spec, responder=responder or (lambda q: "An answer."))


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return str(path)


def curation(run_id: str) -> dict:
    return orjson.loads(api.show_run(run_id)["curation"])


def test_prompt_method_rows_are_deduplicated_and_decontaminated(tmp_path: Path):
    source = jsonl(tmp_path / "p.jsonl", [{"prompt": "Tell me about owls."},
                                          {"prompt": "Tell me about owls."},
                                          {"prompt": GSM8K_0},
                                          {"prompt": "Tell me about cats."}])
    spec, backend = fake()
    res = api.generate(spec, source, backend=backend, progress=False)
    reasons = [x.reject_reason for x in res.instances]
    assert reasons[0] is None and reasons[3] is None
    assert reasons[1] == "exact duplicate of #0"
    assert reasons[2].startswith("contaminated by gsm8k #0")
    c = curation(res.run_id)
    assert c["decontaminated"] is True
    assert c["counts"] == {"input": 4, "kept": 2, "exact": 1, "near": 0, "contaminated": 1}
    assert c["contaminated_by"]["gsm8k"] == 1
    data = [orjson.loads(x) for x in (res.run_dir / "data.jsonl").read_bytes().splitlines()]
    assert [r["index"] for r in data] == [0, 3]


def test_seed_rows_that_are_eval_items_are_never_sent(tmp_path: Path):
    seeds = [orjson.loads(x) for x in (Path(api.__file__).parents[1] / "generators" / "seeds"
                                       / "math.jsonl").read_bytes().splitlines()[:3]]
    source = jsonl(tmp_path / "s.jsonl", [*seeds, {"instruction": GSM8K_0,
                                                   "response": "It is 18.\n#### 18"}])
    spec, backend = fake(responder=lambda q: "Half of it.\n#### 9")
    plan = api.plan_run(spec, source, method="response-generation", domain="math")
    assert plan.seed_drops == {"input": 4, "dropped": 1, "by": {"gsm8k": 1}}
    res = api.generate(spec, source, method="response-generation", domain="math",
                       backend=backend, progress=False)
    sent = [q.messages[-1].content for q in backend.history]
    assert len(sent) == 3 and not any("Janet" in s for s in sent)
    assert curation(res.run_id)["seeds"] == {"input": 4, "dropped": 1, "by": {"gsm8k": 1}}


@pytest.mark.parametrize("method", ["instance-generation", "quality-enhancement"])
def test_generated_instructions_that_are_eval_items_are_dropped(method: str):
    calls: list[int] = []

    def responder(q):
        i = len(calls)
        calls.append(i)
        if i == 0:  # the generator "invents" a GSM8K test question
            return f"Instruction: {GSM8K_0}\nResponse: 16 - 3 - 4 = 9, 9 * 2 = 18.\n#### 18"
        return (f"Instruction: A shop sells {i + 3} apples a day for {i} weeks. How many "
                f"apples does it sell in all?\nResponse: Multiply.\n#### {7 * i * (i + 3)}")

    spec, backend = fake(responder=responder)
    res = api.generate(spec, None, n=3, method=method, domain="math", backend=backend,
                       progress=False)
    leaked = [x for x in res.instances if "Janet" in x.messages[0].content]
    assert len(leaked) == 1 and not leaked[0].valid
    assert leaked[0].reject_reason.startswith("contaminated by gsm8k #0")
    assert sum(x.valid for x in res.instances) == 2
    assert curation(res.run_id)["contaminated_by"]["gsm8k"] == 1


AGREE = {"ab": "Score A: 5\nScore B: 2\nBetter: A", "ba": "Score A: 2\nScore B: 5\nBetter: B"}


def test_pairs_are_deduplicated_and_dropped_when_their_prompt_is_an_eval_item(tmp_path: Path):
    source = jsonl(tmp_path / "alfa.jsonl", [
        {"id": "clean", "context": "My knee hurts after running on hills for a week.",
         "question": "Which knee?"},
        {"id": "leak", "context": GSM8K_0, "question": "Eggs?"}])

    def gen(q):  # the same three questions for both attributes: the pairs repeat
        return ("Original: Which knee is it?\nEnhanced: Which knee, and where exactly?\n"
                "Corrupted: Knee?")

    spec, backend = fake(responder=gen)
    jspec, judge = fake("fake:judge", lambda q: AGREE[q.meta["order"]])
    res = api.generate(spec, source, n=2, method="attribute-variants",
                       method_args={"attributes": ["clarity", "focus"], "judge": "fake:judge"},
                       backend=backend, backends={jspec.label: judge}, progress=False)
    assert {p.meta["row_id"] for p in res.pairs} == {"clean"}
    assert {p.attribute for p in res.pairs} == {"clarity"}  # focus repeats clarity's pairs
    rejected = [orjson.loads(x) for x in
                (res.run_dir / "rejected-pairs.jsonl").read_bytes().splitlines()]
    why = sorted(re.sub(r"#\d+.*", "#", r["meta"]["dropped"]) for r in rejected)
    # duplicates first (3 per row), then the leaked row's remaining three pairs
    assert why == ["exact duplicate of pair #"] * 6 + ["prompt contaminated by gsm8k #"] * 3
    c = curation(res.run_id)["pairs"]
    assert c["input"] == 12 and c["kept"] == 3 and c["contaminated"] == 6
    assert api.show_run(res.run_id)["n_pairs"] == 3
    assert len(load_pairs(res.run_id)) == 3


def test_edit_pairs_of_an_eval_item_are_dropped(tmp_path: Path):
    source = jsonl(tmp_path / "texts.jsonl", [
        {"id": "ok", "text": "The park was quiet this morning.", "targets": {"length": 8}},
        {"id": "leak", "text": GSM8K_0, "targets": {"length": 8}}])
    spec, backend = fake(responder=lambda q: " ".join(["stone"] * (8 - q.meta["candidate"])))
    res = api.generate(spec, source, method="multi-attribute-edit",
                       method_args={"k": 0, "rounds": 1, "candidates": 2,
                                    "evaluators": {"length": {"tolerance": 0}}},
                       backend=backend, progress=False)
    leaked = [x for x in res.instances if "Janet" in x.messages[0].content]
    assert leaked and not any(x.valid for x in leaked)
    assert all("gsm8k" in (x.reject_reason or "") for x in leaked)
    assert all("Janet" not in p.prompt[0].content for p in res.pairs)


def test_a_run_without_its_eval_sets_says_it_is_not_decontaminated(tmp_path, monkeypatch):
    source = jsonl(tmp_path / "p.jsonl", [{"prompt": "Tell me about owls."}])
    spec, backend = fake()
    clean = api.generate(spec, source, backend=backend, progress=False)
    monkeypatch.setenv("DATAGEN_EVAL_DIR", str(tmp_path / "empty"))
    dirty = api.generate(spec, source, backend=backend, progress=False)
    assert dirty.run_id != clean.run_id  # not the same run as the decontaminated one
    c = curation(dirty.run_id)
    assert c["decontaminated"] is False and "decontamination skipped" in c["skipped"]
    out = CliRunner().invoke(app, ["runs"], env={"COLUMNS": "200"}).output
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.split()}
    assert "not decontaminated" in lines[dirty.run_id]
    assert "not decontaminated" not in lines[clean.run_id]
    shown = CliRunner().invoke(app, ["runs", "show", dirty.run_id]).output
    assert re.search(r"decontaminated\s+no: decontamination skipped: eval file", shown)


def test_an_unreachable_hub_fails_fast_with_one_line(tmp_path, monkeypatch):
    """Offline without local eval sets: the Hub is probed once (not retried for every set), the
    run is kept and says it was not decontaminated, and an hf:// source is one clear line."""
    from datagen_core.errors import InputError
    from datagen_core.sources import _probe, load_rows

    monkeypatch.delenv("DATAGEN_EVAL_DIR")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    _probe.cache_clear()
    try:
        source = jsonl(tmp_path / "p.jsonl", [{"prompt": "Tell me about owls."}])
        spec, backend = fake()
        res = api.generate(spec, source, backend=backend, progress=False)
        assert res.curation["decontaminated"] is False
        assert "127.0.0.1 is unreachable" in res.curation["skipped"]
        with pytest.raises(InputError, match=r"cannot load hf://org/name:train from the HF Hub: "
                           r"127\.0\.0\.1 is unreachable .* HF_HUB_OFFLINE=1"):
            load_rows("hf://org/name:train")
    finally:
        _probe.cache_clear()

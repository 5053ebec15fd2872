"""preference-pairs with a scripted pool (two generators) and a scripted rating judge.

Each completion names its generator, row and sample, and the judge rates it from a table keyed on
those, so every test knows exactly which pair a correct implementation builds or drops.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from datagen import api
from datagen.cli import app
from datagen.pairs import export_pairs
from datagen_core.errors import ConfigError
from datagen_core.records import GeneratorSpec
from generators.backends.fake import FakeBackend
from generators.methods.preference_pairs import PreferencePairs, parse_ratings

ASPECTS = ["helpfulness", "instruction-following", "honesty", "truthfulness"]
PROMPTS = [{"id": f"p{i}", "prompt": f"Question number {i}?"} for i in range(5)]


def answer(request) -> str:
    m = request.meta
    return f"[{m['generator']}|{m['row_id']}|{request.sample}] an answer"


def lines(*ratings: float) -> str:
    return "\n".join(f"{a.capitalize()}: {r:g}" for a, r in zip(ASPECTS, ratings))


# (row, generator, sample) -> judge reply. Means: p0 gen 4.5 / other 2.0 (margin 2.5); p1 all
# 3 (tie); p2 gen 4 / other 3.5 (margin 0.5: dropped by min_margin 1); p3 gen 5 / other
# unparseable (one rated completion: no pair); p4 gen 2 / other 4 (other chosen).
RATINGS = {
    ("p0", "fake:gen"): lines(5, 4, 5, 4), ("p0", "fake:other"): lines(2, 2, 2, 2),
    ("p1", "fake:gen"): lines(3, 3, 3, 3), ("p1", "fake:other"): lines(3, 3, 3, 3),
    ("p2", "fake:gen"): lines(4, 4, 4, 4), ("p2", "fake:other"): lines(4, 3, 4, 3),
    ("p3", "fake:gen"): lines(5, 5, 5, 5), ("p3", "fake:other"): "Helpfulness: great",
    ("p4", "fake:gen"): lines(2, 2, 2, 2), ("p4", "fake:other"): lines(4, 4, 4, 4),
}
WHO = re.compile(r"\[(fake:\w+)\|(p\d)\|(\d)\]")


def rate(request) -> str:
    text = request.messages[0].content
    if "Response A:" in text:  # pairwise: always prefer the answer from fake:gen, by content
        a, b = (m.group(1) for m in WHO.finditer(text))  # Response A's writer, then B's
        if a == b:
            return "Score A: 3\nScore B: 3\nBetter: A"
        return ("Score A: 5\nScore B: 2\nBetter: A" if a == "fake:gen" else
                "Score A: 2\nScore B: 5\nBetter: B")
    gen, row, _ = WHO.search(text.split("The response to rate:")[1]).groups()  # type: ignore
    return RATINGS[(row, gen)]


def fake(name: str, responder) -> tuple[GeneratorSpec, FakeBackend]:
    spec = GeneratorSpec.parse(name, limits={"max_retries": 0})
    return spec, FakeBackend(spec, responder=responder)


def run(tmp_path: Path, judge=rate, **args):
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in PROMPTS))
    spec, gen = fake("fake:gen", answer)
    ospec, other = fake("fake:other", answer)
    jspec, jb = fake("fake:judge", judge)
    args = {"pool": ["fake:other"], "judge": "fake:judge", **args}
    res = api.generate(spec, str(src), method="preference-pairs", method_args=args,
                       backend=gen, backends={ospec.label: other, jspec.label: jb},
                       progress=False)
    return res, {"gen": gen, "other": other, "judge": jb}


def test_parse_ratings_is_robust_and_strict():
    text = "**Helpfulness**: 4/5\ninstruction following - 3 out of 5\nHonesty rating: 5\n" \
           "TRUTHFULNESS = 2.5"
    assert parse_ratings(text, ASPECTS) == ({"helpfulness": 4, "instruction-following": 3,
                                            "honesty": 5, "truthfulness": 2.5}, None)
    assert parse_ratings("Helpfulness: 4", ASPECTS)[1] == (
        "judge gave no rating for: instruction-following, honesty, truthfulness")
    assert parse_ratings(lines(4, 4, 9, 4), ASPECTS)[1] == "judge rating outside 1-5 for: honesty"


def test_pairs_kept_and_dropped_by_the_rule(tmp_path: Path):
    res, b = run(tmp_path, min_margin=1)
    assert len(b["gen"].history) == 5 and len(b["other"].history) == 5  # one sample each
    assert len(b["judge"].history) == 10
    assert all("fake:" not in q.messages[0].content.split("The response")[0]
               for q in b["judge"].history)  # the judge is blind to the generator
    by_row = {p.meta["row_id"]: p for p in res.pairs}
    assert sorted(by_row) == ["p0", "p4"]
    p0, p4 = by_row["p0"], by_row["p4"]
    assert p0.margin == 2.5 and p0.weight == 2.5 / 4
    assert p0.chosen[0].content.startswith("[fake:gen|p0") and p0.meta["chosen_generator"] == (
        "fake:gen") and p0.meta["rejected_generator"] == "fake:other"
    assert p4.meta["chosen_generator"] == "fake:other" and p4.margin == 2.0
    assert p0.prompt[0].content == "Question number 0?"
    assert p0.evidence["judge"] == "fake:judge"
    assert p0.evidence["chosen_ratings"] == dict(zip(ASPECTS, [5.0, 4.0, 5.0, 4.0]))
    assert p0.evidence["rejected_ratings"] == dict.fromkeys(ASPECTS, 2.0)
    assert [c["generator"] for c in p0.evidence["completions"]] == ["fake:gen", "fake:other"]

    reasons = {(x.meta["row_id"], x.meta["generator"]): x.reject_reason for x in res.instances}
    assert reasons[("p0", "fake:gen")] is None
    assert reasons[("p0", "fake:other")] == "rejected side of a pair"
    assert reasons[("p1", "fake:gen")] == "ratings tied: no completion rated below the best"
    assert reasons[("p2", "fake:other")] == "no completion at least min_margin 1.0 below the best"
    assert reasons[("p3", "fake:other")] == "judge gave no rating for: helpfulness, " \
                                            "instruction-following, honesty, truthfulness"
    assert reasons[("p3", "fake:gen")] == "fewer than 2 rated completions for the prompt (1)"

    # without the margin threshold p2's half-point gap is a pair
    res2, _ = run(tmp_path)
    assert sorted(p.meta["row_id"] for p in res2.pairs) == ["p0", "p2", "p4"]

    # a re-run sends nothing and gives the same pairs
    again, b2 = run(tmp_path, min_margin=1)
    assert again.run_id == res.run_id and again.stats.sent == 0
    assert not b2["gen"].history and not b2["other"].history and not b2["judge"].history
    assert [p.pair_id for p in again.pairs] == [p.pair_id for p in res.pairs]

    out = tmp_path / "pairs.jsonl"
    export_pairs(res.run_id, out)
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert len(rows) == 2 and set(rows[0]) == {"prompt", "chosen", "rejected"}
    assert rows[0]["prompt"] == [{"role": "user", "content": "Question number 0?"}]
    assert rows[0]["chosen"][0]["role"] == "assistant"
    assert res.curation["pairs"]["input"] == 2 and res.curation["pairs"]["kept"] == 2


def test_samples_of_one_generator_and_a_seeded_draw(tmp_path: Path):
    def judge(request):  # sample s of every row rated s+1 on every aspect
        s = int(WHO.search(request.messages[0].content.split("to rate:")[1]).group(3))  # type: ignore
        return lines(*[s + 1] * 4)

    res, b = run(tmp_path, judge=judge, pool=[])
    assert len(b["gen"].history) == 5 * 4 and not b["other"].history  # 4 samples by default
    assert len(res.pairs) == 5
    assert all(p.chosen[0].content.endswith("|3] an answer") for p in res.pairs)
    drawn = [p.evidence["rejected_ratings"]["honesty"] for p in res.pairs]
    assert set(drawn) <= {1.0, 2.0, 3.0}
    res2, _ = run(tmp_path, judge=judge, pool=[], seed=1)
    assert res2.run_id != res.run_id
    assert drawn == [p.evidence["rejected_ratings"]["honesty"] for p in run(
        tmp_path, judge=judge, pool=[])[0].pairs]


def test_pairwise_excludes_position_inconsistent_pairs(tmp_path: Path):
    def judge(request):
        text = request.messages[0].content
        if "Response A:" in text and "|p4|" in text:
            return "Score A: 4\nScore B: 3\nBetter: A"  # always the first shown
        return rate(request)

    res, b = run(tmp_path, judge=judge, pairwise=True)
    # p0 (gen chosen) kept; p2 (gen chosen) kept; p4 chosen from fake:other, the judge always
    # picks position A: inconsistent
    assert sorted(p.meta["row_id"] for p in res.pairs) == ["p0", "p2"]
    p0 = next(p for p in res.pairs if p.meta["row_id"] == "p0")
    assert p0.evidence["pairwise"]["outcome"] == "kept"
    assert p0.evidence["pairwise"]["ab"]["better"] == "A"
    p4 = [x for x in res.instances if x.meta["row_id"] == "p4"]
    assert {x.reject_reason for x in p4} == {
        "pairwise check failed: position-inconsistent (both orders picked A)"}
    assert p4[0].meta["pairwise"]["ba"]["better"] == "A"
    assert len(b["judge"].history) == 10 + 3 * 2


def test_bad_arguments_are_one_line(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown aspect.*concision"):
        PreferencePairs(aspects=["concision"])
    assert PreferencePairs(aspects=["concision"], definitions={"concision": "short"}).rubric
    with pytest.raises(ConfigError, match="distinct"):
        PreferencePairs(pool=["fake:a", "fake:a"])
    with pytest.raises(ConfigError, match="min_margin"):
        PreferencePairs(min_margin=-1)


def test_a_failed_judge_request_is_a_reason_and_a_rerun_resends_only_it(tmp_path: Path):
    def flaky(request):
        text = request.messages[0].content
        if "[fake:other|p0|" in text:
            return {"error": 400}  # invalid: not retried
        return rate(request)

    res, _ = run(tmp_path, judge=flaky)
    assert sorted(p.meta["row_id"] for p in res.pairs) == ["p2", "p4"]
    reasons = {(x.meta["row_id"], x.meta["generator"]): x.reject_reason for x in res.instances}
    assert reasons[("p0", "fake:other")].startswith("judge request failed")
    again, b = run(tmp_path)
    assert again.run_id == res.run_id
    assert not b["gen"].history and not b["other"].history and len(b["judge"].history) == 1
    assert sorted(p.meta["row_id"] for p in again.pairs) == ["p0", "p2", "p4"]


def test_the_generator_cannot_join_its_own_pool(tmp_path: Path):
    with pytest.raises(ConfigError, match="pool member 'fake:gen' is fake:gen, already in"):
        run(tmp_path, pool=["fake:gen"])


def test_cli_generate_with_a_scripted_pool_and_judge(tmp_path: Path):
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in PROMPTS[:2]))
    judge = tmp_path / "judge.yaml"
    judge.write_text(yaml.safe_dump({"spec": "fake:judge", "options": {
        "replies": [lines(5, 5, 4, 4), lines(2, 2, 3, 3)], "cycle": True},
        "limits": {"concurrency": 1}}))
    gen = tmp_path / "gen.yaml"
    gen.write_text(yaml.safe_dump({"spec": "fake:gen", "options": {
        "replies": ["A careful, complete answer.", "Dunno."], "cycle": True},
        "limits": {"concurrency": 1}}))
    r = CliRunner().invoke(app, ["generate", "-g", str(gen), "-m", "preference-pairs", "-i",
                                 str(src), "-a", "samples=2", "-a", f"judge={judge}"])
    assert r.exit_code == 0, r.output
    assert "2/4 rows kept" in r.output
    rid = re.search(r"run (\w+):", r.output).group(1)  # type: ignore[union-attr]
    out = tmp_path / "pairs.jsonl"
    r = CliRunner().invoke(app, ["pairs", "export", rid, "--format", "trl", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [x["chosen"][0]["content"] for x in rows] == ["A careful, complete answer."] * 2


def test_trl_dpo_trainer_takes_the_export_of_a_two_generator_pool(tmp_path: Path):
    """The issue's bar: pairs from a pool of two generators plus a judge, exported, and one
    DPOTrainer step on the file as is."""
    import copy

    import datasets

    from tests.test_pairs_export import _tiny_model_and_tokenizer

    model, tok = _tiny_model_and_tokenizer()
    from trl import DPOConfig, DPOTrainer

    res, _ = run(tmp_path)
    path = export_pairs(res.run_id, tmp_path / "dpo.jsonl")
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert len(ds) == 3 and ds.column_names == ["prompt", "chosen", "rejected"]
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, report_to=[],
                     per_device_train_batch_size=3, save_strategy="no", use_cpu=True,
                     max_length=128)
    trainer = DPOTrainer(model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds,
                         processing_class=tok)
    assert trainer.train().global_step == 1

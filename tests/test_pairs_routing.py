"""Human routing round trip with a scripted "human": route -> label file -> import -> agreement ->
export, on preference pairs made by a scripted pool and judge.

Sixteen prompts, two generators. A hidden ground truth (``TRUTH``) says which generator's answer
is better. On p0-p11 the judge rates the true winner higher on every aspect, with margins 1, 2
or 3 (``RELIABLE``). On p12-p15 it is a close call (margin 0.25) and the aspects disagree (two of
four favour the other answer): there the judge picks the wrong answer on p12 and p13, the right
one on p14 and p15, and the scripted human, who reads the generator tag in each answer and
prefers the true winner, calls p15 a tie. A reward model (the fields the reward scorer writes,
planted here) agrees with the truth everywhere, so it contradicts the judge on p12 and p13.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from datagen import api
from datagen.cli import app
from datagen.pairs import load_pairs
from datagen.routing import a_side, budget_count, build_scorer, spreadsheet_safe
from datagen_core.errors import ConfigError, InputError
from datagen_core.records import GeneratorSpec
from datagen_core.workspace import Workspace
from generators.backends.fake import FakeBackend
from metrics.store import Store

ASPECTS = ["helpfulness", "instruction-following", "honesty", "truthfulness"]
ROWS = [f"p{i}" for i in range(16)]
TRUTH = {r: ("fake:gen" if i % 2 == 0 or i >= 12 else "fake:other") for i, r in enumerate(ROWS)}
JUDGE_PICKS = {**TRUTH, "p12": "fake:other", "p13": "fake:other"}
HUMAN_TIES = {"p15"}
TAG = re.compile(r"\[(fake:\w+)\|(p\d+)\|\d\]")


def other(gen: str) -> str:
    return "fake:other" if gen == "fake:gen" else "fake:gen"


def answer(request) -> str:
    m = request.meta
    lead = "=HYPERLINK(x) " if m["row_id"] == "p12" else ""  # a formula, for the CSV check
    return f"{lead}[{m['generator']}|{m['row_id']}|{request.sample}] an answer"


def ratings(row: str, gen: str) -> list[float]:
    i = int(row[1:])
    if i < 12:  # the truth 5 on every aspect, the other side 4, 3 or 2 on every aspect
        return [5.0] * 4 if gen == TRUTH[row] else [4.0 - i % 3] * 4
    # close call: the judge's pick means 4, the other 3.75, two aspects the other way round
    return [5, 5, 3, 3] if gen == JUDGE_PICKS[row] else [3, 4, 4, 4]


def judge(request) -> str:
    text = request.messages[0].content.split("The response to rate:")[1]
    gen, row = TAG.search(text).groups()  # type: ignore[union-attr]
    return "\n".join(f"{a.capitalize()}: {r:g}" for a, r in zip(ASPECTS, ratings(row, gen)))


def fake(name: str, responder) -> tuple[GeneratorSpec, FakeBackend]:
    spec = GeneratorSpec.parse(name, limits={"max_retries": 0})
    return spec, FakeBackend(spec, responder=responder)


@pytest.fixture
def run_id(tmp_path: Path) -> str:
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps({"id": r, "prompt": f"Question {r}?"})
                               for r in ROWS))
    spec, gen = fake("fake:gen", answer)
    ospec, oth = fake("fake:other", answer)
    jspec, jb = fake("fake:judge", judge)
    res = api.generate(spec, str(src), method="preference-pairs",
                       method_args={"pool": ["fake:other"], "judge": "fake:judge"},
                       backend=gen, backends={ospec.label: oth, jspec.label: jb},
                       progress=False)
    assert len(res.pairs) == 16
    store = Store(Workspace.resolve().db_path)
    scored = []  # what the reward scorer writes: the truth's side scores 1, the other 0
    for p in store.read_pairs(res.run_id):
        chosen_gen = TAG.search(p.chosen[0].content).group(1)  # type: ignore[union-attr]
        rm = {"model": "scripted-rm", "chosen": float(chosen_gen == TRUTH[p.meta["row_id"]]),
              "rejected": float(chosen_gen != TRUTH[p.meta["row_id"]])}
        scored.append(p.model_copy(update={"evidence": {**p.evidence, "reward": rm}}))
    store.write_pairs(res.run_id, scored)
    return res.run_id


def human(response_a: str, response_b: str) -> str:
    """The scripted person: the answer the ground truth prefers, or a tie on HUMAN_TIES."""
    gen_a, row = TAG.search(response_a).groups()  # type: ignore[union-attr]
    if row in HUMAN_TIES:
        return "tie"
    return "A" if gen_a == TRUTH[row] else "B"


def row_of(text: str) -> str:
    return TAG.search(text).group(2)  # type: ignore[union-attr]


def test_round_trip_route_label_import_agreement_export(run_id: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]):
    runner = CliRunner()
    pairs = {p.pair_id: p for p in load_pairs(run_id)}

    # 1. the judge's least reliable quarter: exactly the four close calls, as a safe CSV
    first = tmp_path / "batch1.csv"
    r = runner.invoke(app, ["pairs", "route", run_id[:8], "--budget", "0.25", "--out",
                            str(first), "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert "routed 4 of 16 pairs (0 already labelled)" in r.output and "fixed" in r.output
    with open(first, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row_of(x["response_a"]) for x in rows} == {"p12", "p13", "p14", "p15"}
    assert list(rows[0]) == ["pair_id", "run_id", "attribute", "prompt", "response_a",
                             "response_b", "label"]  # nothing says which side the judge chose
    for x in rows:  # the blind order is the recorded one, and a formula is defused
        p = pairs[x["pair_id"]]
        side = p.chosen if a_side(p.pair_id) == "chosen" else p.rejected
        assert x["response_a"] == spreadsheet_safe(side[0].content)
    p12 = next(x for x in rows if "p12" in x["response_a"])
    assert p12["response_a"].startswith("'=") and p12["response_b"].startswith("'=")
    assert {a_side(pid) for pid in pairs} == {"chosen", "rejected"}  # both orders occur

    for x in rows:
        x["label"] = human(x["response_a"], x["response_b"])
    with open(first, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = runner.invoke(app, ["pairs", "import-labels", run_id, str(first)])
    assert r.exit_code == 0, r.output
    assert ("stored 4 labels" in r.output and "1 agree with the judge, 2 prefer the rejected "
            "side, 1 ties" in r.output)
    by_row = {pairs[x["pair_id"]].meta["row_id"]: x["label"] for x in api.pair_labels(run_id)}
    assert by_row == {"p12": "rejected", "p13": "rejected", "p14": "chosen", "p15": "tie"}

    # 2. the next four (margin 1), as Label Studio tasks; labelled there by "audit"
    second = tmp_path / "batch2.json"
    res = api.route_pairs(run_id, 4, second, "label-studio")
    assert res.scorer == "fixed" and res.n_labelled == 4
    assert res.config_path is not None and "<Choice value=\"tie\"/>" in \
        res.config_path.read_text()
    tasks = orjson.loads(second.read_bytes())
    assert [set(t) for t in tasks] == [{"data"}] * 4
    assert {row_of(t["data"]["response_a"]) for t in tasks} == {"p0", "p3", "p6", "p9"}
    export = [{"id": i, "data": t["data"], "annotations": [{
        "completed_by": 7, "was_cancelled": False, "result": [{
            "from_name": "preference", "to_name": "prompt", "type": "choices",
            "value": {"choices": [human(t["data"]["response_a"], t["data"]["response_b"])]}}]}]}
        for i, t in enumerate(tasks)]
    (tmp_path / "ls-export.json").write_bytes(orjson.dumps(export))
    imp = api.import_labels(run_id, tmp_path / "ls-export.json", annotator="audit")
    assert imp.annotators == ["audit"] and imp.counts == {"chosen": 4, "rejected": 0, "tie": 0}

    # 3. eight labels with both outcomes: a predictor learnt from them scores the rest
    third = api.route_pairs(run_id, 0.25)
    assert third.scorer == "learned" and third.n_labelled == 8
    assert not {r.pair_id for r in third.pairs} & {x["pair_id"] for x in rows}
    assert len(third.pairs) == 4
    learned = build_scorer(Store(Workspace.resolve().db_path))
    close_call = {"order_disagree": None, "small_margin": 0.9, "aspect_conflict": 0.5,
                  "rm_disagree": 1.0}
    clear = {"order_disagree": None, "small_margin": 0.6, "aspect_conflict": 0.0,
             "rm_disagree": 0.0}
    hi, lo = learned.scores([close_call, clear])
    assert hi > 0.5 > lo  # it learnt that close calls the reward model disputes go wrong

    # 4. agreement: overall and per bucket, printed for the closing note
    table = api.label_agreement(run_id)
    got = {(r.feature, r.bucket): (r.n, r.agree, r.disagree, r.tie) for r in table}
    assert got[("overall", "all")] == (8, 5, 2, 1)
    assert got[("aspects", "conflict")] == (4, 1, 2, 1)
    assert got[("aspects", "agree")] == (4, 4, 0, 0)
    assert got[("reward model", "disagrees")] == (2, 0, 2, 0)
    assert got[("reward model", "agrees")] == (6, 5, 0, 1)
    assert got[("fixed score tercile", "high")] == (4, 1, 2, 1)
    assert got[("fixed score tercile", "mid")] == (4, 4, 0, 0)
    overall = next(r for r in table if r.feature == "overall")
    assert overall.agreement == pytest.approx(5 / 7)
    r = runner.invoke(app, ["pairs", "agreement", run_id])
    assert r.exit_code == 0, r.output
    with capsys.disabled():
        print("\njudge-human agreement (scripted human):\n" + r.stdout)

    # 5. export: people's labels win (two swaps, one tie dropped), the rest keep the judge's
    full = tmp_path / "mixed.jsonl"
    r = runner.invoke(app, ["pairs", "export", run_id, "--format", "jsonl", "--out", str(full)])
    assert r.exit_code == 0, r.output
    assert "7 pairs labelled by people (2 swapped), 1 dropped as ties" in r.output
    out = [orjson.loads(x) for x in full.read_bytes().splitlines()]
    assert len(out) == 15 and "p15" not in {x["meta"]["row_id"] for x in out}
    for x in out:
        row = x["meta"]["row_id"]
        winner = TAG.search(x["chosen"][0]["content"]).group(1)  # type: ignore[union-attr]
        assert winner == TRUTH[row]  # every pair now prefers the truth: the judge's or people's
        assert x["label_source"] == ("human" if row in {"p0", "p3", "p6", "p9", "p12", "p13",
                                                        "p14"} else "lm")
    swapped = {x["meta"]["row_id"]: x for x in out if x["meta"].get("swapped_by_people")}
    assert set(swapped) == {"p12", "p13"} and swapped["p12"]["margin"] == -0.25
    assert swapped["p12"]["weight"] is None
    trl = api.export_pairs(run_id, tmp_path / "trl.jsonl")
    rows_trl = [orjson.loads(x) for x in Path(trl).read_bytes().splitlines()]
    assert len(rows_trl) == 15 and all(set(x) == {"prompt", "chosen", "rejected"}
                                       for x in rows_trl)
    judge_only = tmp_path / "judge.jsonl"
    r = runner.invoke(app, ["pairs", "export", run_id, "--format", "jsonl", "--ignore-labels",
                            "--out", str(judge_only)])
    assert r.exit_code == 0, r.output
    plain = [orjson.loads(x) for x in judge_only.read_bytes().splitlines()]
    assert len(plain) == 16 and {x["label_source"] for x in plain} == {"lm"}
    p12_plain = next(x for x in plain if x["meta"]["row_id"] == "p12")
    assert "fake:other" in p12_plain["chosen"][0]["content"]


def test_pairs_metrics_through_the_cli(run_id: str):
    r = CliRunner().invoke(app, ["metrics", run_id])
    assert r.exit_code == 0, r.output
    values = api.intrinsic_values(run_id)
    assert values["pairs"] == (16, 16)
    assert values["judge_rm_agreement"] == (14 / 16, 16)  # wrong on p12 and p13
    assert values["aspect_conflict_rate"] == (0.25, 16)
    assert values["margin_min"] == (0.25, 16) and values["margin_max"] == (3.0, 16)
    assert "pair margins" in r.output


def test_malformed_label_files_name_the_row(run_id: str, tmp_path: Path):
    res = api.route_pairs(run_id, 2, tmp_path / "b.jsonl")
    lines = tmp_path / "b.jsonl"
    rows = [orjson.loads(x) for x in lines.read_bytes().splitlines()]
    rows[0]["label"], rows[1]["label"] = "A", "C"
    lines.write_bytes(b"\n".join(orjson.dumps(x) for x in rows))
    with pytest.raises(InputError, match=r"b\.jsonl line 2: label 'C' is not A, B or tie"):
        api.import_labels(run_id, lines)
    assert api.pair_labels(run_id) == []  # nothing stored from a file with a bad row
    rows[1]["label"], rows[1]["pair_id"] = "b", "nope"
    lines.write_bytes(b"\n".join(orjson.dumps(x) for x in rows))
    with pytest.raises(InputError, match="line 2: pair 'nope' is not a pair of run"):
        api.import_labels(run_id, lines)
    rows[1]["pair_id"], rows[1]["label"] = res.pairs[1].pair_id, ""
    lines.write_bytes(b"\n".join(orjson.dumps(x) for x in rows))
    imp = api.import_labels(run_id, lines)
    assert imp.n_labels == 1 and imp.n_unlabelled == 1
    with pytest.raises(ConfigError, match="budget must be above 0"):
        budget_count(0, 10)
    with pytest.raises(ConfigError, match="unknown routing format"):
        api.route_pairs(run_id, 0.2, tmp_path / "x", "argilla")


def test_cli_errors_are_one_line(run_id: str, tmp_path: Path):
    import subprocess
    import sys

    bad = tmp_path / "bad.csv"
    bad.write_text("pair_id,label\nabc,maybe\n")
    proc = subprocess.run([sys.executable, "-m", "datagen.cli", "pairs", "import-labels",
                           run_id, str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad} line 2: label 'maybe' is not A, B or tie"]

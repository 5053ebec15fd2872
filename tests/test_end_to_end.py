"""Slow end-to-end paths on real local models (run in CI with ``-m slow``)."""

from __future__ import annotations

import duckdb
import orjson
import pytest

from datagen import api
from datagen_core.errors import RunFailedError
from tests.conftest import ASSETS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["instance-generation", "response-generation",
                                    "quality-enhancement"])
def test_every_method_and_domain_runs_offline_with_smollm2(method):
    """The machinery is real end to end with the embedded model (quality may be poor): every
    output is either accepted or rejected with a reason, and `runs show` counts them."""
    spec = api.load_spec("hf:smollm2", sampling={"temperature": 0.7, "max_tokens": 48,
                                                      "seed": 0}, limits={"batch_size": 8})
    for domain in ("math", "code", "general"):
        try:
            res = api.generate(spec, n=2, method=method, domain=domain,
                               method_args={"k": 2} if method == "instance-generation" else None)
        except RunFailedError as e:  # nothing kept (poor quality is allowed): stored as failed
            res = e.result
        assert len(res.instances) == 2
        assert all(x.valid or x.reject_reason for x in res.instances)
        summary = api.show_run(res.run_id)
        rejected = sum(r["n"] for r in summary["rejections"])
        assert summary["n_valid"] + rejected == 2
        assert summary["n_ok"] == 2  # every request answered by the real model
        assert summary["status"] == ("finished" if summary["n_valid"] else "failed")


def test_students_on_generated_and_gold_data_are_evaluated_into_duckdb(tmp_path):
    """Train the tiny CPU student on a generated run and on gold GSM8K rows, evaluate both on
    a held-out GSM8K slice; scores and per-item rows land in DuckDB; re-running does nothing."""
    from datagen.api import evaluate
    from datagen.training import train
    from students.recipes import load_recipe

    fake = api.load_spec("fake:math", options={
        "replies": ["Add the amounts step by step to get the total.\n#### 42"], "cycle": True})
    gen = api.generate(fake, str(ASSETS / "gsm8k" / "train.jsonl"), n=64,
                       method="response-generation", domain="math",
                       method_args={"columns": {"instruction": "question"}})
    assert len(gen.valid) >= 60  # a train question or two overlaps a test item (decontaminated)
    gold = tmp_path / "gold.jsonl"
    lines = (ASSETS / "gsm8k" / "train.jsonl").read_bytes().splitlines()[:64]
    rows = [orjson.loads(line) for line in lines]
    gold.write_bytes(b"".join(orjson.dumps({"messages": [
        {"role": "user", "content": r["question"]},
        {"role": "assistant", "content": r["answer"]}]}) + b"\n" for r in rows))
    recipe = load_recipe("tiny-llama", max_steps=4)
    scores = {}
    for name, data in (("generated", gen.run_id), ("gold", str(gold))):
        student = train(data, recipe, use_ray=False)
        assert student.status == "finished" and student.model_path is not None
        result = evaluate(f"hf:{student.model_path}", ["gsm8k"], limit=5,
                          student_id=student.student_id)
        scores[name] = result["gsm8k"]
        again = evaluate(f"hf:{student.model_path}", ["gsm8k"], limit=5,
                         student_id=student.student_id)
        assert again["gsm8k"].cached and again["gsm8k"].score == result["gsm8k"].score
        retrained = train(data, recipe, use_ray=False)
        assert retrained.finished_at == student.finished_at  # never retrained
    from datagen_core.workspace import Workspace

    with duckdb.connect(str(Workspace.resolve().db_path), read_only=True) as con:
        for r in scores.values():
            n_items = con.execute("SELECT count(*) FROM item_scores WHERE eval_id = ?",
                                  [r.eval_id]).fetchone()
            assert n_items == (5,)
            assert con.execute("SELECT count(*) FROM scores WHERE eval_id = ?",
                               [r.eval_id]).fetchone()[0] >= 1
        assert con.execute("SELECT count(*) FROM students").fetchone() == (2,)


@pytest.mark.timeout(3600)  # 6-12 minutes on a quiet 2-core machine, 30 when it is shared
def test_quickstart_bench_ranks_the_generators_and_a_rerun_reuses_every_step(tmp_path):
    """README's main command: the offline quickstart suite end to end (SmolLM2 generators, Ray
    students, 500 held-out items), then the same suite again, which trains and generates nothing."""
    import re
    from pathlib import Path

    from typer.testing import CliRunner

    from datagen.api import bench
    from datagen.cli import app
    from datagen.suite import load_suite

    suite_path = Path(__file__).resolve().parents[1] / "configs" / "bench" / "quickstart.yaml"
    ws = tmp_path / "bench"
    res = CliRunner().invoke(app, ["-q", "-w", str(ws), "bench", str(suite_path)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for name in ("smollm2-t0.2", "smollm2-t1.0"):  # † : the suite opts out of decontamination
        assert re.search(rf"{re.escape(name)} † -?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]", text), text
    assert "† not decontaminated" in text
    report = ws / "report.html"
    assert report.is_file() and "smollm2-t0.2" in report.read_text()

    again = bench(load_suite(suite_path), workspace=ws, progress=False)
    heavy = [r for r in again.steps if r.step not in ("PGR", "leaderboard and report")]
    assert heavy and all(r.status == "reused" for r in heavy), [(r.cell, r.step, r.status)
                                                                 for r in heavy]
    with duckdb.connect(str(ws / "datagen.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT generator, pgr, ci_low, ci_high FROM pgr WHERE task = '*' "
                           "ORDER BY generator").fetchall()
    assert [r[0] for r in rows] == ["smollm2-t0.2", "smollm2-t1.0"]
    assert all(lo <= p <= hi for _, p, lo, hi in rows)


@pytest.mark.timeout(3600)  # 15-20 minutes on a quiet 2-core machine, 30+ when it is shared
def test_pairs_quickstart_ranks_the_verified_pair_source_above_its_unverified_control(tmp_path):
    """README's preference quickstart: two pair sources from the same SmolLM2 answers, compared
    by DPO students. Calibration: labels checked by the verifier must beat random labels."""
    import re
    from pathlib import Path

    from typer.testing import CliRunner

    from datagen.cli import app

    suite_path = (Path(__file__).resolve().parents[1] / "configs" / "bench"
                  / "pairs-quickstart.yaml")
    ws = tmp_path / "bench"
    res = CliRunner().invoke(app, ["-q", "-w", str(ws), "bench", str(suite_path)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for name in ("verified", "unverified"):
        assert re.search(rf"{name} † -?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]", text), text
    with duckdb.connect(str(ws / "datagen.duckdb"), read_only=True) as con:
        rows = dict(con.execute("SELECT generator, pgr FROM pgr WHERE task = '*'").fetchall())
        runs = {g: (n, reused) for g, n, reused in con.execute(
            "SELECT generator, n_requests, n_reused FROM runs").fetchall()}
    assert rows["verified"] > rows["unverified"], rows
    # both sources pair the same 128 x 4 answers: generated once, reused by the second
    assert runs == {"verified": (512, 0), "unverified": (512, 512)}, runs

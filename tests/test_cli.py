"""The CLI: bad input gets one clear line and a non-zero exit; the happy path works end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.cli import app

runner = CliRunner()


def datagen(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "datagen.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def bad_jsonl(tmp_path: Path) -> Path:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "fine"}\n{"prompt": "also fine"}\n{"prompt": broken\n')
    return p


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["generate", "-g", "fake", "-i", "/no/such/file.jsonl"], "no such file"),
        (["generate", "-g", "fake", "-i", "{bad_jsonl}"], "bad.jsonl:3: not valid JSON"),
        (["generate", "-g", "fake", "-i", "{bad_jsonl}", "-n", "2", "-c", "nope"],
         "column 'nope' not in"),
        (["generate", "-g", "nosuch:model"], "unknown backend 'nosuch'"),
        (["generate", "-g", "fake", "--temperature", "9"], "temperature"),
        (["generate", "-g", "fake", "-n", "0"], "at least 1"),
        (["generate", "-g", "fake", "-m", "nosuch"], "unknown method 'nosuch'"),
        (["runs", "show", "abc"], "no datagen workspace"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, expect, bad_jsonl, cli_env):
    args = [a.replace("{bad_jsonl}", str(bad_jsonl)) for a in args]
    r = datagen(*args, env=cli_env)
    assert r.returncode != 0
    assert expect in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_debug_shows_the_traceback(cli_env):
    r = datagen("--debug", "generate", "-g", "fake", "-i", "/no/such.jsonl", env=cli_env)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_generate_runs_show_and_export(tmp_path, monkeypatch):
    ws = tmp_path / "w"
    r = runner.invoke(app, ["-w", str(ws), "-q", "generate", "-g", "fake", "-n", "4",
                            "--system", "Be brief."])
    assert r.exit_code == 0, r.output
    run_id = next((ws / "runs").iterdir()).name

    r = runner.invoke(app, ["-w", str(ws), "runs"], env={"COLUMNS": "160"})
    assert run_id in r.output and "finished" in r.output

    r = runner.invoke(app, ["-w", str(ws), "runs", "show", run_id[:6]])
    assert r.exit_code == 0 and "4 ok, 0 failed" in r.output

    out = tmp_path / "export.parquet"
    r = runner.invoke(app, ["-w", str(ws), "export", run_id, "-o", str(out)])
    assert r.exit_code == 0, r.output
    import datasets

    ds = datasets.Dataset.from_parquet(str(out))
    assert len(ds) == 4
    first = ds[0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]  # system prompt not in SFT rows
    assert first[1]["content"].startswith("fake reply to:")


def test_failures_and_rejections_are_counted(tmp_path):
    from datagen import api
    from datagen_core.records import GeneratorSpec
    from generators.backends.fake import FakeBackend

    spec = GeneratorSpec.parse("fake:s", sampling={"max_tokens": 3},
                               limits={"max_retries": 0})

    def responder(request):
        q = request.messages[-1].content
        if q.startswith("Explain in two"):
            return {"error": 400, "message": "too long"}
        if q.startswith("Write a short thank"):
            return "far too many words for three tokens"
        return "short answer"

    res = api.generate(spec, n=3, backend=FakeBackend(spec, responder=responder),
                       workspace=tmp_path / "w")
    assert [x.valid for x in res.instances] == [False, False, True]
    summary = api.show_run(res.run_id, tmp_path / "w")
    assert summary["n_failed"] == 1 and summary["n_valid"] == 1
    assert {e["error_type"]: e["n"] for e in summary["errors"]} == {"http_400": 1}
    reasons = {x["reject_reason"]: x["n"] for x in summary["rejections"]}
    assert reasons == {"request failed: http_400": 1, "truncated (finish_reason=length)": 1}
    rejected = (res.run_dir / "rejected.jsonl").read_text().splitlines()
    assert len(rejected) == 2

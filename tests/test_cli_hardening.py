"""Bad input, failing servers, kills and odd output paths: one clear line, a true exit code and a
true run status, and no file replaced that should not be (issue 11, items 7-13)."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson
import pytest


def datagen(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 180
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "datagen.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def statuses(ws: Path) -> dict[str, tuple[str, str | None]]:
    with duckdb.connect(str(ws / "datagen.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT run_id, status, error FROM runs").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    p = tmp_path / "p.jsonl"
    p.write_bytes(b"".join(orjson.dumps({"prompt": f"q{i}"}) + b"\n" for i in range(10)))
    return p


# -- 7: a run with no kept row (or too many failures) fails ----------------------------------

def test_a_run_whose_requests_all_fail_exits_non_zero(loopback, prompts, cli_env):
    ws = Path(cli_env["DATAGEN_WORKSPACE"])
    env = {**cli_env, "OPENAI_API_KEY": "sk-test"}
    bad = loopback("--p500", "1.0")
    r = datagen("generate", "-g", f"openai:m@{bad.url}", "-i", str(prompts), "--max-retries",
                "0", env=env)
    assert r.returncode == 1, r.stderr
    assert "0/10 rows kept" in r.stderr  # the summary still prints
    assert "error: run" in r.stderr and "10 of 10 requests failed (http_500 x 10)" in r.stderr
    [(status, error)] = statuses(ws).values()
    assert status == "failed" and "10 of 10 requests failed" in (error or "")
    # the same command against a healthy server: only the failed requests go out, and it passes
    good = loopback()
    again = datagen("generate", "-g", f"openai:m@{bad.url}".replace(str(bad.port),
                    str(good.port)), "-i", str(prompts), env=env)
    assert again.returncode == 0, again.stderr
    assert good.stats()["answered"] and sum(good.stats()["answered"].values()) == 10


def test_a_failure_rate_above_the_allowed_one_fails_the_run(loopback, prompts, cli_env):
    env = {**cli_env, "OPENAI_API_KEY": "sk-test"}
    srv = loopback("--p500", "0.5", "--seed", "3")
    args = ["generate", "-g", f"openai:m@{srv.url}", "-i", str(prompts), "--max-retries", "0"]
    lenient = datagen(*args, env=env)
    assert lenient.returncode == 0, lenient.stderr  # some rows kept, no limit asked for
    strict = datagen(*args, "--max-failure-rate", "0.1", "-t", "0.5", env=env)
    assert strict.returncode == 1
    assert "more than the allowed 10%" in strict.stderr


def test_a_run_that_keeps_no_valid_row_fails(tmp_path, cli_env):
    gen = tmp_path / "g.yaml"
    gen.write_text("spec: fake\noptions: {replies: ['no final answer here'], cycle: true}\n")
    r = datagen("generate", "-g", str(gen), "-m", "response-generation", "-d", "math", "-n",
                "3", "--no-decontaminate", env=cli_env)
    assert r.returncode == 1
    assert "kept no row" in r.stderr


# -- 8: export never replaces a link or a device ---------------------------------------------

@pytest.fixture
def run_id(cli_env) -> str:
    r = datagen("generate", "-g", "fake", "-n", "2", env=cli_env)
    assert r.returncode == 0, r.stderr
    return r.stderr.split()[1].rstrip(":")


def test_export_writes_through_a_symlink(tmp_path, run_id, cli_env):
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    r = datagen("export", run_id, "-o", str(link), env=cli_env)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(real.read_text().splitlines()) == 2 and "old" not in real.read_text()


def test_export_to_special_files(tmp_path, run_id, cli_env):
    full = datagen("export", run_id, "-o", "/dev/full", env=cli_env)
    assert full.returncode == 2 and "No space left" in one_line(full)
    assert Path("/dev/full").is_char_device()
    out = tmp_path / "captured.jsonl"
    with open(out, "w") as f:  # `datagen export RUN -o /dev/stdout > captured.jsonl`
        r = subprocess.run([sys.executable, "-m", "datagen.cli", "export", run_id, "-o",
                            "/dev/stdout"], env=cli_env, stdout=f, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(line)["index"] for line in out.read_text().splitlines()] == [0, 1]


@pytest.mark.parametrize("target", ["{tmp}", "{tmp}/missing-dir/x.jsonl/y", "/proc/nope/x.jsonl",
                                    ""])
def test_export_to_a_bad_path_is_one_line(tmp_path, run_id, cli_env, target):
    (tmp_path / "missing-dir").mkdir()
    (tmp_path / "missing-dir" / "x.jsonl").write_text("a file, not a folder")
    r = datagen("export", run_id, "-o", target.replace("{tmp}", str(tmp_path)), env=cli_env)
    assert r.returncode == 2
    assert "cannot write" in one_line(r) or "empty output path" in one_line(r)


def test_export_as_an_unprivileged_user_to_a_read_only_folder(cli_env):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="datagen-nobody-"))
    try:
        base.chmod(0o755)
        ws, locked = base / "ws", base / "locked"
        locked.mkdir(mode=0o755)  # owned by root: nobody may not write here
        env = {**cli_env, "DATAGEN_WORKSPACE": str(ws)}
        made = datagen("generate", "-g", "fake", "-n", "2", env=env)
        assert made.returncode == 0, made.stderr
        for p in [ws, *ws.rglob("*")]:  # the user's own workspace
            os.chown(p, 65534, 65534)
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-m", "datagen.cli", "export", made.stderr.split()[1].rstrip(":"), "-o",
             str(locked / "x.jsonl")], env=env, capture_output=True, text=True, timeout=60)
        if "python" in out.stderr and "Permission denied" in out.stderr:
            pytest.skip("the unprivileged user cannot run this interpreter")
        assert out.returncode == 2
        assert f"cannot write {locked / 'x.jsonl'}: Permission denied" in one_line(out)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- 9, 10, 11: bad input is one line (exit 2) -----------------------------------------------

def _bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
    binary = bytes(range(256)) * 4
    (tmp_path / "binary.csv").write_bytes(binary)
    (tmp_path / "corrupt.jsonl.gz").write_bytes(gzip.compress(b'{"prompt": "x"}\n' * 50)[:40])
    (tmp_path / "bad-yaml.yaml").write_text("spec: [fake\n")
    (tmp_path / "spec-int.yaml").write_text("spec: 123\n")
    (tmp_path / "sampling-scalar.yaml").write_text("spec: fake\nsampling: 0.5\n")
    (tmp_path / "binary.yaml").write_bytes(binary)
    (tmp_path / "conflict.yaml").write_text("spec: fake\nprovider: openai\n")
    (tmp_path / "bad-option.yaml").write_text("spec: fake\noptions: {bogus: 1}\n")
    g = ["generate", "-g"]
    return {
        "not UTF-8": [*g, "fake", "-i", str(tmp_path / "binary.csv")],
        "cannot read": [*g, "fake", "-i", str(tmp_path / "corrupt.jsonl.gz")],
        "not valid YAML": [*g, str(tmp_path / "bad-yaml.yaml")],
        "'spec' must be a string": [*g, str(tmp_path / "spec-int.yaml")],
        "sampling: expected a mapping": [*g, str(tmp_path / "sampling-scalar.yaml")],
        "not a YAML text file": [*g, str(tmp_path / "binary.yaml")],
        "conflicts with spec 'fake'": [*g, str(tmp_path / "conflict.yaml")],
        "unknown option 'bogus' for the fake backend": [*g, str(tmp_path / "bad-option.yaml")],
        "bad --arg 'k=[1,2'": [*g, "fake", "-a", "k=[1,2"],
        "--samples must be at least 1, got 0": [*g, "fake", "--samples", "0"],
        "--samples must be at least 1, got -3": [*g, "fake", "--samples", "-3"],
        "unknown backend 'nosuch'": [*g, "nosuch:model"],
    }


def test_bad_input_is_one_line_and_creates_no_run(tmp_path, cli_env):
    for expect, args in _bad_inputs(tmp_path).items():
        r = datagen(*args, env=cli_env)
        assert r.returncode == 2, (expect, r.stderr)
        assert expect in one_line(r), r.stderr
    assert not (Path(cli_env["DATAGEN_WORKSPACE"]) / "datagen.duckdb").exists()


def test_an_empty_run_id_is_an_error(run_id, cli_env):
    r = datagen("export", "", "-o", "x.jsonl", env=cli_env)
    assert r.returncode == 2 and "empty run id" in one_line(r)
    assert datagen("runs", "show", "", env=cli_env).returncode == 2


def test_a_ragged_csv_is_read_with_a_warning(tmp_path, cli_env):
    csv = tmp_path / "ragged.csv"
    csv.write_text("prompt,note\nhello,a\nworld,b,EXTRA\nshort\n")
    r = datagen("generate", "-g", "fake", "-i", str(csv), env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "2 row(s) do not have the header's 2 fields (first at line 3)" in r.stderr
    assert "3/3 rows kept" in r.stderr


# -- 12, 13: a run's status is true at every moment ------------------------------------------

def test_a_refused_second_command_leaves_the_live_run_alone(loopback, prompts, cli_env):
    ws = Path(cli_env["DATAGEN_WORKSPACE"])
    env = {**cli_env, "OPENAI_API_KEY": "sk-test"}
    # 6 s answers: the second command must start (a few seconds on a loaded 2-core machine)
    # while the first is still waiting for them
    srv = loopback("--latency", "6")
    args = [sys.executable, "-m", "datagen.cli", "generate", "-g", f"openai:m@{srv.url}", "-i",
            str(prompts)]
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and srv.stats()["total"] == 0:
            time.sleep(0.1)  # the first run is sending
        second = datagen(*args[3:], env=env)
        assert second.returncode != 0
        assert "being written by another process" in one_line(second)
        [(status, _)] = statuses(ws).values()
        assert status == "running"  # still true: the first run is live
        _, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        [(status, _)] = statuses(ws).values()
        assert status == "finished"
    finally:
        first.kill()


def test_ctrl_c_says_how_to_resume_and_marks_the_run_interrupted(loopback, prompts, cli_env):
    ws = Path(cli_env["DATAGEN_WORKSPACE"])
    env = {**cli_env, "OPENAI_API_KEY": "sk-test"}
    srv = loopback("--latency", "5")
    proc = subprocess.Popen([sys.executable, "-m", "datagen.cli", "generate", "-g",
                             f"openai:m@{srv.url}", "-i", str(prompts)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and srv.stats()["total"] == 0:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted: answers received so far are saved; run the same command again" in err
    [(status, _)] = statuses(ws).values()
    assert status == "interrupted"


def test_a_killed_run_is_shown_interrupted_not_running(loopback, prompts, cli_env):
    env = {**cli_env, "OPENAI_API_KEY": "sk-test"}
    srv = loopback("--latency", "5")
    args = ["generate", "-g", f"openai:m@{srv.url}", "-i", str(prompts)]
    proc = subprocess.Popen([sys.executable, "-m", "datagen.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and srv.stats()["total"] == 0:
            time.sleep(0.1)
        live = datagen("runs", env=env)
        assert " running " in live.stdout, live.stdout
        proc.kill()  # kill -9: the run cannot record anything
        proc.wait(timeout=30)
        dead = datagen("runs", env=env)
        assert " interrupted " in dead.stdout and " running " not in dead.stdout, dead.stdout
    finally:
        proc.kill()

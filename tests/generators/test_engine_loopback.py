"""The engine against a real loopback server that misbehaves, killed with SIGKILL mid-run.

A 2,000-request run through the CLI survives 429s with Retry-After, 500s, hangs past the timeout
and malformed bodies, and stores every answer exactly once. Killed halfway and re-run, the server
sees only the missing requests; a third run sends nothing.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import orjson

from generators.response_log import iter_log

N = 2000


def _write_inputs(tmp_path: Path, url: str) -> tuple[Path, Path]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(orjson.dumps({"prompt": f"question {i}"}).decode() + "\n"
                               for i in range(N)))
    gen = tmp_path / "gen.yaml"
    gen.write_text(
        f"spec: openai:loop@{url}\n"
        "sampling: {temperature: 0, max_tokens: 32}\n"
        "limits: {concurrency: 32, timeout_s: 0.5, max_retries: 10, backoff_s: 0.01,"
        " backoff_max_s: 0.1}\n"
    )
    return prompts, gen


def _cmd(prompts: Path, gen: Path) -> list[str]:
    return [sys.executable, "-m", "datagen.cli", "-q", "generate", "-g", str(gen),
            "-i", str(prompts)]


def _answered_prompts(log: Path) -> collections.Counter[str]:
    return collections.Counter(
        r["text"].removeprefix("echo: ") for r in iter_log(log) if r.get("error") is None
    )


def test_faulty_server_kill9_and_resume(tmp_path, loopback, cli_env):
    srv = loopback("--latency", "0.01", "--p429", "0.03", "--p500", "0.03", "--phang", "0.005",
                   "--hang-s", "2", "--pmalformed", "0.02", "--retry-after", "0.05")
    prompts, gen = _write_inputs(tmp_path, srv.url)

    # Run 1: killed with SIGKILL about halfway.
    proc = subprocess.Popen(_cmd(prompts, gen), env=cli_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ws = Path(cli_env["DATAGEN_WORKSPACE"])
    deadline = time.monotonic() + 120
    log = None
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(ws.glob("runs/*/responses.jsonl"))
        if logs and logs[0].stat().st_size > 0:
            log = logs[0]
            if log.read_bytes().count(b"\n") >= N // 2:
                break
        time.sleep(0.01)
    assert proc.poll() is None, f"run finished before it could be killed: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert log is not None
    stored = _answered_prompts(log)
    assert N // 3 < len(stored) < N, len(stored)

    # Run 2: only the missing requests reach the server.
    srv.reset()
    done = subprocess.run(_cmd(prompts, gen), env=cli_env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    received = srv.stats()["received"]
    assert not set(received) & set(stored), "a stored answer was requested again"
    final = _answered_prompts(log)
    assert set(final) == {f"question {i}" for i in range(N)}
    assert max(final.values()) == 1, "an answer was stored twice"
    with duckdb.connect(str(ws / "datagen.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), count(*) FILTER (status = 'ok') "
                           "FROM requests").fetchone() == (N, N)

    # Run 3: everything is stored; nothing is sent.
    srv.reset()
    again = subprocess.run(_cmd(prompts, gen), env=cli_env, capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    assert srv.stats()["total"] == 0
    assert b"2000 reused, 0 sent" in again.stderr

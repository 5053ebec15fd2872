"""Streaming runs (datagen.run_stream): a `datagen generate` killed mid-way resumes and
completes with every row exactly once, re-sending nothing already answered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from datagen.run_curation import StreamCuration, curate_outputs, curation_config, prepare
from datagen_core.records import Instance, Message

N, DUPES = 1500, 40


def _prompts() -> list[str]:
    base = [f"write one line about item {i}" for i in range(N - DUPES)]
    return base + base[:DUPES]  # repeated prompts: the same answer, an exact duplicate


def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_a_killed_streaming_run_resumes_with_every_row_exactly_once(tmp_path, cli_env, loopback,
                                                                     writer):
    # 1,500 rows: under one batch, a thread writes them; with 128-answer batches, a process
    if writer == "process":
        cli_env["DATAGEN_STREAM_BATCH"] = "128"
    srv = loopback("--latency", "0.02")
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"prompt": p}) + b"\n" for p in _prompts()))
    cmd = [sys.executable, "-m", "datagen.cli", "--quiet", "generate", "-g", f"openai:m@{srv.url}",
           "-i", str(src), "--concurrency", "8", "--no-decontaminate"]
    ws = Path(cli_env["DATAGEN_WORKSPACE"])
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    log = None
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(ws.glob("runs/*/responses.jsonl"))
        if logs and logs[0].stat().st_size and logs[0].read_bytes().count(b"\n") >= 400:
            log = logs[0]
            break
        time.sleep(0.05)
    assert log is not None and proc.poll() is None, "the run ended before it could be killed"
    helpers = _children(proc.pid)  # the writer process, if any (Linux)
    if writer == "process" and Path("/proc").is_dir():
        assert helpers, "a run of many batches is written by a process of its own"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    gone = time.monotonic() + 10
    while any(_alive(h) for h in helpers) and time.monotonic() < gone:
        time.sleep(0.05)
    assert not any(_alive(h) for h in helpers), "the writer outlived the killed run"
    answered = {orjson.loads(line)["key"] for line in log.read_bytes().splitlines()
                if line.endswith(b"}")}
    assert 400 <= len(answered) < N - DUPES
    first_sent = srv.stats()["received"]
    srv.reset()

    done = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resent = srv.stats()["received"]
    # nothing answered before the kill is asked again (a prompt is one key here)
    assert not set(resent) & {p for p in first_sent if _answered(log, p, answered)}
    assert sum(resent.values()) == N - DUPES - len(answered)

    run_dir = log.parent
    data = pq.read_table(run_dir / "data.parquet").to_pylist()
    assert [r["index"] for r in data] == list(range(N - DUPES))  # each kept row once, in order
    assert len((run_dir / "data.jsonl").read_bytes().splitlines()) == N - DUPES
    rejected = [orjson.loads(x) for x in (run_dir / "rejected.jsonl").read_bytes().splitlines()]
    assert [r["index"] for r in rejected] == list(range(N - DUPES, N))
    assert all(r["reject_reason"] == f"exact duplicate of #{r['index'] - (N - DUPES)}"
               for r in rejected)
    con = duckdb.connect(str(ws / "datagen.duckdb"), read_only=True)
    try:
        rid = run_dir.name
        assert con.execute("SELECT count(*), count(DISTINCT idx) FROM instances WHERE run_id = ?",
                           [rid]).fetchone() == (N, N)
        assert con.execute("SELECT count(*), count(DISTINCT idx) FROM requests WHERE run_id = ?",
                           [rid]).fetchone() == (N, N)
        assert con.execute("SELECT status, n_valid, n_instances FROM runs WHERE run_id = ?",
                           [rid]).fetchone() == ("finished", N - DUPES, N)
    finally:
        con.close()
    assert not list(run_dir.glob("*.tmp"))


def _answered(log: Path, prompt: str, keys: set[str]) -> bool:
    for line in log.read_bytes().splitlines():
        rec = orjson.loads(line)
        if rec["key"] in keys and rec.get("text") == f"echo: {prompt}":
            return True
    return False


def test_stream_curation_gives_the_batch_verdicts(tmp_path):
    """Rows with repeated prompts (adjacent samples and far-apart repeats past the in-memory
    window), exact and near-duplicate answers: the same reasons and counts as the batch."""
    import random

    rng = random.Random(7)
    words = [f"w{i}" for i in range(60)]
    prompts = [f"question {i}" for i in range(30)]
    rows = []
    for i in range(400):
        p = rng.choice(prompts)
        base = [words[(prompts.index(p) * 7 + j) % 60] for j in range(40)]
        kind = rng.random()
        if kind < 0.3:
            answer = " ".join(base)
        elif kind < 0.6:
            answer = " ".join([*base[:-1], "changed"])
        else:
            answer = " ".join(rng.choice(words) for _ in range(40))
        rows.append(Instance(index=i, instance_id=str(i), valid=rng.random() > 0.1,
                             messages=[Message(role="user", content=p),
                                       Message(role="assistant", content=answer)]))
    cfg = curation_config({"decontaminate": False})
    batch = [x.model_copy(deep=True) for x in rows]

    class M:
        new_instructions = False

    _, _, report = curate_outputs(M(), batch, [], [], cfg, prepare(cfg), None)
    stream = [x.model_copy(deep=True) for x in rows]
    cur = StreamCuration(cfg, prepare(cfg), tmp_path / "spill")
    from datagen import run_curation

    old = run_curation._StreamDedup.MAX_GROUPS
    run_curation._StreamDedup.MAX_GROUPS = 4  # force groups out to the spill file and back
    try:
        for lo in range(0, len(stream), 64):
            cur.curate(stream[lo:lo + 64])
    finally:
        run_curation._StreamDedup.MAX_GROUPS = old
        cur.close()
    assert [(x.valid, x.reject_reason) for x in stream] == [(x.valid, x.reject_reason)
                                                            for x in batch]
    assert cur.report()["counts"] == report["counts"]
    assert report["counts"]["exact"] and report["counts"]["near"]

"""The streaming run's writer (datagen.stream_writer): the process writer gives what the thread
writer gives, and its failures reach the run as errors a user can act on."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from datagen.run_curation import Decontamination, curation_config
from datagen.stream_writer import (
    ProcessWriter,
    StreamWriter,
    WriterProcessError,
    WriterSetup,
    publish,
)
from datagen_core.records import GenRequest, GenResponse, Message, Usage
from generators.methods.base import MethodContext
from generators.methods.prompt import PromptMethod
from metrics.store import Store
from tests.conftest import ASSETS


def _setup(tmp_path: Path, name: str) -> WriterSetup:
    run_dir = tmp_path / name
    run_dir.mkdir()
    ctx = MethodContext(rows=[], source="prompts.jsonl", n=None, domain=None,
                        generate=_unused, generator="openai:m")
    return WriterSetup(run_dir, Store(tmp_path / f"{name}.duckdb"), "run1", PromptMethod(), ctx,
                       curation_config({"decontaminate": False}), Decontamination(None))


async def _unused(requests: list[GenRequest]) -> list[GenResponse]:
    raise AssertionError("the writer never generates")


def _batch(lo: int, hi: int) -> list[tuple[GenRequest, GenResponse]]:
    out = []
    for i in range(lo, hi):
        prompt = f"prompt {i % 50}"  # every prompt comes twice: the second answer is a duplicate
        q = GenRequest(messages=[Message(role="user", content=prompt)], meta={"row": i})
        r = GenResponse(key=f"k{i}", index=i, text=f"answer to {prompt}", finish_reason="stop",
                        usage=Usage(prompt_tokens=3, completion_tokens=4), raw={"id": i})
        if i == 7:
            r = GenResponse(key=f"k{i}", index=i, text="", finish_reason="stop")
        out.append((q, r))
    return out


def test_the_process_writer_writes_what_the_thread_writer_writes(tmp_path):
    results = {}
    for name, cls in (("thread", StreamWriter), ("process", ProcessWriter)):
        setup = _setup(tmp_path, name)
        writer = cls(setup)
        writer.write(_batch(0, 64))
        writer.write(_batch(64, 100))
        counts, report = writer.finish({"input": 100, "dropped": 0})
        run_dir = setup.run_dir
        assert (run_dir / "data.parquet.tmp").is_file() and not (run_dir / "data.parquet").exists()
        publish(run_dir, setup.store, counts.requests > 0)
        con = duckdb.connect(str(tmp_path / f"{name}.duckdb"), read_only=True)
        rows = con.execute("SELECT idx, valid, reject_reason FROM instances ORDER BY idx"
                           ).fetchall()
        requests = con.execute("SELECT idx, key, status, text, raw, prompt, prompt_tokens "
                               "FROM requests ORDER BY idx").fetchall()
        con.close()
        results[name] = (
            pq.read_table(run_dir / "data.parquet").to_pylist(),
            (run_dir / "data.jsonl").read_bytes(),
            [orjson.loads(x)["reject_reason"]
             for x in (run_dir / "rejected.jsonl").read_bytes().splitlines()],
            rows, counts.valid, dict(counts.rejected), report, requests)
        assert not list(run_dir.glob("*.tmp")) and not (run_dir / ".dedup-spill").exists()
    assert results["process"] == results["thread"]
    data, _, rejected, rows, valid, by_reason, report, requests = results["process"]
    assert rejected[:2] == ["empty response", "exact duplicate of #0"]
    assert requests[3][1:] == ("k3", "ok", "answer to prompt 3", '{"id":3}',
                               '[{"role":"user","content":"prompt 3"}]', 3)
    # 50 prompts twice; #7's first answer was empty, so its second one (#57) is kept
    assert valid == len(data) == 50 and [r["index"] for r in data] == list(range(50))[:7] + \
        list(range(8, 50)) + [57]
    assert by_reason == {"exact duplicate of": 49, "empty response": 1}
    assert len(rows) == 100 and report["counts"]["exact"] == 49
    assert report["seeds"] == {"input": 100, "dropped": 0}


def test_an_error_in_the_writer_process_reaches_the_run(tmp_path):
    setup = _setup(tmp_path, "err")
    writer = ProcessWriter(setup)
    setup.run_dir.rmdir()  # the run folder is taken away before the first batch
    with pytest.raises(FileNotFoundError, match=r"data\.jsonl\.tmp"):  # its own error, as is
        writer.write(_batch(0, 10))
    writer.abort()
    assert not writer._proc.is_alive()


def test_a_writer_process_that_died_is_one_line_saying_how_to_resume(tmp_path):
    setup = _setup(tmp_path, "dead")
    writer = ProcessWriter(setup)
    writer.write(_batch(0, 10))
    os.kill(writer._proc.pid, signal.SIGKILL)
    writer._proc.join(10)
    with pytest.raises(WriterProcessError, match="run the same command again"):
        writer.write(_batch(10, 20))
    writer.abort()  # nothing left to stop: no second error
    assert not writer._proc.is_alive()


def _generate_in_worker(src: str, ws: str) -> tuple[int, bool]:
    import multiprocessing

    from datagen.api import generate

    result = generate("fake:echo", src, workspace=ws, progress=False,
                      curation={"decontaminate": False})
    return len(result.valid), multiprocessing.current_process().daemon


def test_a_run_inside_a_pool_worker_writes_in_a_thread(tmp_path, monkeypatch):
    """A daemonic process (a multiprocessing pool's worker) may not start a writer process:
    a big run there writes in a thread instead of failing."""
    import multiprocessing

    monkeypatch.setenv("DATAGEN_STREAM_BATCH", "8")  # 40 rows: five batches, a "big" run
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"prompt": f"item {i}"}) + b"\n" for i in range(40)))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        valid, daemon = pool.apply(_generate_in_worker, (str(src), str(tmp_path / "ws")))
    assert daemon and valid == 40


def test_the_writer_process_decontaminates_like_the_thread(tmp_path):
    """The eval index goes to the writer process with the run (pickled once, ~2 MB)."""
    import dataclasses

    from datagen.run_curation import prepare

    question = orjson.loads((ASSETS / "gsm8k" / "test.jsonl").read_bytes().splitlines()[0]
                            )["question"]
    cfg = curation_config({"eval_sets": ["gsm8k"]})
    dec = prepare(cfg)
    assert dec.active, dec.skipped
    batch = _batch(0, 20)
    q, r = batch[5]
    batch[5] = (q.model_copy(update={"messages": [Message(role="user", content=question)]}), r)
    reasons = {}
    for name, cls in (("thread", StreamWriter), ("process", ProcessWriter)):
        setup = dataclasses.replace(_setup(tmp_path, name), curation_cfg=cfg, dec=dec)
        writer = cls(setup)
        writer.write(batch)
        counts, report = writer.finish(None)
        reasons[name] = (dict(counts.rejected), report["counts"]["contaminated"],
                         report["decontaminated"])
    assert reasons["process"] == reasons["thread"]
    assert reasons["process"] == ({"contaminated by gsm8k": 1, "empty response": 1}, 1, True)

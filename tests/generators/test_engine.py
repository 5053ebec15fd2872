"""The engine with a scripted backend: order, dedupe, resume, retries, fatal errors, cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from datagen_core.errors import BackendError
from datagen_core.records import GeneratorSpec, GenRequest, GenResponse, Message
from generators.backends.fake import FakeBackend
from generators.engine import Engine
from generators.keys import request_key
from generators.response_log import load_answers

FAST = {"backoff_s": 0.001, "backoff_max_s": 0.01, "concurrency": 4}


def reqs(*texts: str) -> list[GenRequest]:
    return [GenRequest(messages=[Message(role="user", content=t)]) for t in texts]


def engine(tmp_path: Path, replies=None, responder=None, **limits) -> tuple[Engine, FakeBackend]:
    spec = GeneratorSpec.parse("fake:test", limits={**FAST, **limits})
    backend = FakeBackend(spec, replies=replies, responder=responder)
    return Engine(spec, backend=backend, log_path=tmp_path / "run" / "responses.jsonl",
                  progress=False), backend


async def test_results_come_back_in_input_order_despite_varying_latency(tmp_path):
    e, b = engine(tmp_path)
    delays = {"a": 0.05, "b": 0.0, "c": 0.02}

    async def complete(request, sampling, _orig=b.complete):
        await asyncio.sleep(delays[request.messages[0].content])
        return await _orig(request, sampling)

    b.complete = complete  # type: ignore[method-assign]
    out = await e.generate(reqs("a", "b", "c"))
    assert [r.text for r in out] == ["fake reply to: a", "fake reply to: b", "fake reply to: c"]
    assert [r.index for r in out] == [0, 1, 2]


async def test_identical_requests_are_sent_once(tmp_path):
    e, b = engine(tmp_path)
    out = await e.generate(reqs("x", "y", "x"))
    assert len(b.history) == 2
    assert out[0].text == out[2].text and out[2].index == 2


async def test_rerun_sends_nothing_and_resume_sends_only_missing(tmp_path):
    e, _ = engine(tmp_path)
    await e.generate(reqs("a", "b"))
    e2, b2 = engine(tmp_path)
    out = await e2.generate(reqs("a", "b", "c"))
    assert [r.messages[0].content for r in b2.history] == ["c"]
    assert e2.stats.reused == 2 and e2.stats.sent == 1
    assert [r.text for r in out][2] == "fake reply to: c"


async def test_a_torn_last_line_is_ignored_and_repaired(tmp_path):
    e, _ = engine(tmp_path)
    await e.generate(reqs("a", "b"))
    log = tmp_path / "run" / "responses.jsonl"
    data = log.read_bytes()
    log.write_bytes(data + data.splitlines()[0][:40])  # a write cut by kill -9
    e2, b2 = engine(tmp_path)
    await e2.generate(reqs("a", "b", "c"))
    assert [r.messages[0].content for r in b2.history] == ["c"]
    lines = log.read_bytes().splitlines()
    assert len(lines) == 3 and all(orjson.loads(x)["key"] for x in lines)


async def test_rate_limits_and_transient_errors_are_retried(tmp_path):
    e, b = engine(tmp_path, replies=[{"error": 429, "retry_after": 0.01}, {"error": 503},
                                     "finally"], concurrency=1)
    out = await e.generate(reqs("a"))
    assert out[0].text == "finally" and out[0].attempts == 3
    assert len(b.history) == 3


async def test_retry_after_is_honoured(tmp_path, monkeypatch):
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(s, *a, **k):
        waits.append(s)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    e, _ = engine(tmp_path, replies=[{"error": 429, "retry_after": 7.5}, "ok"], concurrency=1)
    out = await e.generate(reqs("a"))
    assert out[0].ok and 7.5 in waits


async def test_invalid_request_is_recorded_and_the_run_goes_on(tmp_path):
    def responder(request):
        if request.messages[0].content == "bad":
            return {"error": 400, "message": "context too long"}
        return "fine"

    e, _ = engine(tmp_path, responder=responder)
    out = await e.generate(reqs("good", "bad", "good2"))
    assert [r.ok for r in out] == [True, False, True]
    assert out[1].error is not None and out[1].error.kind == "invalid"
    assert e.stats.failed == 1 and e.stats.errors == {"http_400": 1}


async def test_exhausted_retries_are_recorded_not_raised(tmp_path):
    e, _ = engine(tmp_path, replies=[{"error": 500}] * 3, max_retries=2, concurrency=1)
    out = await e.generate(reqs("a"))
    assert not out[0].ok and out[0].error.kind == "transient" and out[0].attempts == 3
    # failures are not answers: a re-run tries again
    e2, _ = engine(tmp_path, replies=["now ok"])
    out2 = await e2.generate(reqs("a"))
    assert out2[0].text == "now ok"


async def test_fatal_error_stops_the_run_at_once_with_a_fix(tmp_path):
    def responder(request):
        return {"error": 401, "message": "invalid key"}

    e, b = engine(tmp_path, responder=responder, concurrency=1)
    with pytest.raises(BackendError, match="check"):
        await e.generate(reqs(*[f"q{i}" for i in range(50)]))
    assert len(b.history) == 1


async def test_answers_are_in_the_log_within_50_ms_of_arriving(tmp_path):
    log = tmp_path / "run" / "responses.jsonl"
    seen: list[int] = []

    def responder(request):
        seen.append(len(load_answers(log)))
        return "ok"

    e, b = engine(tmp_path, responder=responder, concurrency=1)
    b.delay = 0.1  # each request outlasts the log's 50 ms of gathering
    await e.generate(reqs("a", "b", "c"))
    assert seen == [0, 1, 2]


async def test_cross_run_cache_is_used_before_sending(tmp_path):
    spec = GeneratorSpec.parse("fake:test")
    r = reqs("cached", "new")
    cached = GenResponse(key=request_key(spec, r[0]), text="from cache")

    class Cache:
        def get_many(self, keys):
            return {k: cached for k in keys if k == cached.key}

    backend = FakeBackend(spec)
    e = Engine(spec, backend=backend, cache=Cache(), log_path=tmp_path / "l.jsonl",
               progress=False)
    out = await e.generate(r)
    assert out[0].text == "from cache" and len(backend.history) == 1
    assert cached.key in load_answers(tmp_path / "l.jsonl")  # the run's log is self-contained


async def test_cost_uses_the_price_table_or_the_spec_override(tmp_path):
    spec = GeneratorSpec.parse("fake:test", price={"input_per_mtok": 1e6, "output_per_mtok": 2e6})
    e = Engine(spec, backend=FakeBackend(spec, replies=["one two three"]), progress=False)
    out = await e.generate(reqs("a b"))
    # 2 prompt words at $1/token + 3 completion words at $2/token
    assert out[0].cost_usd == pytest.approx(2 * 1 + 3 * 2)
    assert e.stats.cost_usd == pytest.approx(8)


class _BatchedFake(FakeBackend):
    """An in-process engine's shape (one batch at a time), scripted: as hf: and vllm: are."""

    batched = True

    async def complete_batch(self, requests, sampling):
        return [await FakeBackend.complete(self, q, s) for q, s in zip(requests, sampling)]


@pytest.mark.parametrize("batched", [True, False])
async def test_a_price_per_hour_charges_each_answer_its_compute_time(tmp_path, batched):
    spec = GeneratorSpec.parse("fake:local", price={"per_hour": 3.6},
                               limits={"concurrency": 4, "batch_size": 4},
                               options={"delay_s": 0.02})
    backend = (_BatchedFake if batched else FakeBackend)(spec)
    reqs = [GenRequest(messages=[Message(role="user", content=f"q{i}")]) for i in range(8)]
    async with Engine(spec, backend=backend, log_path=tmp_path / "r.jsonl",
                      progress=False) as eng:
        out = await eng.generate(reqs)
    for r in out:
        # $3.60 an hour is $0.001 a second: a batch answer is charged its share of the batch's
        # wall time (its latency), a server answer its latency over the concurrency
        share = r.latency_s if batched else r.latency_s / 4
        assert r.cost_usd == pytest.approx(share * 0.001)
        assert r.latency_s > 0.015  # 0.02 s per answer (in a batch: 0.08 s over four)
    assert eng.stats.cost_usd == pytest.approx(sum(r.cost_usd for r in out))
    assert eng.stats.cost_usd > 0


# -- Engine.stream: the same answers as generate, in order, within a bounded window -----------

async def test_stream_gives_generates_answers_in_order_within_its_window(tmp_path):
    texts = [f"q{i % 40}" for i in range(120)]  # repeats: one call answers them all
    e, _ = engine(tmp_path / "a", responder=lambda q: "a:" + q.messages[-1].content)
    expected = [r.text for r in await e.generate(reqs(*texts))]

    s, sb = engine(tmp_path / "b", responder=lambda q: "a:" + q.messages[-1].content,
                   concurrency=3)
    taken = 0
    ahead: list[int] = []
    out = []
    async with s:
        async for q, r in s.stream(iter(reqs(*texts)), window=8):
            taken += 1
            ahead.append(s.stats.total - taken)  # planned but not yet taken
            assert q.messages[-1].content == texts[r.index]
            out.append(r)
            await asyncio.sleep(0)
    assert [r.index for r in out] == list(range(120))
    assert [r.text for r in out] == expected
    assert max(ahead) <= 8
    assert len(sb.history) == 40 and s.stats.sent == 40

    again, ab = engine(tmp_path / "b", responder=lambda q: "never")  # resumed: all in the log
    async with again:
        texts_again = [r.text async for _, r in again.stream(reqs(*texts))]
    assert texts_again == expected and not ab.history


async def test_a_stream_closed_early_stops_what_is_in_flight(tmp_path):
    e, b = engine(tmp_path, concurrency=2)
    b.delay = 0.05
    async with e:
        stream = e.stream(reqs(*[f"q{i}" for i in range(50)]), window=4)
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        sent = len(b.history)
        await asyncio.sleep(0.2)
    assert len(b.history) == sent < 50

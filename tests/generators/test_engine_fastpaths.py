"""The engine's fast paths give exactly what the straightforward code gave.

Request keys (spec part canonicalised once per run), log lines (built without model_dump),
per-attempt timeouts (one lazily re-armed timer per worker instead of asyncio.timeout per
request) and retries (a plain loop instead of tenacity) are pinned against reference
implementations and timing bounds here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from datagen_core.fingerprint import canonical_json, stable_hash
from datagen_core.records import (
    ErrorInfo,
    GeneratorSpec,
    GenRequest,
    GenResponse,
    Message,
    SamplingParams,
    Usage,
)
from generators.backends.fake import FakeBackend
from generators.engine import Engine
from generators.keys import request_key
from generators.response_log import ResponseLog, dump_line, load_answers


def _reference_key(spec: GeneratorSpec, request: GenRequest) -> str:
    """request_key as first written: one stable_hash of the whole payload per request."""
    payload: dict[str, Any] = spec.semantic()
    payload["sampling"] = (request.sampling or spec.sampling).model_dump(exclude_none=True)
    payload["messages"] = [(m.role, m.content) for m in request.messages]
    if request.response_schema is not None:
        payload["schema"] = request.response_schema
    if request.sample:
        payload["sample"] = request.sample
    return stable_hash(payload, 32)


SPECS = [
    GeneratorSpec.parse("openai:gpt-4o-mini", sampling={"temperature": 0, "seed": 1}),
    GeneratorSpec.parse("openai:m@http://user:pw@h:1/v1"),
    GeneratorSpec.parse("anthropic:c", sampling={"temperature": 1.0, "top_k": 5,
                                                 "stop": ["x"], "max_tokens": 7}),
    GeneratorSpec.parse("fake"),
]
REQUESTS = [
    GenRequest(messages=[Message(role="user", content="What is 2+2?")]),
    GenRequest(messages=[Message(role="system", content="be brief"),
                         Message(role="user", content="日本語 \U0001f600"),
                         Message(role="assistant", content="")]),
    GenRequest(messages=[Message(role="user", content="x")],
               sampling=SamplingParams(temperature=1, top_p=0.5, stop=[])),
    GenRequest(messages=[Message(role="user", content="x")], sample=3, meta={"row": 1}),
    GenRequest(messages=[Message(role="user", content="x")],
               response_schema={"type": "object", "b": [1.0, 2.5, {"z": 1, "a": None}],
                                "properties": {"é": {"type": "string"}}}),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_request_keys_match_the_reference_definition(spec):
    for r in [*REQUESTS, GenRequest(messages=REQUESTS[0].messages, sampling=spec.sampling)]:
        assert request_key(spec, r) == _reference_key(spec, r)


def test_engine_keys_match_request_key(tmp_path):
    spec = SPECS[0]
    backend = FakeBackend(spec)
    e = Engine(spec, backend=backend, log_path=tmp_path / "l.jsonl", progress=False)
    out = asyncio.run(e.generate(REQUESTS))
    assert [o.key for o in out] == [_reference_key(spec, r) for r in REQUESTS]


def _reference_canonical(obj: Any) -> Any:
    """datagen_core.fingerprint._canonical as first written (no fast paths)."""
    from collections.abc import Mapping

    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        return _reference_canonical(obj.model_dump(mode="json", exclude_none=True))
    if isinstance(obj, Mapping):
        return {str(k): _reference_canonical(v)
                for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_reference_canonical(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    return obj


class _Mapping(dict):  # a Mapping that is not exactly a dict
    pass


@pytest.mark.parametrize("obj", [
    {"b": 1.0, "a": [1.5, (2.0, "x")], "c": {"z": None, "y": True, "é": -0.0}},
    {1: "int key", "k": 2.0, "1": "str key"}, {"1": "str key", 1: "int key"},
    _Mapping(b=1.0, a={"y": 2.0}), [{"x": 3.0}, ()], 7.0, float("inf"), "s", None, False,
    SPECS[2], {"spec": SPECS[1], "n": [SamplingParams(temperature=1.0)]},
], ids=repr)
def test_canonical_json_matches_the_reference_walk(obj):
    want = orjson.dumps(_reference_canonical(obj), option=orjson.OPT_SORT_KEYS)
    assert canonical_json(obj) == want


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int = 1


RAWS = [
    None, "s", 1, 1.5, float("nan"), float("inf"), -0.0, 1e-7, True, [1, "a", None],
    {"choices": [{"message": {"content": "é \U0001f600"}}], "usage": {"prompt_tokens": 3}},
    (1, 2), b"bytes", {1, 2}, {1: "int key"}, 2**70, datetime.datetime(2024, 1, 2, 3, 4, 5),
    datetime.date(2024, 1, 2), uuid.UUID(int=5), Color.RED, Point(), {"nested": [Point()]},
    ErrorInfo(kind="invalid", type="t", message="m"),
]


@pytest.mark.parametrize("raw", RAWS, ids=repr)
def test_log_lines_are_the_bytes_model_dump_gives(raw):
    for resp in [
        GenResponse(key="k", index=2, text="t", raw=raw, usage=Usage(prompt_tokens=1),
                    latency_s=0.25, created_at=1.7e9 + 0.123),
        GenResponse(key="k", raw=raw, error=ErrorInfo(kind="transient", type="http_500",
                                                      message="boom", status=500)),
    ]:
        try:
            want: Any = orjson.dumps(resp.model_dump(mode="json"))
        except TypeError:
            want = TypeError
        try:
            got: Any = dump_line(resp)
        except TypeError:
            got = TypeError
        assert got == want


def test_log_lines_for_copies_and_partial_constructs(tmp_path):
    a = GenResponse(key="k", text="t").model_copy(update={"index": 9})
    b = GenResponse.model_construct(text="no key")
    for r in (a, b):
        assert dump_line(r) == orjson.dumps(r.model_dump(mode="json"))
    with ResponseLog(tmp_path / "r" / "responses.jsonl") as log:
        log.write(a)
    assert load_answers(tmp_path / "r" / "responses.jsonl")["k"] == a


# -- timeouts and retries ------------------------------------------------------------------------
def _engine(tmp_path: Path, backend_delays: dict[str, list[float]], **limits: Any):
    spec = GeneratorSpec.parse("fake:t", limits={"backoff_s": 0.001, "backoff_max_s": 0.002,
                                                 **limits})
    backend = FakeBackend(spec)
    calls: list[tuple[str, float]] = []

    async def complete(request, sampling, _orig=backend.complete):
        text = request.messages[0].content
        delays = backend_delays.get(text) or [0.0]
        delay = delays.pop(0) if len(delays) > 1 else delays[0]
        calls.append((text, time.perf_counter()))
        await asyncio.sleep(delay)
        return await _orig(request, sampling)

    backend.complete = complete  # type: ignore[method-assign]
    e = Engine(spec, backend=backend, log_path=tmp_path / "r" / "responses.jsonl",
               progress=False)
    return e, calls


def _reqs(*texts: str) -> list[GenRequest]:
    return [GenRequest(messages=[Message(role="user", content=t)]) for t in texts]


async def test_a_hanging_attempt_times_out_on_time_and_is_retried(tmp_path):
    e, calls = _engine(tmp_path, {"slow": [5.0, 0.0]}, timeout_s=0.2, concurrency=1)
    t0 = time.perf_counter()
    out = await e.generate(_reqs("slow"))
    took = time.perf_counter() - t0
    assert out[0].ok and out[0].attempts == 2
    assert 0.2 <= calls[1][1] - calls[0][1] < 0.45  # the first attempt was cut at 0.2 s
    assert took < 2.0


async def test_the_timeout_follows_each_attempt_not_the_first(tmp_path):
    # One worker: many quick attempts, then a hang. The worker's timer was armed for the
    # first attempt; it must move to the hanging one's own deadline, not fire early or late.
    quick = [f"q{i}" for i in range(8)]
    delays = {q: [0.05] for q in quick} | {"hang": [5.0, 0.0]}
    e, calls = _engine(tmp_path, delays, timeout_s=0.3, concurrency=1)
    out = await e.generate(_reqs(*quick, "hang"))
    assert all(o.ok for o in out)
    assert [o.attempts for o in out] == [1] * 8 + [2]  # 0.05 s attempts never time out
    hang_started, retried = calls[8][1], calls[9][1]
    assert 0.3 <= retried - hang_started < 0.55  # its own deadline: not early, not 2x


async def test_timeouts_exhaust_retries_into_a_recorded_failure(tmp_path):
    e, _ = _engine(tmp_path, {"x": [5.0]}, timeout_s=0.05, concurrency=2, max_retries=2)
    out = await e.generate(_reqs("x", "ok"))
    assert out[0].error is not None and out[0].error.type == "timeout"
    assert out[0].attempts == 3 and out[1].ok


async def test_cancelling_the_run_is_not_mistaken_for_a_timeout(tmp_path):
    e, calls = _engine(tmp_path, {"a": [5.0], "b": [5.0]}, timeout_s=60, concurrency=2)
    task = asyncio.create_task(e.generate(_reqs("a", "b")))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) == 2  # nothing was retried


async def test_retry_waits_back_off_exponentially_under_the_cap(tmp_path, monkeypatch):
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(s, *a, **k):
        waits.append(s)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    spec = GeneratorSpec.parse("fake:t", limits={"backoff_s": 0.5, "backoff_max_s": 3.0,
                                                 "max_retries": 4, "concurrency": 1})
    backend = FakeBackend(spec, replies=[{"error": 503}] * 4 + ["ok"])
    e = Engine(spec, backend=backend, progress=False)
    out = await e.generate(_reqs("a"))
    assert out[0].ok and out[0].attempts == 5
    assert len(waits) == 4
    for n, w in enumerate(waits, start=1):  # backoff_s * 2**(n-1) + jitter in [0, 1), capped
        assert min(0.5 * 2 ** (n - 1), 3.0) <= w <= min(0.5 * 2 ** (n - 1) + 1, 3.0)

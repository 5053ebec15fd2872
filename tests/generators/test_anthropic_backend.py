"""The anthropic backend through the official SDK against the loopback server's /v1/messages.

Each server runs as a subprocess on 127.0.0.1 (started once per set of flags, killed at module
teardown), so these tests exercise the real SDK, the real HTTP round trip and the engine's retry
and error policy together.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx2
import pytest

from datagen_core.errors import BackendError, MissingKeyError
from datagen_core.records import GeneratorSpec, GenRequest, Limits, Message, SamplingParams
from generators.backends.anthropic import AnthropicBackend
from generators.engine import Engine

KEY = "sk-ant-test-key-0123456789"
START_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def messages_server() -> Iterator[Callable[..., int]]:
    """``messages_server("--p429", "0.3")`` -> port of a server with those flags (cached)."""
    procs: dict[tuple[str, ...], tuple[subprocess.Popen[str], int]] = {}

    def start(*flags: str) -> int:
        if flags in procs:
            return procs[flags][1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "generators.testing.loopback", "--port", "0", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=ROOT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                if line.startswith("READY"):
                    break
        if not line.startswith("READY"):
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail(f"loopback server did not start (flags {flags}, got {line!r})")
        port = int(line.split()[1])
        procs[flags] = (proc, port)
        return port

    yield start
    for proc, _ in procs.values():
        proc.kill()
        proc.wait(timeout=10)


def server_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return json.loads(r.read())


def engine(port: int, **limits: float) -> Engine:
    lim = Limits(**{"timeout_s": 20.0, "max_retries": 2, "backoff_s": 0.01, **limits})
    spec = GeneratorSpec.parse(f"anthropic:claude-x@http://127.0.0.1:{port}", limits=lim)
    return Engine(spec, progress=False)


def user(text: str, system: str | None = None) -> GenRequest:
    msgs = [Message(role="system", content=system)] if system else []
    return GenRequest(messages=[*msgs, Message(role="user", content=text)])


async def test_system_prompt_order_and_usage(messages_server, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    port = messages_server()
    prompts = [f"prompt number {i}" for i in range(12)]
    requests = [user(p, system="be brief") for p in prompts]
    async with engine(port) as eng:
        out = await eng.generate(requests)
    assert [r.text for r in out] == [f"echo: {p} [system: be brief]" for p in prompts]
    assert [r.index for r in out] == list(range(12))
    for r in out:
        assert r.error is None
        assert r.finish_reason == "stop"  # end_turn
        assert r.usage.prompt_tokens == 3
        assert r.usage.completion_tokens == len(r.text.split())
        assert r.model == "claude-x"
        assert r.raw["stop_reason"] == "end_turn"
    assert eng.stats.ok == 12
    assert eng.stats.prompt_tokens == 36


async def test_no_system_and_merged_turns(messages_server, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    port = messages_server()
    req = GenRequest(messages=[
        Message(role="user", content="first part"),
        Message(role="user", content="second part"),
    ])
    async with engine(port) as eng:
        [r] = await eng.generate([req])
    # Both user messages arrive as one turn; no system parameter is sent.
    assert r.text == "echo: first part\n\nsecond part"


def test_params_mapping() -> None:
    spec = GeneratorSpec.parse("anthropic:claude-x")
    b = AnthropicBackend(spec)
    req = GenRequest(
        messages=[
            Message(role="system", content="sys one"),
            Message(role="user", content="hi"),
            Message(role="system", content="sys two"),
            Message(role="assistant", content="a"),
            Message(role="assistant", content="b"),
            Message(role="user", content="go"),
        ],
        response_schema={"type": "object"},
    )
    s = SamplingParams(temperature=0.3, top_p=0.9, top_k=40, max_tokens=77, seed=5, stop=["END"])
    p = b.params(req, s)
    assert p["system"] == "sys one\n\nsys two"
    assert p["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "a\n\nb"},
        {"role": "user", "content": "go"},
    ]
    assert p["max_tokens"] == 77
    assert p["stop_sequences"] == ["END"]
    assert p["extra_body"] == {"temperature": 0.3, "top_p": 0.9, "top_k": 40}
    assert "seed" not in p and "seed" not in p["extra_body"]
    assert p["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}

    plain = b.params(GenRequest(messages=[Message(role="user", content="x")]), SamplingParams())
    assert "system" not in plain and "stop_sequences" not in plain and "output_config" not in plain
    assert plain["extra_body"] == {"temperature": 0.7}  # top_p 1.0 and top_k None are omitted


async def test_wrong_key_is_fatal_and_not_leaked(messages_server, monkeypatch) -> None:
    port = messages_server("--api-key", "the-right-key-123456")
    wrong = "sk-ant-wrong-key-abcdef987654"
    monkeypatch.setenv("ANTHROPIC_API_KEY", wrong)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as ei:
        async with engine(port, max_retries=5) as eng:
            await eng.generate([user(f"p{i}") for i in range(4)])
    message = str(ei.value)
    assert "ANTHROPIC_API_KEY" in message
    assert "401" in message
    assert wrong not in message
    assert time.monotonic() - t0 < 10  # fatal: no retries


async def test_unknown_model_is_fatal(messages_server, monkeypatch) -> None:
    port = messages_server("--models", "claude-real")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with pytest.raises(BackendError, match=r"404.*claude-x"):
        async with engine(port) as eng:
            await eng.generate([user("hello")])


async def test_missing_key(messages_server, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    port = messages_server()
    with pytest.raises(MissingKeyError, match="ANTHROPIC_API_KEY"):
        async with engine(port) as eng:
            await eng.generate([user("hello")])


async def test_custom_key_env_and_v1_suffix(messages_server, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("MY_CLAUDE_KEY", KEY)
    port = messages_server()
    spec = GeneratorSpec.parse(
        f"anthropic:claude-x@http://127.0.0.1:{port}/v1", api_key_env="MY_CLAUDE_KEY"
    )
    async with Engine(spec, progress=False) as eng:
        [r] = await eng.generate([user("hello")])
    assert r.text == "echo: hello"  # no MissingKeyError, and the SDK's /v1 was not doubled


async def test_right_key_reaches_server(messages_server, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    port = messages_server("--api-key", KEY)
    async with engine(port) as eng:
        [r] = await eng.generate([user("hello")])
    assert r.text == "echo: hello"


def _status_error(status: int, body: dict, headers: dict | None = None) -> Exception:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages")
    response = httpx2.Response(status, json=body, headers=headers, request=request)
    return anthropic.APIStatusError(f"Error code: {status} - {body}", response=response, body=body)


async def test_classify_sdk_errors(monkeypatch) -> None:
    """SDK exceptions are decided like any provider's, and keys never reach the messages."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    b = AnthropicBackend(GeneratorSpec.parse("anthropic:claude-x@http://127.0.0.1:9"))
    await b.start()
    try:
        err = {"error": {"type": "rate_limit_error", "message": "slow down"}}
        limited = _status_error(429, err, {"retry-after": "3"})
        assert b.classify(limited).kind == "rate_limit"
        assert b.retry_after(limited) == 3.0
        overloaded = _status_error(529, {"error": {"message": "Overloaded"}})
        assert b.classify(overloaded).kind == "transient"
        assert b.classify(_status_error(400, {"error": {"message": "bad"}})).kind == "invalid"
        leaked = _status_error(401, {"error": {"message": f"invalid x-api-key {KEY}"}})
        info = b.classify(leaked)
        assert info.kind == "fatal" and info.status == 401
        assert "check ANTHROPIC_API_KEY" in info.message and KEY not in info.message
        request = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages")
        assert b.classify(anthropic.APIConnectionError(request=request)).kind == "transient"
        assert b.classify(anthropic.APITimeoutError(request)).type == "timeout"
    finally:
        await b.close()


async def test_rate_limits_retried_with_retry_after(messages_server, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    port = messages_server("--p429", "0.3", "--retry-after", "0.05")
    prompts = [f"limited {i}" for i in range(30)]
    t0 = time.monotonic()
    # A 30 s backoff would blow the time bound: passing it proves Retry-After (0.05 s) is used.
    async with engine(port, max_retries=12, backoff_s=30.0, backoff_max_s=60.0) as eng:
        out = await eng.generate([user(p) for p in prompts])
    assert time.monotonic() - t0 < 20
    assert [r.text for r in out] == [f"echo: {p}" for p in prompts]
    assert all(r.error is None for r in out)
    assert eng.stats.attempts > eng.stats.sent  # some requests really were retried
    stats = server_stats(port)
    assert stats["total"] == eng.stats.attempts
    assert sum(stats["answered"].values()) == 30

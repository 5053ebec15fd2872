"""The batch-API backends against a loopback server speaking both batch protocols.

Through the engine with a run log, like a real run: answers land in the response log, partial
failures (error file / errored results) and expired requests fail retryably, and the next run
reads the recorded batches and submits only what no batch answered. Through the CLI: a run killed
while polling is resumed by the re-run, which creates no second batch.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from datagen_core.errors import ConfigError
from datagen_core.records import GeneratorSpec, GenRequest, Limits, Message, Price
from generators.backends.base import create_backend
from generators.backends.batch import STATE_FILE
from generators.engine import Engine
from generators.pricing import price_for
from generators.response_log import iter_log

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"openai-batch": ("OPENAI_API_KEY", "sk-test-openai-0123456789"),
        "anthropic-batch": ("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")}


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port

    def url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.port}" + ("/v1" if provider == "openai-batch" else "")

    def _call(self, path: str, method: str = "GET") -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return orjson.loads(r.read())

    def stats(self) -> dict:
        return self._call("/stats")

    def reset(self) -> None:
        self._call("/reset", "POST")

    def release(self) -> None:
        self._call("/release", "POST")


@pytest.fixture
def batch_server() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*flags: str) -> Server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "generators.testing.batch_loopback", "--port", "0", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                line = proc.stdout.readline()
                if line.startswith(b"READY"):
                    srv = Server(proc, int(line.split()[1]))
                    started.append(srv)
                    return srv
        proc.kill()
        pytest.fail("batch loopback server did not start")

    yield start
    for srv in started:
        srv.proc.kill()
        srv.proc.wait(timeout=10)


MODELS = {"openai-batch": "gpt-4o-mini", "anthropic-batch": "claude-3-5-haiku-latest"}


def _spec(provider: str, srv: Server, **options: object) -> GeneratorSpec:
    return GeneratorSpec.parse(
        f"{provider}:{MODELS[provider]}@{srv.url(provider)}",
        options={"poll_s": 0.05, **options},
        limits=Limits(max_retries=2, backoff_s=0.01, backoff_max_s=0.05),
    )


def _requests(prompts: list[str]) -> list[GenRequest]:
    return [GenRequest(messages=[Message(role="user", content=p)]) for p in prompts]


async def _run(spec: GeneratorSpec, prompts: list[str], log: Path) -> list:
    async with Engine(spec, log_path=log, progress=False) as engine:
        return await engine.generate(_requests(prompts))


@pytest.mark.parametrize("provider", ["openai-batch", "anthropic-batch"])
def test_partial_failures_and_expiry_resubmit_only_what_is_missing(
        provider, batch_server, tmp_path, monkeypatch):
    env, key = KEYS[provider]
    monkeypatch.setenv(env, key)
    srv = batch_server("--polls", "2", "--api-key", key)
    prompts = [f"question {i}" for i in range(5)] + [
        "question [flaky]", "question [expire]", "question [invalid]"]
    spec = _spec(provider, srv, max_requests=3)
    log = tmp_path / "run" / "responses.jsonl"

    first = asyncio.run(_run(spec, prompts, log))
    assert [r.text for r in first[:5]] == [f"echo: question {i}" for i in range(5)]
    price = create_backend(spec).price()  # the batch price: half the list price
    listed = price_for(provider.removesuffix("-batch"), spec.model)
    assert price is not None and listed is not None
    assert (price.input_per_mtok, price.output_per_mtok) == (
        listed.input_per_mtok / 2, listed.output_per_mtok / 2)
    usage = first[0].usage
    assert first[0].cost_usd == pytest.approx(
        (usage.prompt_tokens * price.input_per_mtok
         + usage.completion_tokens * price.output_per_mtok) / 1e6)
    assert first[0].cost_usd > 0
    errors = {p: r.error for p, r in zip(prompts, first) if r.error is not None}
    assert set(errors) == {"question [flaky]", "question [expire]", "question [invalid]"}
    assert errors["question [flaky]"].kind == "transient"
    assert errors["question [expire]"].kind == "transient"
    assert errors["question [invalid]"].kind == "invalid"
    stats = srv.stats()
    assert stats["batches_created"] == 3  # 8 requests, at most 3 per batch
    state = [orjson.loads(x) for x in (log.parent / STATE_FILE).read_bytes().splitlines()]
    assert len(state) == 3 and sum(len(b["keys"]) for b in state) == 8
    assert key not in (log.parent / STATE_FILE).read_text()
    assert key not in log.read_text()

    # The re-run re-reads the recorded batches and submits only the unanswered requests.
    srv.reset()
    second = asyncio.run(_run(spec, prompts, log))
    stats = srv.stats()
    assert stats["batches_created"] == 1
    assert set(stats["submitted"]) == {"question [flaky]", "question [expire]",
                                       "question [invalid]"}
    assert second[5].text == "echo: question [flaky]"
    assert second[6].text == "echo: question [expire]"
    assert second[7].error is not None and second[7].error.kind == "invalid"
    answered = [r["text"] for r in iter_log(log) if r.get("error") is None]
    assert sorted(answered) == sorted(f"echo: {p}" for p in prompts[:7])

    # Everything answered is in the log: a third run sends only the invalid request again.
    srv.reset()
    asyncio.run(_run(spec, prompts[:7], log))
    assert srv.stats()["batches_created"] == 0


@pytest.mark.parametrize("provider", ["openai-batch", "anthropic-batch"])
def test_batch_input_never_holds_the_key(provider, batch_server, tmp_path, monkeypatch):
    env, key = KEYS[provider]
    monkeypatch.setenv(env, key)
    srv = batch_server("--api-key", key)
    backend = create_backend(_spec(provider, srv))
    entry = backend.entry("k1", _requests(["hello"])[0], backend.spec.sampling)
    assert key not in orjson.dumps(entry).decode()
    out = asyncio.run(_run(backend.spec, ["hello"], tmp_path / "r" / "responses.jsonl"))
    assert out[0].text == "echo: hello"
    if provider == "openai-batch":  # the uploaded JSONL, as the server stored it
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/v1/files/file-1/content",
                                     headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            uploaded = r.read().decode()
        assert "hello" in uploaded and key not in uploaded


def test_batch_price_is_half_the_list_price():
    spec = GeneratorSpec.parse("openai-batch:gpt-4o-mini")
    assert create_backend(spec).price() == Price(input_per_mtok=0.075, output_per_mtok=0.30)
    spec = GeneratorSpec.parse("anthropic-batch:claude-3-5-haiku-latest")
    assert create_backend(spec).price() == Price(input_per_mtok=0.40, output_per_mtok=2.00)
    own = Price(input_per_mtok=1.0, output_per_mtok=2.0)
    assert create_backend(GeneratorSpec.parse("openai-batch:x", price=own)).price() == own


def test_bad_options_are_one_clear_line():
    with pytest.raises(ConfigError, match="max_requests <= 50000"):
        create_backend(GeneratorSpec.parse("openai-batch:m", options={"max_requests": 60_000}))
    with pytest.raises(ConfigError, match="unknown option 'poll'"):
        create_backend(GeneratorSpec.parse("anthropic-batch:m", options={"poll": 1}))


@pytest.mark.parametrize("provider", ["openai-batch", "anthropic-batch"])
def test_failed_polls_are_waited_out(provider, batch_server, tmp_path, monkeypatch):
    env, key = KEYS[provider]
    monkeypatch.setenv(env, key)
    srv = batch_server("--poll-errors", "3")
    spec = _spec(provider, srv).model_copy(update={"limits": Limits(max_retries=0)})
    out = asyncio.run(_run(spec, ["a", "b"], tmp_path / "r" / "responses.jsonl"))
    assert [r.text for r in out] == ["echo: a", "echo: b"]
    assert srv.stats()["batches_created"] == 1


@pytest.mark.parametrize("provider", ["openai-batch", "anthropic-batch"])
def test_killed_while_polling_resumes_without_a_second_batch(provider, batch_server, tmp_path):
    srv = batch_server("--hold")
    n = 20
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(orjson.dumps({"prompt": f"q {i}"}).decode() + "\n"
                               for i in range(n)))
    gen = tmp_path / "gen.yaml"
    gen.write_text(f"spec: {provider}:loop@{srv.url(provider)}\n"
                   "options: {poll_s: 0.05}\n")
    cmd = [sys.executable, "-m", "datagen.cli", "-q", "generate", "-g", str(gen),
           "-i", str(prompts)]
    var, key = KEYS[provider]
    env = dict(os.environ, DATAGEN_WORKSPACE=str(tmp_path / "ws"), **{var: key})
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if srv.stats()["polls"] >= 2:  # submitted, recorded, and polling
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    states = list((tmp_path / "ws").glob(f"runs/*/{STATE_FILE}"))
    assert len(states) == 1 and srv.stats()["batches_created"] == 1

    srv.release()
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert srv.stats()["batches_created"] == 1, "the re-run submitted a second batch"
    log = states[0].parent / "responses.jsonl"
    texts = sorted(r["text"] for r in iter_log(log) if r.get("error") is None)
    assert texts == sorted(f"echo: q {i}" for i in range(n))

    again = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    assert srv.stats()["batches_created"] == 1
    assert f"{n} reused, 0 sent".encode() in again.stderr

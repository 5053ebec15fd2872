"""OpenAI and every OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama) via ``@base_url``.

The hot path speaks the Chat Completions wire protocol over one pooled aiohttp session: measured
on the 2-core dev machine against a loopback server answering in 50 ms, the official
``AsyncOpenAI`` client with default settings manages about 400-600 requests/s at concurrency 64
and 260-430 at 256, against about 1,050-1,130 and 4,200-4,350 for a bare aiohttp loop, and
1,020-1,090 and 3,300-3,900 for the whole engine on this backend, log and keys included (see
benchmarks/engine_throughput.py). Retries, timeouts and limits are the engine's, so the client
does none of its own.

Keys: ``$OPENAI_API_KEY`` or the variable named by ``api_key_env``. A local server
(``@http://127.0.0.1:8000/v1``) may need no key at all.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import orjson

from datagen_core.errors import MissingKeyError
from datagen_core.records import GenRequest, SamplingParams
from datagen_core.secrets import secret_from_env
from generators.backends.base import Backend, ProviderError, Reply, parse_retry_after

OPENAI_URL = "https://api.openai.com/v1"


class OpenAIBackend(Backend):
    name = "openai"
    key_env = "OPENAI_API_KEY"

    _session: aiohttp.ClientSession | None = None
    _official: bool | None = None  # is_official, fixed by start() with the URL it posts to

    @property
    def base_url(self) -> str:
        return (self.spec.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")

    @property
    def is_official(self) -> bool:
        return self.base_url.startswith(OPENAI_URL)

    async def start(self) -> None:
        env = self.spec.api_key_env or self.key_env
        assert env is not None
        key = secret_from_env(env)
        if not key and (self.is_official or self.spec.api_key_env):
            raise MissingKeyError(f"{self.spec.label}", env)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        connector = aiohttp.TCPConnector(
            limit=self.spec.limits.concurrency, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # the engine times each attempt
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        self._url = f"{self.base_url}/chat/completions"
        self._official = self.is_official

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._official = None

    def body(self, request: GenRequest, sampling: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        official = self.is_official if self._official is None else self._official
        # OpenAI's reasoning models reject max_tokens; compatible servers may not know the new name.
        body["max_completion_tokens" if official else "max_tokens"] = sampling.max_tokens
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = sampling.stop
        if sampling.top_k is not None and not official:
            body["top_k"] = sampling.top_k  # vLLM / SGLang / llama.cpp extension
        if request.response_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": request.response_schema},
            }
        return body

    async def complete(self, request: GenRequest, sampling: SamplingParams) -> Reply:
        assert self._session is not None, "backend not started"
        body = orjson.dumps(self.body(request, sampling))
        async with self._session.post(self._url, data=body) as r:
            data = await r.read()
            if r.status != 200:
                raise _http_error(r.status, data, r.headers)
        try:
            payload = orjson.loads(data)
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
            usage = payload.get("usage") or {}
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError(
                200, f"malformed response body: {data[:120]!r}", kind="transient"
            ) from None
        return Reply(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            raw=payload,
            model=payload.get("model"),
        )


def _http_error(status: int, data: bytes, headers: Any) -> ProviderError:
    message = data[:300].decode("utf-8", "replace")
    try:
        err = orjson.loads(data).get("error")
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if retry_after is None and headers.get("retry-after-ms"):
        try:
            retry_after = float(headers["retry-after-ms"]) / 1000
        except ValueError:
            retry_after = None
    return ProviderError(status, f"{status}: {message}", retry_after=retry_after)

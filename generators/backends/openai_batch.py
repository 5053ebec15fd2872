"""The OpenAI Batch API (``openai-batch:gpt-4o-mini``): chat completions at half price within 24 h.

Each provider batch is a JSONL file of ``/v1/chat/completions`` requests (``custom_id`` = the
request key, ``body`` = exactly what the synchronous ``openai`` backend would post, never a key),
uploaded with ``purpose="batch"`` and started with ``/v1/batches``. The batch's output file holds
the answers; its error file the per-request failures (their HTTP status decides retryable or
not); requests in neither (an expired or cancelled batch) fail retryably and a re-run submits
them again. Limits, from OpenAI's API reference (``input_file_id``): up to 50,000 requests and
200 MB per input file. See :mod:`generators.backends.batch` for splitting, resume and price.

Uses the official ``openai`` SDK (not the hot path: a few calls per batch), built with
``max_retries=0``: retries are the engine's. ``@base_url`` and ``api_key_env`` work as for the
``openai`` backend.
"""

from __future__ import annotations

from typing import Any

import orjson

from datagen_core.errors import MissingDependencyError, MissingKeyError
from datagen_core.records import ErrorInfo, GenRequest, SamplingParams
from datagen_core.secrets import redact, secret_from_env
from generators.backends.base import ProviderError, Reply, parse_retry_after
from generators.backends.batch import BatchBackend, log
from generators.backends.openai import OpenAIBackend

ENDPOINT = "/v1/chat/completions"


class OpenAIBatchBackend(BatchBackend):
    name = "openai-batch"
    key_env = "OPENAI_API_KEY"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024
    terminal = frozenset({"completed", "expired", "failed", "cancelled"})

    _client: Any = None
    _sdk: Any = None

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._chat = OpenAIBackend(spec)  # its request body and URL rules, never its session

    async def start(self) -> None:
        try:
            import openai
        except ImportError:
            raise MissingDependencyError("the openai-batch backend", "openai") from None
        env = self.spec.api_key_env or self.key_env
        assert env is not None
        key = secret_from_env(env)
        if not key and (self._chat.is_official or self.spec.api_key_env):
            raise MissingKeyError(self.spec.label, env)
        self._sdk = openai
        self._client = openai.AsyncOpenAI(
            api_key=key or "no-key", base_url=self._chat.base_url, max_retries=0, timeout=600.0
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def entry(self, custom_id: str, request: GenRequest, sampling: SamplingParams) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT,
                "body": self._chat.body(request, sampling)}

    async def submit(self, entries: list[dict], size: int) -> str:
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        try:
            f = await self._client.files.create(
                file=("datagen-batch.jsonl", data, "application/jsonl"), purpose="batch"
            )
            batch = await self._client.batches.create(
                input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h"
            )
        except self._sdk.APIError as exc:
            raise self._translate(exc) from None
        return str(batch.id)

    async def _retrieve(self, batch_id: str) -> Any:
        try:
            return await self._client.batches.retrieve(batch_id)
        except self._sdk.APIError as exc:
            raise self._translate(exc) from None

    async def status(self, batch_id: str) -> str:
        return str((await self._retrieve(batch_id)).status)

    async def results(self, batch_id: str) -> dict[str, Reply | BaseException]:
        batch = await self._retrieve(batch_id)
        if batch.status == "failed":
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            log.warning("%s: batch %s failed: %s", self.spec.label, batch_id,
                        "; ".join(str(getattr(e, "message", e)) for e in errors[:3]))
        out: dict[str, Reply | BaseException] = {}
        # The error file first, so an answer in the output file wins.
        for file_id in (batch.error_file_id, batch.output_file_id):
            if not file_id:
                continue
            try:
                content = await self._client.files.content(file_id)
            except self._sdk.APIError as exc:
                raise self._translate(exc) from None
            for line in content.content.splitlines():
                if line.strip():
                    rec = orjson.loads(line)
                    out[str(rec.get("custom_id"))] = _outcome(rec)
        return out

    def _translate(self, exc: BaseException) -> BaseException:
        """SDK exception -> ProviderError / TimeoutError / ConnectionError; else unchanged."""
        sdk = self._sdk
        if sdk is None:
            return exc
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            headers = exc.response.headers
            return ProviderError(status, f"{status}: {exc.message}",
                                 retry_after=parse_retry_after(headers.get("retry-after")))
        if isinstance(exc, sdk.APITimeoutError):
            return TimeoutError(redact(str(exc)))
        if isinstance(exc, sdk.APIConnectionError):
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            return ConnectionError(redact(f"{exc}{cause}"))
        return exc

    def classify(self, exc: BaseException) -> ErrorInfo:
        return super().classify(self._translate(exc))

    def retry_after(self, exc: BaseException) -> float | None:
        return super().retry_after(self._translate(exc))


def _outcome(rec: dict[str, Any]) -> Reply | BaseException:
    """One line of an output or error file: the answer, or why this request failed."""
    response = rec.get("response") or {}
    status = response.get("status_code")
    body = response.get("body") or {}
    if status == 200 and rec.get("error") is None:
        try:
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return Reply(
                text=choice["message"].get("content") or "",
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                raw=body,
                model=body.get("model"),
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            return ProviderError(200, f"malformed answer in batch output: {str(body)[:120]}",
                                 kind="transient")
    err = rec.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
    message = err.get("message") if isinstance(err, dict) else str(err)
    code = err.get("code") if isinstance(err, dict) else None
    if status:
        return ProviderError(int(status), f"{status}: {message}")
    return ProviderError(None, f"{code or 'batch_error'}: {message}", kind="transient")

"""Anthropic's Message Batches API (``anthropic-batch:claude-...``): Messages at half price.

Each provider batch is one ``client.messages.batches.create(requests=[...])`` call whose items are
``{"custom_id": request key, "params": what the synchronous ``anthropic`` backend would send}``;
``retrieve`` is polled until ``processing_status`` is ``ended``; ``results`` streams one outcome
per request: ``succeeded`` (the answer), ``errored`` (its error type decides retryable or not),
``canceled`` or ``expired`` (fail retryably: a re-run submits them again). Limits, from
Anthropic's batch-processing guide: 100,000 requests or 256 MB per batch, whichever comes first.
See :mod:`generators.backends.batch` for splitting, resume and price.

Keys: ``$ANTHROPIC_API_KEY`` or ``api_key_env``; ``@base_url`` as for the ``anthropic`` backend.
"""

from __future__ import annotations

from typing import Any

from datagen_core.records import ErrorInfo, GenRequest, SamplingParams
from generators.backends.anthropic import _FINISH, AnthropicBackend
from generators.backends.base import ProviderError, Reply
from generators.backends.batch import BatchBackend

# Error types of an errored result -> the HTTP status the same error has synchronously.
_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
           "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
           "api_error": 500, "overloaded_error": 529}


class AnthropicBatchBackend(BatchBackend):
    name = "anthropic-batch"
    key_env = "ANTHROPIC_API_KEY"
    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024
    terminal = frozenset({"ended"})

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._messages = AnthropicBackend(spec)  # its request mapping and error translation

    @property
    def _client(self) -> Any:
        return self._messages._client

    async def start(self) -> None:
        # the synchronous backend's key, URL and client; batch calls carry whole files
        self._messages.client_timeout = 600.0
        await self._messages.start()

    async def close(self) -> None:
        await self._messages.close()

    def entry(self, custom_id: str, request: GenRequest, sampling: SamplingParams) -> dict:
        params = self._messages.params(request, sampling)
        params.update(params.pop("extra_body", {}))  # a batch item is the raw request body
        return {"custom_id": custom_id, "params": params}

    async def submit(self, entries: list[dict], size: int) -> str:
        try:
            batch = await self._client.messages.batches.create(requests=entries)
        except self._messages._sdk.APIError as exc:
            raise self._messages._translate(exc) from None
        return str(batch.id)

    async def status(self, batch_id: str) -> str:
        try:
            batch = await self._client.messages.batches.retrieve(batch_id)
        except self._messages._sdk.APIError as exc:
            raise self._messages._translate(exc) from None
        return str(batch.processing_status)

    async def results(self, batch_id: str) -> dict[str, Reply | BaseException]:
        out: dict[str, Reply | BaseException] = {}
        try:
            async for item in await self._client.messages.batches.results(batch_id):
                out[str(item.custom_id)] = _outcome(item.result)
        except self._messages._sdk.APIError as exc:
            raise self._messages._translate(exc) from None
        return out

    def classify(self, exc: BaseException) -> ErrorInfo:
        return self._messages.classify(exc)

    def retry_after(self, exc: BaseException) -> float | None:
        return self._messages.retry_after(exc)


def _outcome(result: Any) -> Reply | BaseException:
    kind = getattr(result, "type", None)
    if kind == "succeeded":
        message = result.message
        text = "".join(
            getattr(b, "text", "") for b in message.content if getattr(b, "type", "") == "text"
        )
        usage = message.usage
        reason = message.stop_reason
        return Reply(
            text=text,
            finish_reason=_FINISH.get(reason, reason) if reason else None,
            prompt_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            raw=message.model_dump(mode="json", exclude_none=True),
            model=message.model,
        )
    if kind == "errored":
        err = getattr(getattr(result, "error", None), "error", None)
        etype = str(getattr(err, "type", "api_error"))
        status = _STATUS.get(etype, 500)
        return ProviderError(status, f"{status}: {etype}: {getattr(err, 'message', '')}")
    return ProviderError(None, f"batch request {kind}: a re-run submits it again",
                         kind="transient")

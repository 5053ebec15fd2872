"""Anthropic's Messages API through the official SDK (``anthropic:claude-...``).

The SDK client is built with ``max_retries=0`` and ``timeout=None``: retries, backoff, per-attempt
timeouts and rate limits are the engine's, done the same way for every backend. SDK exceptions are
translated at the boundary into :class:`ProviderError` (with the status and ``Retry-After``) or
:class:`ConnectionError`, so the base :meth:`Backend.classify` decides on them like on any
provider's: 429 rate limit, 5xx/529 transient, 401/403/404 fatal with a fix, 400 invalid.

Mapping from provider-neutral requests:

* system messages are joined into the ``system`` parameter (omitted when there are none), since
  the Messages API has no system role;
* consecutive messages of the same role are merged, since the API wants alternating turns;
* ``temperature`` is always sent, ``top_p`` only when it is not 1.0 (recent Claude models reject
  both together), ``top_k`` when set, ``stop`` as ``stop_sequences``. The 2.x SDK no longer has
  typed keyword arguments for the sampling knobs, so they travel in ``extra_body``;
* ``seed`` is ignored: the API has no seed, so Anthropic samples are never reproducible;
* ``response_schema`` becomes ``output_config.format`` (structured outputs, a JSON schema).

Keys: ``$ANTHROPIC_API_KEY`` or the variable named by ``api_key_env``. ``@base_url`` is the API
root (``https://api.anthropic.com``); a trailing ``/v1`` is dropped because the SDK adds it.
"""

from __future__ import annotations

from typing import Any

from datagen_core.errors import MissingDependencyError, MissingKeyError
from datagen_core.records import ErrorInfo, GenRequest, SamplingParams
from datagen_core.secrets import redact, secret_from_env
from generators.backends.base import Backend, ProviderError, Reply, parse_retry_after

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class AnthropicBackend(Backend):
    name = "anthropic"
    key_env = "ANTHROPIC_API_KEY"

    _client: Any = None
    _sdk: Any = None
    client_timeout: float | None = None  # per call; the engine enforces its own deadline

    async def start(self) -> None:
        try:
            import anthropic
        except ImportError:
            raise MissingDependencyError("the anthropic backend", "anthropic") from None
        env = self.spec.api_key_env or self.key_env
        assert env is not None
        key = secret_from_env(env)
        if not key:
            raise MissingKeyError(self.spec.label, env)
        base_url = self.spec.base_url
        if base_url:
            base_url = base_url.rstrip("/").removesuffix("/v1")
        self._sdk = anthropic
        self._client = anthropic.AsyncAnthropic(
            api_key=key, base_url=base_url or None, max_retries=0, timeout=self.client_timeout
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def params(self, request: GenRequest, sampling: SamplingParams) -> dict[str, Any]:
        """Keyword arguments for ``client.messages.create`` (see the module docstring)."""
        system = [m.content for m in request.messages if m.role == "system"]
        turns: list[dict[str, str]] = []
        for m in request.messages:
            if m.role == "system":
                continue
            if turns and turns[-1]["role"] == m.role:
                turns[-1]["content"] += "\n\n" + m.content
            else:
                turns.append({"role": m.role, "content": m.content})
        extra: dict[str, Any] = {"temperature": sampling.temperature}
        if sampling.top_p != 1.0:
            extra["top_p"] = sampling.top_p
        if sampling.top_k is not None:
            extra["top_k"] = sampling.top_k
        params: dict[str, Any] = {
            "model": self.spec.model,
            "max_tokens": sampling.max_tokens,
            "messages": turns,
            "extra_body": extra,
        }
        if system:
            params["system"] = "\n\n".join(system)
        if sampling.stop:
            params["stop_sequences"] = list(sampling.stop)
        if request.response_schema is not None:
            params["output_config"] = {
                "format": {"type": "json_schema", "schema": request.response_schema}
            }
        return params

    async def complete(self, request: GenRequest, sampling: SamplingParams) -> Reply:
        assert self._client is not None, "backend not started"
        try:
            message = await self._client.messages.create(**self.params(request, sampling))
        except self._sdk.APIError as exc:
            raise self._translate(exc) from None
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

    def _translate(self, exc: BaseException) -> BaseException:
        """SDK exception -> ProviderError / ConnectionError; anything else unchanged."""
        sdk = self._sdk
        if sdk is None:
            return exc
        if isinstance(exc, sdk.APIStatusError):
            message = getattr(exc, "api_message", None) or exc.message
            status = exc.status_code
            return ProviderError(
                status, f"{status}: {message}", retry_after=_retry_after(exc.response.headers)
            )
        if isinstance(exc, sdk.APIResponseValidationError):
            return ProviderError(
                exc.status_code, f"malformed response body: {exc.message}", kind="transient"
            )
        if isinstance(exc, sdk.APITimeoutError):
            return TimeoutError(redact(exc.message))
        if isinstance(exc, sdk.APIConnectionError):
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            return ConnectionError(redact(f"{exc.message}{cause}"))
        return exc

    def classify(self, exc: BaseException) -> ErrorInfo:
        return super().classify(self._translate(exc))

    def retry_after(self, exc: BaseException) -> float | None:
        return super().retry_after(self._translate(exc))


def _retry_after(headers: Any) -> float | None:
    after = parse_retry_after(headers.get("retry-after"))
    if after is None and headers.get("retry-after-ms"):
        try:
            after = float(headers["retry-after-ms"]) / 1000
        except ValueError:
            after = None
    return after

"""The one backend interface every provider implements.

A backend only talks to its provider. Caching, resume, rate limits, retries, timeouts, cost and
progress are the engine's job (:mod:`generators.engine`), done once for every backend. A backend's
policy hooks are :meth:`Backend.classify` (rate limit / transient / fatal / invalid) and
:meth:`Backend.retry_after`.
"""

from __future__ import annotations

import asyncio
from abc import ABC
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from datagen_core.errors import ConfigError, DatagenError
from datagen_core.records import (
    ErrorInfo,
    ErrorKind,
    GeneratorSpec,
    GenRequest,
    Price,
    SamplingParams,
)
from datagen_core.registry import Registry
from datagen_core.secrets import redact


@dataclass(slots=True)
class Reply:
    """What a provider said, before the engine adds key, latency, cost and attempts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    raw: Any = None
    model: str | None = None


class ProviderError(Exception):
    """An HTTP-level failure from a provider, with what the engine needs to decide on it."""

    def __init__(
        self,
        status: int | None,
        message: str,
        retry_after: float | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        super().__init__(redact(message))
        self.status = status
        self.retry_after = retry_after
        self.kind = kind


def kind_for_status(status: int | None) -> ErrorKind:
    if status is None:
        return "transient"
    if status == 429:
        return "rate_limit"
    if status in (408, 409, 425) or status >= 500:
        return "transient"
    if status in (401, 403, 404):
        return "fatal"
    return "invalid"  # 400, 413, 422: this request is bad, the run goes on


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Backend(ABC):
    """Base for providers. Subclasses implement :meth:`complete` (one request per call, the engine
    fans out) or set ``batched = True`` and implement :meth:`complete_batch` (local engines that
    want many prompts in one call)."""

    name: ClassVar[str] = "base"
    batched: ClassVar[bool] = False
    default_batch_size: ClassVar[int] = 16
    key_env: ClassVar[str | None] = None
    # The ``options`` a backend reads; None passes any through (vLLM hands them to vllm.LLM).
    # A name not listed is a typo the user should hear about, not a silently ignored setting.
    known_options: ClassVar[frozenset[str] | None] = frozenset()

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        # The run's folder, set by the engine when the run has one: where a backend keeps state
        # that must outlive the process (a batch API's submitted batch ids, for resume).
        self.run_dir: Path | None = None

    async def start(self) -> None:
        """Open clients, check keys, load weights. Raise DatagenError with a fix on failure."""

    async def close(self) -> None:
        """Release clients and memory."""

    async def complete(self, request: GenRequest, sampling: SamplingParams) -> Reply:
        raise NotImplementedError(f"{type(self).__name__} implements neither complete()")

    async def complete_batch(
        self, requests: list[GenRequest], sampling: list[SamplingParams]
    ) -> Sequence[Reply | BaseException]:
        """One reply per request, in order. An exception in place of a reply fails that request
        alone (a batch API's per-request error); one raised fails the whole call."""
        return list(
            await asyncio.gather(*(self.complete(r, s) for r, s in zip(requests, sampling)))
        )

    def price(self) -> Price | None:
        """Price per million tokens; None for free or unknown (cost 0)."""
        from generators.pricing import price_for

        return self.spec.price or price_for(self.spec.provider, self.spec.model)

    def classify(self, exc: BaseException) -> ErrorInfo:
        """Decide what an exception means for the run."""
        if isinstance(exc, ProviderError):
            kind = exc.kind or kind_for_status(exc.status)
            return ErrorInfo(
                kind=kind,
                type=f"http_{exc.status}" if exc.status else "provider_error",
                message=self.fatal_hint(exc) if kind == "fatal" else str(exc),
                status=exc.status,
            )
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return ErrorInfo(kind="transient", type="timeout", message="request timed out")
        if isinstance(exc, (ConnectionError, OSError)):
            return ErrorInfo(kind="transient", type="connection", message=redact(str(exc)))
        if isinstance(exc, DatagenError):
            return ErrorInfo(kind="fatal", type=type(exc).__name__, message=str(exc))
        return ErrorInfo(kind="invalid", type=type(exc).__name__, message=redact(str(exc)))

    def retry_after(self, exc: BaseException) -> float | None:
        return getattr(exc, "retry_after", None)

    def fatal_hint(self, exc: ProviderError) -> str:
        """One line that says what to fix for a fatal error."""
        where = self.spec.label
        if exc.status in (401, 403):
            var = self.spec.api_key_env or self.key_env or "the API key variable"
            return f"{where}: {exc.status} unauthorized: check {var} ({exc})"
        if exc.status == 404:
            return (
                f"{where}: 404 not found: check the model name and base URL "
                f"(is {self.spec.model!r} served there?) ({exc})"
            )
        return f"{where}: {exc}"


BACKENDS: Registry[type[Backend]] = Registry("backend", "datagen.backends")


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator: ``@register_backend("mine")`` makes ``mine:model`` specs work."""

    def deco(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        return BACKENDS.register(name)(cls)

    return deco


def check_spec(spec: GeneratorSpec) -> type[Backend]:
    """The backend class for a spec, after checking its provider and options: everything that
    can be wrong with a spec before anything is loaded or sent."""
    cls = BACKENDS.get(spec.provider)
    known = cls.known_options
    unknown = sorted(set(spec.options) - known) if known is not None else []
    if unknown:
        hint = f"known: {', '.join(sorted(known))}" if known else "it takes none"
        raise ConfigError(f"unknown option {unknown[0]!r} for the {spec.provider} backend ({hint})")
    return cls


def create_backend(spec: GeneratorSpec) -> Backend:
    return check_spec(spec)(spec)

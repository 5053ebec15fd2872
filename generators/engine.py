"""The generation engine: one place for caching, resume, limits, retries, cost and progress.

``await Engine(spec, log_path=...).generate(requests)`` returns one :class:`GenResponse` per
request, in input order. Before anything is sent, answers already in the run's log or in the
workspace cache are reused, so a re-run or a resumed run pays only for what is missing. Every
new response is appended and flushed to the log as it arrives.

Errors are decided per backend (:meth:`Backend.classify`): rate limits and transient failures are
retried with exponential backoff that honours ``Retry-After``; an invalid request is recorded and
the run goes on; a fatal error (bad key, unknown model) stops the run at once with one line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiolimiter import AsyncLimiter

from datagen.errors import BackendError
from datagen.fingerprint import stable_hash
from datagen.records import (
    ErrorInfo,
    GeneratorSpec,
    GenRequest,
    GenResponse,
    SamplingParams,
    Usage,
)
from generators.base import Backend, Reply, create_backend
from generators.log import ResponseLog, load_answers
from generators.pricing import cost as cost_of

log = logging.getLogger("datagen.engine")

KEY_LENGTH = 32
_RETRYABLE = ("rate_limit", "transient")


class ResponseCache(Protocol):
    """Answers stored outside this run (e.g. the workspace database), looked up by key."""

    def get_many(self, keys: Sequence[str]) -> dict[str, GenResponse]: ...


def effective_sampling(spec: GeneratorSpec, request: GenRequest) -> SamplingParams:
    return request.sampling or spec.sampling


def request_key(spec: GeneratorSpec, request: GenRequest) -> str:
    """hash(provider, model, server, semantic sampling, messages, response schema, sample #).

    Operational settings (concurrency, rate limits, timeouts, retries) and ``meta`` are not in
    the key: changing them never re-pays for an answer.
    """
    payload: dict[str, Any] = spec.semantic()
    payload["sampling"] = effective_sampling(spec, request).model_dump(exclude_none=True)
    payload["messages"] = [(m.role, m.content) for m in request.messages]
    if request.response_schema is not None:
        payload["schema"] = request.response_schema
    if request.sample:
        payload["sample"] = request.sample
    return stable_hash(payload, KEY_LENGTH)


@dataclass
class EngineStats:
    total: int = 0
    reused: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


class _Fatal(Exception):
    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


class Engine:
    """Sends requests for one generator spec; see the module docstring."""

    def __init__(
        self,
        spec: GeneratorSpec,
        *,
        backend: Backend | None = None,
        log_path: Path | str | None = None,
        cache: ResponseCache | None = None,
        progress: bool | None = None,
        description: str | None = None,
    ) -> None:
        self.spec = spec
        self.backend = backend or create_backend(spec)
        self.log_path = Path(log_path) if log_path else None
        self.cache = cache
        self.progress = progress
        self.description = description or spec.label
        self.stats = EngineStats()
        lim = spec.limits
        self._rpm = AsyncLimiter(lim.rpm, 60) if lim.rpm else None
        self._tpm = AsyncLimiter(lim.tpm, 60) if lim.tpm else None
        self._started = False
        self._price = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if not self._started:
            await self.backend.start()
            self._price = self.backend.price()
            self._started = True

    async def aclose(self) -> None:
        if self._started:
            await self.backend.close()
            self._started = False

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the run ---------------------------------------------------------------------------
    async def generate(self, requests: Sequence[GenRequest]) -> list[GenResponse]:
        keys = [request_key(self.spec, r) for r in requests]
        self.stats = stats = EngineStats(total=len(requests))
        answers: dict[str, GenResponse] = {}
        if self.log_path is not None:
            answers.update(load_answers(self.log_path))
        unique: dict[str, int] = {}
        for i, k in enumerate(keys):
            unique.setdefault(k, i)
        missing = [k for k in unique if k not in answers]
        from_cache: dict[str, GenResponse] = {}
        if missing and self.cache is not None:
            from_cache = self.cache.get_many(missing)
        todo = [(k, unique[k]) for k in unique if k not in answers and k not in from_cache]
        stats.reused = len(unique) - len(todo)

        results: dict[str, GenResponse] = {}
        results.update({k: answers[k] for k in unique if k in answers})

        response_log = ResponseLog(self.log_path).open() if self.log_path else None
        try:
            for k, resp in from_cache.items():
                # Copy cross-run answers into this run's log so the run is self-contained.
                resp = resp.model_copy(update={"index": unique[k]})
                results[k] = resp
                if response_log is not None:
                    response_log.write(resp)
            if todo:
                await self.start()
                await self._send(requests, todo, results, response_log)
        finally:
            if response_log is not None:
                response_log.close()

        out: list[GenResponse] = []
        for i, k in enumerate(keys):
            r = results[k]
            out.append(r if r.index == i else r.model_copy(update={"index": i}))
        return out

    async def _send(
        self,
        requests: Sequence[GenRequest],
        todo: list[tuple[str, int]],
        results: dict[str, GenResponse],
        response_log: ResponseLog | None,
    ) -> None:
        bar = _Progress(self.description, len(results) + len(todo), len(results), self.progress)
        backend = self.backend
        if backend.batched:
            size = self.spec.limits.batch_size or backend.default_batch_size
            units = [todo[i : i + size] for i in range(0, len(todo), size)]
            workers = 1
        else:
            units = [[t] for t in todo]
            workers = min(self.spec.limits.concurrency, len(units))
        it = iter(units)

        def record(key: str, index: int, reply: Reply | None, err: ErrorInfo | None,
                   latency: float, attempts: int) -> None:
            stats = self.stats
            stats.sent += 1
            stats.attempts += attempts
            if reply is not None:
                usage = Usage(
                    prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens
                )
                c = cost_of(self._price, usage)
                resp = GenResponse(
                    key=key, index=index, text=reply.text, finish_reason=reply.finish_reason,
                    usage=usage, latency_s=latency, cost_usd=c, attempts=attempts,
                    model=reply.model, raw=reply.raw, created_at=time.time(),
                )
                stats.ok += 1
                stats.prompt_tokens += usage.prompt_tokens
                stats.completion_tokens += usage.completion_tokens
                stats.cost_usd += c
            else:
                assert err is not None
                resp = GenResponse(
                    key=key, index=index, error=err, latency_s=latency, attempts=attempts,
                    created_at=time.time(),
                )
                stats.failed += 1
                stats.errors[err.type] = stats.errors.get(err.type, 0) + 1
            results[key] = resp
            if response_log is not None:
                response_log.write(resp)
            bar.advance(stats)

        async def worker() -> None:
            for unit in it:
                batch = [requests[i] for _, i in unit]
                t0 = time.perf_counter()
                replies, err, attempts = await self._call(batch)
                latency = (time.perf_counter() - t0) / len(unit)
                if err is not None and err.kind == "fatal":
                    raise _Fatal(err)
                for j, (key, index) in enumerate(unit):
                    record(key, index, replies[j] if replies else None, err, latency, attempts)

        try:
            with bar:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(workers):
                        tg.create_task(worker())
        except* _Fatal as eg:
            info = eg.exceptions[0].info  # type: ignore[attr-defined]
            raise BackendError(info.message) from None

    async def _call(
        self, batch: list[GenRequest]
    ) -> tuple[list[Reply] | None, ErrorInfo | None, int]:
        """Send one unit with retries: (replies, None, attempts) or (None, error, attempts).

        The first attempt is a plain await (the hot path: no retry machinery per request);
        only a rate-limit or transient failure enters the backoff loop, which waits for the
        provider's ``Retry-After`` when it gives one (capped at 600 s), else exponentially
        with jitter, up to ``max_retries`` more attempts.
        """
        spec = self.spec
        sampling = [r.sampling or spec.sampling for r in batch]
        max_attempts = spec.limits.max_retries + 1
        attempts = 0
        while True:
            attempts += 1
            try:
                return await self._attempt(batch, sampling), None, attempts
            except Exception as exc:  # noqa: BLE001 - classified, recorded, never swallowed
                info = self.backend.classify(exc)
                if info.kind not in _RETRYABLE or attempts >= max_attempts:
                    if info.kind != "fatal":
                        log.debug("request failed after %d attempts: %s", attempts, info.message)
                    return None, info, attempts
                await asyncio.sleep(self._backoff(exc, attempts))

    async def _attempt(
        self, batch: list[GenRequest], sampling: list[SamplingParams]
    ) -> list[Reply]:
        backend = self.backend
        if self._rpm is not None:
            await self._rpm.acquire(min(len(batch), self._rpm.max_rate))
        if self._tpm is not None:
            est = sum(_estimate_tokens(r, s) for r, s in zip(batch, sampling))
            await self._tpm.acquire(min(est, self._tpm.max_rate))
        if backend.batched:
            replies = await backend.complete_batch(batch, sampling)
            if len(replies) != len(batch):
                raise RuntimeError(
                    f"{backend.name} returned {len(replies)} replies for {len(batch)} prompts"
                )
            return replies
        async with asyncio.timeout(self.spec.limits.timeout_s):
            return [await backend.complete(batch[0], sampling[0])]

    def _backoff(self, exc: BaseException, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        after = self.backend.retry_after(exc)
        if after is not None:
            return min(after, 600.0)
        # Exponential backoff with full-second jitter, capped (tenacity's wait_exponential_jitter).
        lim = self.spec.limits
        try:
            delay = lim.backoff_s * 2 ** (attempt - 1) + random.uniform(0, 1)
        except OverflowError:
            delay = lim.backoff_max_s
        return max(0.0, min(delay, lim.backoff_max_s))


def _estimate_tokens(request: GenRequest, sampling: SamplingParams) -> int:
    return sum(len(m.content) for m in request.messages) // 4 + sampling.max_tokens


class _Progress:
    """A rich progress bar (rate, ETA, failures, tokens, cost) shown on a terminal only."""

    def __init__(self, description: str, total: int, done: int, enabled: bool | None) -> None:
        from rich.console import Console

        self._p: Any = None
        console = Console(stderr=True)
        if enabled is False or (enabled is None and not console.is_terminal):
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeRemainingColumn(),
            TextColumn("fail {task.fields[failed]} | tok {task.fields[tokens]} | "
                       "${task.fields[cost]:.4f}"),
            console=console,
            transient=False,
            refresh_per_second=4,
        )
        self._task = self._p.add_task(
            description, total=total, completed=done, failed=0, tokens=0, cost=0.0, rate="-"
        )
        self._t0 = time.perf_counter()
        self._n = 0

    def advance(self, stats: EngineStats) -> None:
        if self._p is None:
            return
        self._n += 1
        elapsed = time.perf_counter() - self._t0
        self._p.update(
            self._task, advance=1, failed=stats.failed,
            tokens=stats.prompt_tokens + stats.completion_tokens, cost=stats.cost_usd,
            rate=f"{self._n / elapsed:.1f}" if elapsed > 0 else "-",
        )

    def __enter__(self) -> _Progress:
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()


async def generate(
    spec: GeneratorSpec | str, requests: Sequence[GenRequest], **engine_kwargs: Any
) -> list[GenResponse]:
    """One-shot helper: build an engine, generate, close the backend."""
    if isinstance(spec, str):
        spec = GeneratorSpec.parse(spec)
    async with Engine(spec, **engine_kwargs) as engine:
        return await engine.generate(requests)

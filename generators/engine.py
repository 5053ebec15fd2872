"""The generation engine: one place for caching, resume, limits, retries, cost and progress.

``await Engine(spec, log_path=...).generate(requests)`` returns one :class:`GenResponse` per
request, in input order. ``Engine.stream(requests)`` is the same for inputs of any size: it
takes an (async) iterable, keeps a bounded window of requests in flight and yields
``(request, response)`` pairs in input order as they complete, so memory does not grow with N.
Before anything is sent, answers already in the run's log or in the workspace cache are reused,
so a re-run or a resumed run pays only for what is missing. Every new response is appended to
the log within 50 ms of its arrival (answers that arrive together are written together: a
write() each cost as much as the HTTP request at thousands of answers a second).

Errors are decided per backend (:meth:`Backend.classify`): rate limits and transient failures are
retried with exponential backoff that honours ``Retry-After``; an invalid request is recorded and
the run goes on; a fatal error (bad key, unknown model) stops the run at once with one line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from datagen_core.errors import BackendError
from datagen_core.records import (
    ErrorInfo,
    GeneratorSpec,
    GenRequest,
    GenResponse,
    Price,
    SamplingParams,
    Usage,
)
from generators.backends.base import Backend, Reply, create_backend
from generators.keys import RequestKeys
from generators.pricing import cost as cost_of
from generators.progress import EngineStats, ProgressBar
from generators.response_log import LogIndex, ResponseLog, load_answers

log = logging.getLogger("datagen.engine")

_RETRYABLE = ("rate_limit", "transient")
#: answers are written to the run's log together, at most this long after they arrive
_FLUSH_AFTER = 0.05


class ResponseCache(Protocol):
    """Answers stored outside this run (e.g. the workspace database), looked up by key."""

    def get_many(self, keys: Sequence[str]) -> dict[str, GenResponse]: ...


T = TypeVar("T")


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
        if self.log_path is not None:
            self.backend.run_dir = self.log_path.parent
        self.cache = cache
        self.progress = progress
        self.description = description or spec.label
        self.stats = EngineStats()
        lim = spec.limits
        self._rpm = AsyncLimiter(lim.rpm, 60) if lim.rpm else None
        self._tpm = AsyncLimiter(lim.tpm, 60) if lim.tpm else None
        # backoff_s * 2**(attempt-1) + uniform(0, 1) s of jitter, capped at backoff_max_s
        self._expo = wait_exponential_jitter(multiplier=lim.backoff_s, max=lim.backoff_max_s)
        self._started = False
        self._price: Price | None = None

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
        key_of = RequestKeys(self.spec)
        keys = [key_of(r) for r in requests]
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

        response_log = (ResponseLog(self.log_path, flush_after=_FLUSH_AFTER).open()
                        if self.log_path else None)
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

    async def stream(
        self, requests: Iterable[GenRequest] | AsyncIterable[GenRequest], *,
        window: int | None = None, total: int | None = None,
    ) -> AsyncIterator[tuple[GenRequest, GenResponse]]:
        """``(request, response)`` for each request, in input order, ``response.index`` its
        position; what :meth:`generate` does, with memory bounded by ``window``.

        Requests are pulled from ``requests`` only while fewer than ``window`` (default 16 x
        concurrency, at least 4,096) are planned and not yet taken by the caller, so a slow
        consumer or a slow request holds the producer back instead of filling memory. The log
        is indexed, not loaded (:class:`LogIndex`); the workspace cache is asked about each
        slice of requests (half a window) in a thread, ahead of sending. ``total`` only sizes
        the progress bar. Closing the iterator early cancels what is in flight.
        """
        lim = self.spec.limits
        window = max(window or max(16 * lim.concurrency, 4096), 2)
        lookahead = max(1, window // 2)
        key_of = RequestKeys(self.spec)
        self.stats = stats = EngineStats(total=0)
        index = LogIndex.build(self.log_path) if self.log_path is not None else None
        response_log = (ResponseLog(self.log_path, flush_after=_FLUSH_AFTER).open()
                        if self.log_path is not None else None)
        if index is not None:
            index.writer = response_log
        bar = ProgressBar(self.description, total, 0, self.progress)
        reqs: dict[int, GenRequest] = {}  # planned, not yet handed out
        slots: dict[int, GenResponse] = {}  # answered, not yet handed out
        inflight: dict[str, list[int]] = {}  # key -> positions waiting for its answer
        queue: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        ready = asyncio.Event()  # a slot filled, planning ended, or a task failed
        room = asyncio.Event()  # the caller took a response: the window moved
        failures: list[BaseException] = []
        tasks: list[asyncio.Task[None]] = []
        state = {"next": 0, "planned": 0, "done_planning": False, "workers": 0}
        batched = self.backend.batched
        n_workers = 1 if batched else lim.concurrency

        def fill(key: str, resp: GenResponse) -> None:
            for q in inflight.pop(key):
                slots[q] = resp if resp.index == q else resp.model_copy(update={"index": q})
            if state["next"] in slots:
                ready.set()

        def finish(key: str, index_: int, reply: Reply | None, err: ErrorInfo | None,
                   latency: float, attempts: int) -> None:
            resp = self._response(key, index_, reply, err, latency, attempts)
            if response_log is not None:
                offset = response_log.write(resp)
                if index is not None and resp.ok:
                    index.add(key, offset)
            fill(key, resp)
            bar.advance(stats)

        async def worker() -> None:
            clock = _AttemptClock(lim.timeout_s)
            try:
                while (item := await queue.get()) is not None:
                    key, pos = item
                    t0 = time.perf_counter()
                    reply, err, attempts = await self._call_one(reqs[pos], clock)
                    latency = time.perf_counter() - t0
                    if err is not None and err.kind == "fatal":
                        raise _Fatal(err)
                    finish(key, pos, reply, err, latency, attempts)
            finally:
                clock.close()

        async def batch_worker() -> None:
            size = lim.batch_size or self.backend.default_batch_size
            closed = False
            while not closed:
                first = await queue.get()
                if first is None:
                    return
                unit = [first]
                while len(unit) < size:
                    try:
                        item = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if item is None:
                        closed = True
                        break
                    unit.append(item)
                t0 = time.perf_counter()
                replies, err, attempts = await self._call([reqs[p] for _, p in unit])
                latency = (time.perf_counter() - t0) / len(unit)
                if err is not None and err.kind == "fatal":
                    raise _Fatal(err)
                for j, (key, pos) in enumerate(unit):
                    reply = replies[j] if replies else None
                    if isinstance(reply, BaseException):  # this request alone failed
                        item_err = self.backend.classify(reply)
                        if item_err.kind == "fatal":
                            raise _Fatal(item_err)
                        finish(key, pos, None, item_err, latency, attempts)
                    else:
                        finish(key, pos, reply, err, latency, attempts)

        def watch(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]
                ready.set()

        def spawn(coro: Awaitable[None]) -> None:
            task = asyncio.ensure_future(coro)
            task.add_done_callback(watch)
            tasks.append(task)

        async def send(key: str, pos: int) -> None:
            if not state["workers"]:
                await self.start()
                state["workers"] = n_workers
                for _ in range(n_workers):
                    spawn(batch_worker() if batched else worker())
            queue.put_nowait((key, pos))

        async def plan_slice(chunk: list[GenRequest]) -> None:
            while state["planned"] + len(chunk) > state["next"] + window:
                room.clear()
                await room.wait()
            keys = [key_of(r) for r in chunk]
            missing: list[str] = []
            for r, k in zip(chunk, keys):
                pos = state["planned"]
                state["planned"] = pos + 1
                stats.total += 1
                reqs[pos] = r
                waiting = inflight.get(k)
                if waiting is not None:  # the same request again: one call answers both
                    waiting.append(pos)
                    continue
                inflight[k] = [pos]
                hit = index.get(k) if index is not None else None
                if hit is not None:
                    stats.reused += 1
                    fill(k, hit)
                else:
                    missing.append(k)
            found: dict[str, GenResponse] = {}
            if missing and self.cache is not None:
                found = await asyncio.to_thread(self.cache.get_many, missing)
            for k in missing:
                resp = found.get(k)
                if resp is None:
                    await send(k, inflight[k][0])
                    continue
                # Copy cross-run answers into this run's log so the run is self-contained.
                resp = resp.model_copy(update={"index": inflight[k][0]})
                if response_log is not None:
                    offset = response_log.write(resp)
                    if index is not None:
                        index.add(k, offset)
                stats.reused += 1
                fill(k, resp)

        async def plan() -> None:
            chunk: list[GenRequest] = []
            if isinstance(requests, AsyncIterable):
                async for r in requests:
                    chunk.append(r)
                    if len(chunk) >= lookahead:
                        await plan_slice(chunk)
                        chunk = []
            else:
                for r in requests:
                    chunk.append(r)
                    if len(chunk) >= lookahead:
                        await plan_slice(chunk)
                        chunk = []
            if chunk:
                await plan_slice(chunk)
            state["done_planning"] = True
            for _ in range(state["workers"]):
                queue.put_nowait(None)
            ready.set()

        try:
            with bar:
                spawn(plan())
                while True:
                    nxt = state["next"]
                    if nxt in slots:
                        resp = slots.pop(nxt)
                        state["next"] = nxt + 1
                        room.set()
                        yield reqs.pop(nxt), resp
                        continue
                    if failures:
                        first = failures[0]
                        if isinstance(first, _Fatal):
                            raise BackendError(first.info.message) from None
                        raise first
                    if state["done_planning"] and nxt >= state["planned"]:
                        break
                    ready.clear()
                    await ready.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if response_log is not None:
                response_log.close()
            if index is not None:
                index.close()

    def _response(self, key: str, index: int, reply: Reply | None, err: ErrorInfo | None,
                  latency: float, attempts: int) -> GenResponse:
        """The response record for one answered (or failed) request, counted in the stats."""
        stats = self.stats
        stats.sent += 1
        stats.attempts += attempts
        if reply is not None:
            usage = {"prompt_tokens": reply.prompt_tokens,
                     "completion_tokens": reply.completion_tokens}
            price = self._price
            c = 0.0 if price is None else cost_of(price, Usage.model_validate(usage),
                                                  self._compute_s(latency))
            if _plain_reply(reply):
                # every field already has its declared type (checked just now): construct,
                # the validated model's twin at a fifth of the cost (once per answer)
                resp = GenResponse.model_construct(
                    key=key, index=index, text=reply.text, finish_reason=reply.finish_reason,
                    usage=Usage.model_construct(prompt_tokens=reply.prompt_tokens,
                                                completion_tokens=reply.completion_tokens),
                    latency_s=latency, cost_usd=c,
                    error=None, attempts=attempts, model=reply.model, raw=reply.raw,
                    created_at=time.time())
            else:  # a backend gave something else: the validator decides (and may refuse)
                resp = GenResponse.model_validate({
                    "key": key, "index": index, "text": reply.text,
                    "finish_reason": reply.finish_reason, "usage": usage, "latency_s": latency,
                    "cost_usd": c, "attempts": attempts, "model": reply.model, "raw": reply.raw,
                    "created_at": time.time(),
                })
            stats.ok += 1
            stats.prompt_tokens += resp.usage.prompt_tokens
            stats.completion_tokens += resp.usage.completion_tokens
            stats.cost_usd += c
            return resp
        assert err is not None
        stats.failed += 1
        stats.errors[err.type] = stats.errors.get(err.type, 0) + 1
        return GenResponse(key=key, index=index, error=err, latency_s=latency,
                           attempts=attempts, created_at=time.time())

    def _compute_s(self, latency: float) -> float:
        """The machine time one answer used, for per-hour prices. A batched (in-process)
        backend's latency is already the answer's share of its batch's wall time; a server
        answers ``concurrency`` requests at once, so each is charged that share of its latency
        (exact for a saturated server, an upper bound otherwise)."""
        if self.backend.batched:
            return latency
        return latency / max(1, self.spec.limits.concurrency)

    async def _send(
        self,
        requests: Sequence[GenRequest],
        todo: list[tuple[str, int]],
        results: dict[str, GenResponse],
        response_log: ResponseLog | None,
    ) -> None:
        bar = ProgressBar(self.description, len(results) + len(todo), len(results), self.progress)
        backend = self.backend
        if backend.batched:
            size = self.spec.limits.batch_size or backend.default_batch_size
            units = iter([todo[i : i + size] for i in range(0, len(todo), size)])
            workers = 1
        else:
            singles = iter(todo)
            workers = min(self.spec.limits.concurrency, len(todo))

        def record(key: str, index: int, reply: Reply | None, err: ErrorInfo | None,
                   latency: float, attempts: int) -> None:
            resp = self._response(key, index, reply, err, latency, attempts)
            results[key] = resp
            if response_log is not None:
                response_log.write(resp)
            bar.advance(self.stats)

        async def batch_worker() -> None:
            for unit in units:
                batch = [requests[i] for _, i in unit]
                t0 = time.perf_counter()
                replies, err, attempts = await self._call(batch)
                latency = (time.perf_counter() - t0) / len(unit)
                if err is not None and err.kind == "fatal":
                    raise _Fatal(err)
                for j, (key, index) in enumerate(unit):
                    reply = replies[j] if replies else None
                    if isinstance(reply, BaseException):  # this request alone failed
                        item = self.backend.classify(reply)
                        if item.kind == "fatal":
                            raise _Fatal(item)
                        record(key, index, None, item, latency, attempts)
                    else:
                        record(key, index, reply, err, latency, attempts)

        async def worker() -> None:  # one request per call: the hot path of API backends
            clock = _AttemptClock(self.spec.limits.timeout_s)
            try:
                for key, index in singles:
                    t0 = time.perf_counter()
                    reply, err, attempts = await self._call_one(requests[index], clock)
                    latency = time.perf_counter() - t0
                    if err is not None and err.kind == "fatal":
                        raise _Fatal(err)
                    record(key, index, reply, err, latency, attempts)
            finally:
                clock.close()

        try:
            with bar:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(workers):
                        tg.create_task(batch_worker() if backend.batched else worker())
        except* _Fatal as eg:
            first = eg.exceptions[0]
            assert isinstance(first, _Fatal)
            raise BackendError(first.info.message) from None

    async def _call(
        self, batch: list[GenRequest]
    ) -> tuple[Sequence[Reply | BaseException] | None, ErrorInfo | None, int]:
        """Send one batch with retries (batched backends): (replies, None, attempts) or
        (None, error, attempts). See :meth:`_retrying` for the retry policy."""
        spec = self.spec
        sampling = [r.sampling or spec.sampling for r in batch]
        backend = self.backend

        async def attempt() -> Sequence[Reply | BaseException]:
            await self._acquire(batch, sampling)
            replies = await backend.complete_batch(batch, sampling)
            if len(replies) != len(batch):
                raise RuntimeError(
                    f"{backend.name} returned {len(replies)} replies for {len(batch)} prompts"
                )
            return replies

        return await self._retrying(attempt)

    async def _call_one(
        self, request: GenRequest, clock: _AttemptClock
    ) -> tuple[Reply | None, ErrorInfo | None, int]:
        """Send one request with retries: (reply, None, attempts) or (None, error, attempts).
        Each attempt is cut at ``timeout_s`` (a transient ``TimeoutError``)."""
        sampling = request.sampling or self.spec.sampling
        backend = self.backend
        limited = self._rpm is not None or self._tpm is not None

        async def attempt() -> Reply:
            if limited:
                await self._acquire([request], [sampling])
            clock.start()
            try:
                return await backend.complete(request, sampling)
            except asyncio.CancelledError:
                if clock.expired():
                    raise TimeoutError from None
                raise
            finally:
                clock.stop()

        return await self._retrying(attempt)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]
                        ) -> tuple[T | None, ErrorInfo | None, int]:
        """Run ``attempt`` with the engine's retry policy.

        The first attempt is a plain await: the hot path carries no retry machinery (measured:
        tenacity's per-call setup was half the engine's CPU per request at concurrency 256).
        Only a rate-limit or transient failure hands over to tenacity, which waits for the
        provider's ``Retry-After`` when it gives one (capped at 600 s), else exponentially
        with jitter, for up to ``max_retries`` more attempts.
        """
        try:
            return await attempt(), None, 1
        except Exception as exc:  # classified and recorded, never swallowed
            info = self.backend.classify(exc)
            if info.kind not in _RETRYABLE or self.spec.limits.max_retries == 0:
                return None, self._record_failure(info, 1), 1
            pending: Exception | None = exc
        attempts = 1
        try:
            async for state in AsyncRetrying(
                stop=stop_after_attempt(self.spec.limits.max_retries + 1),
                wait=self._wait,
                retry=retry_if_exception(self._retryable),
                reraise=True,
            ):
                with state:
                    if pending is not None:  # attempt 1, already made above, failed so
                        failed, pending = pending, None
                        raise failed
                    attempts += 1
                    result = await attempt()
            return result, None, attempts
        except Exception as exc:
            return None, self._record_failure(self.backend.classify(exc), attempts), attempts

    def _retryable(self, exc: BaseException) -> bool:
        return self.backend.classify(exc).kind in _RETRYABLE

    def _wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: the provider's Retry-After, else backoff."""
        exc = state.outcome.exception() if state.outcome is not None else None
        after = self.backend.retry_after(exc) if exc is not None else None
        if after is not None:
            return min(after, 600.0)
        return float(self._expo(state))

    def _record_failure(self, info: ErrorInfo, attempts: int) -> ErrorInfo:
        if info.kind != "fatal":
            log.debug("request failed after %d attempts: %s", attempts, info.message)
        return info

    async def _acquire(self, batch: list[GenRequest], sampling: list[SamplingParams]) -> None:
        """Wait for the request and token rate limits, if any."""
        if self._rpm is not None:
            await self._rpm.acquire(min(len(batch), self._rpm.max_rate))
        if self._tpm is not None:
            est = sum(_estimate_tokens(r, s) for r, s in zip(batch, sampling))
            await self._tpm.acquire(min(est, self._tpm.max_rate))

class _AttemptClock:
    """The per-attempt timeout of one worker task, with one lazily re-armed timer.

    ``asyncio.timeout`` schedules and cancels a timer handle per request: a heap push and a
    heap pop of Python-compared handles, about a fifth of the engine's own CPU per request.
    Here an attempt only notes its deadline; the worker's single timer, when it fires, either
    cancels the attempt that is still running past its deadline or moves on to the deadline
    of the attempt now running. Semantics are asyncio.timeout's: the attempt is cancelled
    exactly ``timeout_s`` after it started and the caller sees ``TimeoutError``, while a
    cancellation from anywhere else propagates unchanged.
    """

    __slots__ = ("_armed_for", "_cancelling", "_deadline", "_expired", "_handle", "_loop",
                 "_task", "_timeout")

    def __init__(self, timeout: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "an attempt clock belongs to a task"
        self._task = task
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._deadline: float | None = None  # of the attempt in flight, if any
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = 0.0
        self._expired = False
        self._cancelling = 0

    def start(self) -> None:
        loop = self._loop
        self._deadline = deadline = loop.time() + self._timeout
        self._cancelling = self._task.cancelling()
        if self._handle is None:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        self._armed_for = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return  # between attempts: the next one arms the timer again
        if deadline <= self._armed_for:
            self._expired = True
            self._task.cancel()
        else:
            self._arm(deadline)  # an earlier attempt finished in time; follow the current one

    def expired(self) -> bool:
        """On CancelledError: whether it was this clock's doing (and no one else's)."""
        if not self._expired:
            return False
        self._expired = False
        return self._task.uncancel() <= self._cancelling

    def stop(self) -> None:
        self._deadline = None
        if self._expired:  # expired, but the attempt ended some other way: undo our cancel
            self._expired = False
            self._task.uncancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _plain_reply(reply: Reply) -> bool:
    """Whether a reply's fields have exactly the types GenResponse declares for them."""
    fr, model = reply.finish_reason, reply.model
    return (type(reply.text) is str and (fr is None or type(fr) is str)
            and (model is None or type(model) is str) and type(reply.prompt_tokens) is int
            and type(reply.completion_tokens) is int)


def _estimate_tokens(request: GenRequest, sampling: SamplingParams) -> int:
    return sum(len(m.content) for m in request.messages) // 4 + sampling.max_tokens


async def generate(
    spec: GeneratorSpec | str, requests: Sequence[GenRequest], **engine_kwargs: Any
) -> list[GenResponse]:
    """One-shot helper: build an engine, generate, close the backend."""
    if isinstance(spec, str):
        spec = GeneratorSpec.parse(spec)
    async with Engine(spec, **engine_kwargs) as engine:
        return await engine.generate(requests)

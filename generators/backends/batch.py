"""What the batch APIs (OpenAI Batch, Anthropic Message Batches) share: split, submit, remember,
poll, collect.

Batch APIs answer within 24 hours at half the list price, so a run is submitted whole: the engine
hands a batch backend every missing request in one call (``default_batch_size`` is unbounded) and
the backend splits it into provider batches within the provider's limits (requests and bytes per
batch), submits them all, polls them together every ``poll_s`` seconds and returns each request's
answer, or an exception that fails that request alone.

Price: half the list price (:data:`generators.pricing.BATCH_DISCOUNT`), or the spec's ``price``.

Resume without paying twice: every submitted batch is appended (id and request keys, nothing
secret) to ``batches.jsonl`` in the run folder, beside ``responses.jsonl``, right after the
provider accepts it. A killed or re-run command reads that file first: a request already in a
batch is not submitted again; that batch is polled (or, when it has ended, its results are read
again) instead. Only requests that no recorded batch answered (expired, errored, never submitted)
go out in a new batch. Provider output lands in the engine's response log and cache like any
synchronous answer, so a re-run after the log has them sends nothing at all.

The window a resume cannot close: a process killed after the provider accepted a batch and
before its id reached the file (one HTTP round trip) submits those requests again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import orjson

from datagen_core.errors import ConfigError
from datagen_core.records import GeneratorSpec, GenRequest, SamplingParams
from generators.backends.base import Backend, ProviderError, Reply
from generators.keys import RequestKeys

log = logging.getLogger("datagen.batch")

STATE_FILE = "batches.jsonl"
POLL_FAILURES = 10  # failed polls in a row before the call fails (and the engine retries it)


class BatchBackend(Backend):
    """Base of the batch-API backends; subclasses implement the four provider hooks below."""

    batched = True
    default_batch_size = 1 << 62  # the whole run in one call: the backend splits it itself
    known_options: ClassVar[frozenset[str] | None] = frozenset({"poll_s", "max_requests"})
    max_requests: ClassVar[int] = 0  # per provider batch, from the provider's docs
    max_bytes: ClassVar[int] = 0  # per provider batch (file or request body)
    terminal: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__(spec)
        opts = spec.options
        try:
            self.poll_s = float(opts.get("poll_s", 30.0))
            self.batch_requests = int(opts.get("max_requests", self.max_requests))
        except (TypeError, ValueError):
            raise ConfigError(f"{spec.label}: poll_s and max_requests must be numbers") from None
        if self.poll_s <= 0 or not 1 <= self.batch_requests <= self.max_requests:
            raise ConfigError(
                f"{spec.label}: need poll_s > 0 and 1 <= max_requests <= {self.max_requests} "
                f"(got poll_s={self.poll_s}, max_requests={self.batch_requests})"
            )
        self._keys = RequestKeys(spec)
        self._batches: list[dict[str, Any]] | None = None  # submitted: {"batch_id", "keys"}
        self.polls = 0

    # -- provider hooks ---------------------------------------------------------------------
    def entry(self, custom_id: str, request: GenRequest, sampling: SamplingParams) -> dict:
        """One request as the provider's batch format wants it (a JSONL line / list item)."""
        raise NotImplementedError

    async def submit(self, entries: list[dict], size: int) -> str:
        """Create one provider batch from ``entries`` (``size`` bytes encoded); its id."""
        raise NotImplementedError

    async def status(self, batch_id: str) -> str:
        """The batch's processing status; one of ``terminal`` once it has ended."""
        raise NotImplementedError

    async def results(self, batch_id: str) -> dict[str, Reply | BaseException]:
        """An ended batch's outcome per custom id (requests it never reached are absent)."""
        raise NotImplementedError

    # -- the run --------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path | None:
        return self.run_dir / STATE_FILE if self.run_dir is not None else None

    def _load_state(self) -> list[dict[str, Any]]:
        if self._batches is None:
            self._batches = []
            path = self.state_path
            if path is not None and path.exists():
                for line in path.read_bytes().splitlines():
                    try:
                        rec = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue  # a torn last line: that batch was not recorded
                    if isinstance(rec, dict) and rec.get("provider") == self.spec.provider:
                        self._batches.append(rec)
        return self._batches

    def _remember(self, batch_id: str, keys: list[str]) -> None:
        rec = {"provider": self.spec.provider, "batch_id": batch_id, "keys": keys,
               "submitted_at": time.time()}
        self._load_state().append(rec)
        path = self.state_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:
                f.write(orjson.dumps(rec) + b"\n")
                f.flush()

    async def complete_batch(
        self, requests: list[GenRequest], sampling: list[SamplingParams]
    ) -> Sequence[Reply | BaseException]:
        keys = [self._keys(r) for r in requests]
        wanted = set(keys)
        known = [b for b in self._load_state() if wanted.intersection(b["keys"])]
        # Ended batches are read again: what they answered is reused, what they did not
        # (expired, errored) is submitted anew.
        got: dict[str, Reply | BaseException] = {}
        ids = [b["batch_id"] for b in known]
        for outcome in await asyncio.gather(*(self._recollect(i) for i in ids)):
            for k, v in outcome.items():
                if k in wanted and not isinstance(got.get(k), Reply):
                    got[k] = v
        in_flight_answered = {k for k, v in got.items() if isinstance(v, Reply)}
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in in_flight_answered and k not in todo:
                todo[k] = i
        if todo:
            new_ids = await self._submit_all(todo, requests, sampling)
            for outcome in await asyncio.gather(*(self._wait_and_collect(i) for i in new_ids)):
                for k, v in outcome.items():
                    if k in todo:
                        got[k] = v
        out: list[Reply | BaseException] = []
        for k in keys:
            answer = got.get(k)
            out.append(answer if answer is not None else ProviderError(
                None, "the batch ended without an answer for this request (expired or "
                "cancelled); a re-run submits it again", kind="transient"))
        return out

    async def _submit_all(self, todo: dict[str, int], requests: list[GenRequest],
                          sampling: list[SamplingParams]) -> list[str]:
        """Split into provider batches within the request and byte limits; submit each and
        record its id at once."""
        ids: list[str] = []
        chunk: list[dict] = []
        chunk_keys: list[str] = []
        size = 0
        for k, i in todo.items():
            e = self.entry(k, requests[i], sampling[i])
            n = len(orjson.dumps(e)) + 1
            if n > self.max_bytes:
                raise ProviderError(413, f"one request is {n} bytes, over the provider's batch "
                                    f"limit of {self.max_bytes}")
            if chunk and (len(chunk) >= self.batch_requests or size + n > self.max_bytes):
                ids.append(await self._submit_one(chunk, chunk_keys, size))
                chunk, chunk_keys, size = [], [], 0
            chunk.append(e)
            chunk_keys.append(k)
            size += n
        if chunk:
            ids.append(await self._submit_one(chunk, chunk_keys, size))
        return ids

    async def _submit_one(self, entries: list[dict], keys: list[str], size: int) -> str:
        batch_id = await self.submit(entries, size)
        self._remember(batch_id, keys)
        log.info("%s: submitted batch %s (%d requests)", self.spec.label, batch_id, len(keys))
        return batch_id

    async def _recollect(self, batch_id: str) -> dict[str, Reply | BaseException]:
        """A recorded batch's outcome; one the provider no longer knows (deleted, another
        account) answers nothing, so its requests are submitted again."""
        try:
            return await self._wait_and_collect(batch_id)
        except ProviderError as exc:
            if exc.status != 404:
                raise
            log.warning("%s: recorded batch %s is gone (%s); its requests go out again",
                        self.spec.label, batch_id, exc)
            return {}

    async def _wait_and_collect(self, batch_id: str) -> dict[str, Reply | BaseException]:
        """Poll until the batch ends, then read its results. A batch runs for up to a day, so a
        passing network or 5xx failure of one poll is waited out here (up to
        ``POLL_FAILURES`` in a row) rather than failing every request of the batch."""
        failures = 0
        while True:
            self.polls += 1
            try:
                state = await self.status(batch_id)
                failures = 0
            except Exception as exc:
                failures += 1
                if self.classify(exc).kind not in ("rate_limit", "transient") \
                        or failures >= POLL_FAILURES:
                    raise
                log.warning("%s: polling batch %s failed (%s); trying again",
                            self.spec.label, batch_id, self.classify(exc).message)
                state = ""
            if state in self.terminal:
                break
            await asyncio.sleep(self.poll_s)
        log.info("%s: batch %s %s", self.spec.label, batch_id, state)
        return await self.results(batch_id)

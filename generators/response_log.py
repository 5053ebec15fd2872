"""The per-run response log: every raw response appended and flushed as it arrives.

The log is the truth for resume: a killed run loses only the requests in flight, and a re-run
reads the log and sends only what is missing. A partial last line (the process died mid-write)
is skipped. A lock file keeps two processes from writing one run at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from datagen_core.errors import RunLockedError
from datagen_core.records import ErrorInfo, GenResponse, Usage
from datagen_core.secrets import redact_bytes
from generators.compact import U64Map, key64


def iter_log(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a response log, skipping a torn or garbled line."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn final write from a killed process
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "key" in rec:
                yield rec


class LogIndex:
    """Where each answered key's last successful record sits in a log (byte offset), for runs
    that stream: the log is never loaded whole, a record is read back when its key comes up.

    Keys are held as uint64 (:func:`~generators.compact.key64`); a record read back is checked
    against the full key, so a collision is a miss (the request is sent), never a wrong answer.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._at = U64Map()
        self._f: IO[bytes] | None = None
        #: the log being written, if any: flushed before a record is read back
        self.writer: ResponseLog | None = None

    @classmethod
    def build(cls, path: Path) -> LogIndex:
        index = cls(path)
        if not path.exists():
            return index
        at = index._at
        offset = 0
        with open(path, "rb") as f:
            for line in f:
                start, offset = offset, offset + len(line)
                if not line.endswith(b"\n"):
                    break
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if (isinstance(rec, dict) and isinstance(rec.get("key"), str)
                        and rec.get("error") is None and rec.get("text") is not None):
                    at.set(key64(rec["key"]), start)
        return index

    def add(self, key: str, offset: int) -> None:
        self._at.set(key64(key), offset)

    def get(self, key: str) -> GenResponse | None:
        """The stored answer for ``key``, or None."""
        offset = self._at.get(key64(key))
        if offset is None:
            return None
        if self.writer is not None:
            self.writer.flush()
        if self._f is None:
            self._f = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._f.seek(offset)
        try:
            rec = orjson.loads(self._f.readline())
        except orjson.JSONDecodeError:
            return None
        if not isinstance(rec, dict) or rec.get("key") != key:
            return None
        return GenResponse.model_validate(rec)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def load_answers(path: Path) -> dict[str, GenResponse]:
    """The last successful response per key in a log."""
    out: dict[str, GenResponse] = {}
    for rec in iter_log(path):
        if rec.get("error") is None and rec.get("text") is not None:
            out[rec["key"]] = GenResponse.model_validate(rec)
    return out


_FIELDS = tuple(GenResponse.model_fields)
_USAGE_FIELDS = tuple(Usage.model_fields)
_ERROR_FIELDS = tuple(ErrorInfo.model_fields)
# Types orjson would serialise differently from pydantic's JSON mode go to ``default``, which
# is absent, so they raise and take the pydantic path.
_STRICT = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


# The fast path copies field values as they are, so it is only right while no field of these
# models has a custom serializer; if one is ever added, every line takes the model_dump path.
_PLAIN_FIELDS_OK = not any(
    m.__pydantic_decorators__.field_serializers or m.__pydantic_decorators__.model_serializers
    for m in (GenResponse, Usage, ErrorInfo)
)


def dump_line(response: GenResponse) -> bytes:
    """One log line: the bytes of ``orjson.dumps(response.model_dump(mode="json"))``.

    Built straight from the field values when they are plain JSON types (always so for the
    HTTP backends, whose ``raw`` is parsed JSON), which is several times cheaper than
    ``model_dump``; anything else (bytes, sets, models, dates in ``raw``...) goes through
    ``model_dump``, so the persisted bytes never depend on the path.
    """
    if _PLAIN_FIELDS_OK and type(response) is GenResponse:
        plain = _plain(response.__dict__)
        if plain is not None:
            try:
                return orjson.dumps(plain, option=_STRICT)
            except TypeError:
                pass
    return orjson.dumps(response.model_dump(mode="json"))


def _plain(d: dict[str, Any]) -> dict[str, Any] | None:
    """model_dump(mode="python") of a GenResponse from its __dict__, or None if unsure.

    Validated, copied and constructed models keep their __dict__ in field order, the order
    model_dump writes; anything else (a field missing, moved, or an extra entry) says None.
    """
    usage, error = d.get("usage"), d.get("error")
    if type(usage) is not Usage or tuple(d) != _FIELDS:
        return None
    u = usage.__dict__
    if tuple(u) != _USAGE_FIELDS:
        return None
    plain = d.copy()
    plain["usage"] = u
    if error is not None:
        if type(error) is not ErrorInfo:
            return None
        e = error.__dict__
        if tuple(e) != _ERROR_FIELDS:
            return None
        plain["error"] = e
    return plain


class ResponseLog:
    """The append-only log of one run (see the module docstring).

    ``flush_after`` (seconds): records are gathered and written together at most that long
    after the first of them (or at 512 records), instead of one ``write()`` per record: on a
    busy disk a write per answer cost as much as the HTTP request at thousands per second.
    A killed run then loses at most the answers of that last moment besides the requests in
    flight. Without it (or outside an event loop) every record is written as it comes.
    """

    _MAX_RECORDS = 512

    def __init__(self, path: Path, *, flush_after: float | None = None) -> None:
        self.path = path
        self._f: IO[bytes] | None = None
        self._lock_f: IO[str] | None = None
        #: bytes in the file, written or gathered: where the next record starts (a streaming
        #: run indexes by it)
        self.offset = 0
        self._flush_after = flush_after
        self._buf: list[bytes] = []
        self._timer: Any = None

    def open(self) -> ResponseLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(".lock")
        self._lock_f = open(lock_path, "a+")  # noqa: SIM115 - held for the log's lifetime
        try:
            fcntl.flock(self._lock_f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_f.close()
            self._lock_f = None
            raise RunLockedError(
                f"run {self.path.parent.name} is being written by another process; "
                "wait for it to finish or stop it"
            ) from None
        self._repair_tail()
        # Unbuffered: each record (or gathered batch) goes to the file in one write() call.
        self._f = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self.offset = self._f.seek(0, os.SEEK_END)
        return self

    def _repair_tail(self) -> None:
        """Cut a torn last line so new records start on a line of their own."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)

    def write(self, response: GenResponse) -> int:
        """Append one record; returns the offset it starts at."""
        assert self._f is not None, "log not open"
        data = dump_line(response) + b"\n"
        start = self.offset
        self.offset += len(data)
        if self._flush_after is None:
            self._write(redact_bytes(data))
            return start
        self._buf.append(data)
        if len(self._buf) >= self._MAX_RECORDS:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
            else:
                self._timer = loop.call_later(self._flush_after, self.flush)
        return start

    def flush(self) -> None:
        """Write the gathered records now (one redaction pass and one write for all)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._buf and self._f is not None:
            data = b"".join(self._buf)
            self._buf.clear()
            self._write(redact_bytes(data))

    def _write(self, data: bytes) -> None:
        f = self._f
        assert f is not None
        n = f.write(data)
        while n is not None and n < len(data):  # a short write (rare): write the rest
            data = data[n:]
            n = f.write(data)

    def close(self) -> None:
        self.flush()
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._lock_f is not None:
            fcntl.flock(self._lock_f, fcntl.LOCK_UN)
            self._lock_f.close()
            self._lock_f = None

    def __enter__(self) -> ResponseLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

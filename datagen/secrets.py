"""Keep API keys out of everything we write.

Backends register each secret they read; :func:`redact` replaces them in any text that leaves the
process (error messages, log lines, persisted responses). A logging filter applies it to every
record, so a library that logs a header cannot leak a key either.
"""

from __future__ import annotations

import logging
import os
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
_MASK = "[REDACTED]"


def register_secret(value: str | None) -> None:
    """Remember a secret value so :func:`redact` masks it. Short values are ignored: masking
    every 'a' in a log because someone's key is 'a' helps nobody."""
    if value and len(value) >= 8:
        with _lock:
            _secrets.add(value)


def secret_from_env(var: str) -> str | None:
    value = os.environ.get(var)
    register_secret(value)
    return value


def redact(text: str) -> str:
    if not _secrets or not text:
        return text
    for s in _secrets:
        if s in text:
            text = text.replace(s, _MASK)
    return text


def redact_bytes(data: bytes) -> bytes:
    if not _secrets:
        return data
    for s in _secrets:
        b = s.encode()
        if b in data:
            data = data.replace(b, _MASK.encode())
    return data


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = redact(record.getMessage())
            record.args = None
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Attach the redacting filter to the root logger's handlers and the given logger."""
    target = logger or logging.getLogger()
    flt = RedactingFilter()
    target.addFilter(flt)
    for h in target.handlers:
        h.addFilter(flt)

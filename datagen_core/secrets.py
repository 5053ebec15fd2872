"""Keep API keys out of everything we write.

Backends register each secret they read; :func:`redact` replaces them in any text that leaves the
process (error messages, log lines, persisted responses, database rows). Registered values are not
enough on their own: a gateway that echoes request headers can put a key datagen never read into
a stored answer (a colleague's key, or one from an earlier run reused from the database), so
credential *shapes* are masked too: ``Bearer ...`` tokens, ``sk-...`` keys, ``x-api-key``/
``api_key`` values and URL user-info. A logging filter applies the same redactor to every record,
so a library that logs a header cannot leak a key either.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_lock = threading.Lock()
_secrets: set[str] = set()
_MASK = "[REDACTED]"

# Credential shapes, masked wherever they appear, case-insensitively (a prefix group is kept).
_SHAPES = [
    r"(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}",
    r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}",
    r"((?:x-api-key|x-goog-api-key|api[_-]?key|access[_-]?token|secret[_-]?key)"
    r"(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?)[^\"'\\\s,&;}]{8,}",
    r"(\bhttps?://)[^/@\s\"']+(?=@)",
]
_SHAPE_RE = re.compile("|".join(f"(?:{p})" for p in _SHAPES), re.IGNORECASE)
_SHAPE_RE_B = re.compile("|".join(f"(?:{p})" for p in _SHAPES).encode(), re.IGNORECASE)
# Cheap substring tests first: the full pattern costs ~100 us on a typical response line, and
# almost no line holds any of these.
_TRIGGERS = ("bearer", "sk-", "rk-", "pk-", "apikey", "api_key", "api-key", "accesstoken",
             "access_token", "access-token", "secretkey", "secret_key", "secret-key", "://")
_TRIGGERS_B = tuple(t.encode() for t in _TRIGGERS)
_SECRET_QUERY = {"api_key", "apikey", "api-key", "key", "token", "access_token", "secret",
                 "password", "sig", "signature"}


def _keep_prefix(m: re.Match[str]) -> str:
    return next((g for g in m.groups() if g), "") + _MASK


def _keep_prefix_b(m: re.Match[bytes]) -> bytes:
    return next((g for g in m.groups() if g), b"") + _MASK.encode()


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
    """Mask registered secrets and credential shapes. The one redactor for logs, files, the
    database and error messages."""
    if not text:
        return text
    for s in _secrets:
        if s in text:
            text = text.replace(s, _MASK)
    low = text.lower()
    if not any(t in low for t in _TRIGGERS):
        return text
    return _SHAPE_RE.sub(_keep_prefix, text)


_SEP = "\x1e"  # whitespace to every credential pattern, so no match runs across it


def redact_many(texts: list[str | None]) -> list[str | None]:
    """:func:`redact` of each text (None stays None), in one pass over them all: a run writes
    thousands of rows at once, and the per-call checks cost more than the scan."""
    present = [t for t in texts if t]
    joined = _SEP.join(present)
    if joined.count(_SEP) != max(0, len(present) - 1):  # a text holds the separator itself
        return [redact(t) if t else t for t in texts]
    parts = iter(redact(joined).split(_SEP))
    return [next(parts) if t else t for t in texts]


def redact_bytes(data: bytes) -> bytes:
    """:func:`redact` for UTF-8 bytes (the response log's lines), without decoding them."""
    for s in _secrets:
        b = s.encode()
        if b in data:
            data = data.replace(b, _MASK.encode())
    low = data.lower()
    if not any(t in low for t in _TRIGGERS_B):
        return data
    return _SHAPE_RE_B.sub(_keep_prefix_b, data)


def redact_url(url: str | None) -> str | None:
    """The URL without user-info and without credential query parameters (``api_key=``,
    ``key=``, ``token=``...): safe to print, store and hash. The real URL stays in memory."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if "@" not in parts.netloc and not any(
            k.lower() in _SECRET_QUERY for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return url  # nothing to strip: the URL as given (run ids hash it)
    netloc = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if k.lower() not in _SECRET_QUERY], safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def register_url_secrets(url: str | None) -> None:
    """Register the password and credential query values of a URL, so a server or library
    that echoes the URL cannot leak them."""
    if not url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    register_secret(parts.password)
    if parts.username and parts.password is None:
        register_secret(parts.username)  # a token given as http://TOKEN@host
    for k, v in parse_qsl(parts.query):
        if k.lower() in _SECRET_QUERY:
            register_secret(v)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
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

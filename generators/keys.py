"""Request keys: what identifies an answer, so a stored one is never paid for twice.

A key hashes (provider, model, server, semantic sampling, messages, response schema, sample #).
Operational settings (concurrency, rate limits, timeouts, retries) and ``meta`` are not in it:
changing them never re-pays for an answer. Tests pin known keys; a change here is a new key for
every stored answer.
"""

from __future__ import annotations

from typing import Any

from datagen_core.fingerprint import canonical, hash_canonical
from datagen_core.records import GeneratorSpec, GenRequest, SamplingParams

KEY_LENGTH = 32


def effective_sampling(spec: GeneratorSpec, request: GenRequest) -> SamplingParams:
    return request.sampling or spec.sampling


def request_key(spec: GeneratorSpec, request: GenRequest) -> str:
    """hash(provider, model, server, semantic sampling, messages, response schema, sample #).

    Operational settings (concurrency, rate limits, timeouts, retries) and ``meta`` are not in
    the key: changing them never re-pays for an answer.
    """
    return RequestKeys(spec)(request)


class RequestKeys:
    """:func:`request_key` for many requests of one spec: the spec's part is canonicalised once.

    Gives exactly the bytes (and so the keys) of hashing, per request, the payload
    ``{**spec.semantic(), "sampling": effective sampling, "messages": [(role, content), ...],
    "schema": ..., "sample": ...}`` with :func:`datagen_core.fingerprint.stable_hash`
    (the original definition, kept byte-identical: tests pin known keys).
    """

    def __init__(self, spec: GeneratorSpec) -> None:
        self._base: dict[str, Any] = canonical(spec.semantic())
        self._spec_sampling = spec.sampling
        self._default_sampling = canonical(spec.sampling.model_dump(exclude_none=True))

    def __call__(self, request: GenRequest) -> str:
        payload = self._base.copy()
        sampling = request.sampling
        if sampling is None or sampling is self._spec_sampling:
            payload["sampling"] = self._default_sampling
        else:
            payload["sampling"] = canonical(sampling.model_dump(exclude_none=True))
        messages = []
        for m in request.messages:
            role, content = m.role, m.content
            if type(role) is str and type(content) is str:
                messages.append([role, content])
            else:
                messages.append(canonical((role, content)))
        payload["messages"] = messages
        if request.response_schema is not None:
            payload["schema"] = canonical(request.response_schema)
        if request.sample:
            payload["sample"] = canonical(request.sample)
        return hash_canonical(payload, KEY_LENGTH)

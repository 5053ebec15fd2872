"""A scripted backend for tests and dry runs, registered like any real one (``fake``).

With no script it echoes the last user message (deterministic, free, offline). A script is a list
of replies consumed in call order; each is a string, or a dict with ``text``/``finish_reason``, or
``{"error": STATUS, "retry_after": S}`` to raise a provider error. A ``responder`` callable
(request -> str | dict) gives content-dependent scripts. Every call is kept in ``history``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from datagen_core.records import GeneratorSpec, GenRequest, SamplingParams
from generators.backends.base import Backend, ProviderError, Reply

Responder = Callable[[GenRequest], "str | dict[str, Any]"]


class FakeBackend(Backend):
    name = "fake"
    known_options = frozenset({"replies", "cycle", "delay_s"})

    def __init__(
        self,
        spec: GeneratorSpec,
        replies: list[str | dict[str, Any]] | None = None,
        responder: Responder | None = None,
    ) -> None:
        super().__init__(spec)
        opts = spec.options
        self.replies: list[str | dict[str, Any]] = list(
            replies if replies is not None else opts.get("replies", [])
        )
        self.responder = responder
        self.cycle = bool(opts.get("cycle", False))
        self.delay = float(opts.get("delay_s", 0.0))
        self.history: list[GenRequest] = []
        self._i = 0

    def _next(self, request: GenRequest) -> str | dict[str, Any]:
        if self.responder is not None:
            return self.responder(request)
        if self.replies:
            if self._i >= len(self.replies):
                if not self.cycle:
                    raise ProviderError(None, "fake backend: script exhausted", kind="fatal")
                self._i = 0
            item = self.replies[self._i]
            self._i += 1
            return item
        user = [m.content for m in request.messages if m.role == "user"]
        return f"fake reply to: {user[-1] if user else ''}"

    async def complete(self, request: GenRequest, sampling: SamplingParams) -> Reply:
        self.history.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        item = self._next(request)
        if isinstance(item, str):
            item = {"text": item}
        if "error" in item:
            raise ProviderError(
                item["error"], item.get("message", f"scripted error {item['error']}"),
                retry_after=item.get("retry_after"),
            )
        text = str(item["text"])
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        completion_tokens = len(text.split())
        if completion_tokens > sampling.max_tokens:
            text = " ".join(text.split()[: sampling.max_tokens])
            completion_tokens = sampling.max_tokens
            item = {**item, "finish_reason": "length"}
        return Reply(
            text=text,
            finish_reason=item.get("finish_reason", "stop"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            raw={"text": text, "finish_reason": item.get("finish_reason", "stop")},
            model=self.spec.model or "fake",
        )

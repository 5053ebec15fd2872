"""``prompt``: send each row's prompt as is and keep the answer as an SFT row.

The simplest method, and what ``datagen generate --input FILE`` does: a prompt column (or a chat
``messages`` column), an optional system prompt, one response per row (or ``samples`` per row).
Failed requests and truncated answers are kept as rejected rows with their reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import Field

from datagen_core.errors import InputError
from datagen_core.fingerprint import hash_canonical
from datagen_core.records import GenRequest, GenResponse, Instance, Message
from datagen_core.sources import pick_column
from generators.methods.base import Method, MethodArgs, MethodContext


class PromptArgs(MethodArgs):
    column: str | None = None
    system: str | None = None
    samples: int = Field(1, ge=1, description="responses per prompt")
    keep_truncated: bool = False


class PromptMethod(Method):
    name = "prompt"
    version = "1"
    Args = PromptArgs
    args: PromptArgs

    streams = True

    def requests(self, ctx: MethodContext) -> list[GenRequest]:
        return list(self.iter_requests(ctx.rows, ctx))

    def iter_requests(self, rows: Iterable[dict[str, Any]], ctx: MethodContext
                      ) -> Iterator[GenRequest]:
        source = ctx.source
        it = iter(rows)
        first = next(it, None)
        if first is not None and self.args.column is None and "messages" in first:
            column = "messages"
        else:  # the first row names the columns (no rows: one clear error)
            column = pick_column([first] if first is not None else [], self.args.column, source)
        if first is None:
            return
        for i, row in enumerate(itertools.chain([first], it)):
            value = row.get(column)
            messages = self._messages(value, column, i, source)
            row_id = str(row.get("id", i))
            for s in range(self.args.samples):
                # built, not validated: every field is already checked, and this runs once
                # per request (18.5 -> 14.7 us each)
                yield GenRequest.model_construct(messages=messages, sample=s,
                                                 meta={"row": i, "row_id": row_id})

    def _messages(self, value: Any, column: str, i: int, source: str) -> list[Message]:
        msgs: list[Message] = []
        if self.args.system:
            msgs.append(Message(role="system", content=self.args.system))
        if isinstance(value, list):
            try:
                chat = [Message.model_validate(m) for m in value]
            except Exception:
                raise InputError(
                    f"{source}: row {i + 1}: column {column!r} is not a list of chat messages"
                ) from None
            if chat and chat[-1].role == "assistant":
                chat = chat[:-1]  # regenerate the final answer
            return msgs + chat
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{source}: row {i + 1}: column {column!r} is empty or not text")
        return [*msgs, Message.model_construct(role="user", content=value)]

    def parse(self, index: int, request: GenRequest, response: GenResponse,
              ctx: MethodContext) -> Instance:
        reason = None
        if response.error is not None:
            reason = f"request failed: {response.error.type}"
        elif not (response.text or "").strip():
            reason = "empty response"
        elif response.finish_reason == "length" and not self.args.keep_truncated:
            reason = "truncated (finish_reason=length)"
        messages = [m for m in request.messages if m.role != "system"]
        if response.text is not None:
            messages.append(Message(role="assistant", content=response.text))
        return Instance(
            index=index,
            # stable_hash of the messages' model_dump(), built directly: dicts of str are
            # already canonical (this runs once per answer)
            instance_id=hash_canonical([{"role": m.role, "content": m.content}
                                        for m in messages]),
            messages=messages,
            valid=reason is None,
            reject_reason=reason,
            meta={**request.meta, "key": response.key, "finish_reason": response.finish_reason},
        )

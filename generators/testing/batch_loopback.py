"""A loopback server speaking the OpenAI Batch and Anthropic Message Batches protocols.

OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``), ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``GET /v1/files/{id}/content``. Anthropic: ``POST /v1/messages/batches``,
``GET /v1/messages/batches/{id}`` and its ``results_url``. Each request is answered
``echo: <last user message>``, like :mod:`generators.testing.loopback`.

A batch ends on its ``--polls``-th retrieve, unless ``--hold`` keeps every batch in progress until
``POST /release`` (so a test can kill a client mid-poll). Markers in a prompt inject faults:
``[flaky]`` fails with a 500 the first time it is seen and succeeds later; ``[invalid]`` always
fails with a 400; ``[expire]``, the first time it is seen, makes its batch expire before reaching
it (absent from the OpenAI output file, ``expired`` in Anthropic results).

``--poll-errors N`` answers the first N retrieves with a 500.

``GET /stats`` returns batches created, requests submitted per prompt and polls; ``POST /reset``
clears them. Run it as ``python -m generators.testing.batch_loopback --port 0``; it prints
``READY <port>``. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from generators.testing.loopback import LoopbackServer, serve


class BatchServer:
    def __init__(self, polls: int = 1, hold: bool = False, api_key: str | None = None,
                 poll_errors: int = 0) -> None:
        self.polls_to_end, self.hold, self.api_key = polls, hold, api_key
        self.poll_errors = poll_errors  # retrieves still to fail with a 500
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.seen: set[str] = set()
        self.submitted: Counter[str] = Counter()
        self.created = self.polls = 0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=1 << 30)
        r = app.router
        r.add_post("/v1/files", self.upload)
        r.add_get("/v1/files/{id}/content", self.content)
        r.add_post("/v1/batches", self.create_openai)
        r.add_get("/v1/batches/{id}", self.retrieve_openai)
        r.add_post("/v1/messages/batches", self.create_anthropic)
        r.add_get("/v1/messages/batches/{id}", self.retrieve_anthropic)
        r.add_get("/v1/messages/batches/{id}/results", self.results_anthropic)
        r.add_get("/stats", self.stats)
        r.add_post("/reset", self.reset)
        r.add_post("/release", self.release)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.api_key is not None and request.path.startswith("/v1/"):
            got = request.headers.get("x-api-key", "") or request.headers.get("Authorization", "")
            if self.api_key not in got:
                return web.json_response({"error": {"message": "bad key"}}, status=401)
        return await handler(request)

    # -- answering one request ------------------------------------------------------------------
    def _answer(self, body: dict[str, Any]) -> tuple[str, str, int | None]:
        """(prompt, answer text, failing status or None) for one request, faults included."""
        prompt = LoopbackServer._last_user(body.get("messages", []))
        self.submitted[prompt] += 1
        first = prompt not in self.seen
        self.seen.add(prompt)
        if "[invalid]" in prompt:
            return prompt, "", 400
        if "[flaky]" in prompt and first:
            return prompt, "", 500
        return prompt, f"echo: {prompt}", None

    def _new_batch(self, kind: str, items: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        self.created += 1
        bid = f"batch_{self.created}" if kind == "openai" else f"msgbatch_{self.created}"
        batch: dict[str, Any] = {"id": bid, "kind": kind, "polls": 0, "ended": False,
                                 "outcomes": [], "expired": False,
                                 "created_at": int(time.time())}
        for custom_id, body in items:
            prompt = LoopbackServer._last_user(body.get("messages", []))
            if "[expire]" in prompt and prompt not in self.seen:
                self.seen.add(prompt)  # the batch expires before reaching it, this once
                self.submitted[prompt] += 1
                batch["expired"] = True
                batch["outcomes"].append((custom_id, body, None, None, "expired"))
                continue
            prompt, text, status = self._answer(body)
            batch["outcomes"].append((custom_id, body, prompt, text, status))
        self.batches[bid] = batch
        return batch

    def _advance(self, batch: dict[str, Any]) -> None:
        self.polls += 1
        batch["polls"] += 1
        if not self.hold and batch["polls"] >= self.polls_to_end:
            batch["ended"] = True

    # -- OpenAI -----------------------------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        field: Any = form["file"]
        data = field.file.read()
        fid = f"file-{len(self.files) + 1}"
        self.files[fid] = data
        return web.json_response({"id": fid, "object": "file", "bytes": len(data),
                                  "created_at": int(time.time()), "filename": field.filename,
                                  "purpose": str(form.get("purpose")), "status": "processed"})

    async def content(self, request: web.Request) -> web.Response:
        fid = request.match_info["id"]
        if fid not in self.files:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=self.files[fid], content_type="application/octet-stream")

    async def create_openai(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = self.files[body["input_file_id"]]
        items = [(rec["custom_id"], rec["body"]) for rec in map(orjson.loads, data.splitlines())]
        batch = self._new_batch("openai", items)
        batch["input_file_id"] = body["input_file_id"]
        return web.json_response(self._openai_view(batch))

    def _poll_fault(self) -> web.Response | None:
        if self.poll_errors > 0:
            self.poll_errors -= 1
            return web.json_response({"error": {"type": "api_error", "message": "poll fault"}},
                                     status=500)
        return None

    async def retrieve_openai(self, request: web.Request) -> web.Response:
        if (fault := self._poll_fault()) is not None:
            return fault
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        self._advance(batch)
        return web.json_response(self._openai_view(batch))

    def _openai_view(self, batch: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": batch["id"], "object": "batch", "endpoint": "/v1/chat/completions",
            "input_file_id": batch["input_file_id"], "completion_window": "24h",
            "created_at": batch["created_at"], "status": "in_progress",
            "output_file_id": None, "error_file_id": None,
        }
        if batch["ended"]:
            if "output_file_id" not in batch:
                out, err = [], []
                for custom_id, body, prompt, text, status in batch["outcomes"]:
                    if status == "expired":
                        continue
                    line = {"id": f"req_{custom_id}", "custom_id": custom_id, "error": None}
                    if status is None:
                        line["response"] = {"status_code": 200, "body": _chat(body, prompt, text)}
                        out.append(line)
                    else:
                        line["response"] = {"status_code": status,
                                            "body": {"error": {"message": f"fault {status}"}}}
                        err.append(line)
                for name, lines in (("output_file_id", out), ("error_file_id", err)):
                    fid = None
                    if lines:
                        fid = f"file-{len(self.files) + 1}"
                        self.files[fid] = b"".join(orjson.dumps(x) + b"\n" for x in lines)
                    batch[name] = fid
            view.update(status="expired" if batch["expired"] else "completed",
                        output_file_id=batch["output_file_id"],
                        error_file_id=batch["error_file_id"])
        return view

    # -- Anthropic --------------------------------------------------------------------------------
    async def create_anthropic(self, request: web.Request) -> web.Response:
        body = await request.json()
        batch = self._new_batch("anthropic", [(r["custom_id"], r["params"])
                                              for r in body["requests"]])
        return web.json_response(self._anthropic_view(batch, request))

    async def retrieve_anthropic(self, request: web.Request) -> web.Response:
        if (fault := self._poll_fault()) is not None:
            return fault
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"type": "not_found_error",
                                                "message": "no such batch"}}, status=404)
        self._advance(batch)
        return web.json_response(self._anthropic_view(batch, request))

    def _anthropic_view(self, batch: dict[str, Any], request: web.Request) -> dict[str, Any]:
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(batch["created_at"]))
        n = len(batch["outcomes"])
        ended = batch["ended"]
        counts = Counter(_anthropic_type(o[4]) for o in batch["outcomes"])
        return {
            "id": batch["id"], "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else n,
                               "succeeded": counts["succeeded"] if ended else 0,
                               "errored": counts["errored"] if ended else 0,
                               "canceled": 0, "expired": counts["expired"] if ended else 0},
            "created_at": iso, "expires_at": iso, "ended_at": iso if ended else None,
            "archived_at": None, "cancel_initiated_at": None,
            "results_url": (f"http://{request.host}/v1/messages/batches/{batch['id']}/results"
                            if ended else None),
        }

    async def results_anthropic(self, request: web.Request) -> web.Response:
        batch = self.batches[request.match_info["id"]]
        lines = []
        for custom_id, body, prompt, text, status in batch["outcomes"]:
            kind = _anthropic_type(status)
            result: dict[str, Any] = {"type": kind}
            if kind == "succeeded":
                result["message"] = _message(body, prompt, text)
            elif kind == "errored":
                etype = "invalid_request_error" if status == 400 else "api_error"
                result["error"] = {"type": "error",
                                   "error": {"type": etype, "message": f"fault {status}"}}
            lines.append(orjson.dumps({"custom_id": custom_id, "result": result}) + b"\n")
        return web.Response(body=b"".join(lines), content_type="application/binary")

    # -- control --------------------------------------------------------------------------------
    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"batches_created": self.created, "polls": self.polls,
                                  "submitted": dict(self.submitted)})

    async def reset(self, request: web.Request) -> web.Response:
        self.submitted.clear()
        self.created = self.polls = 0
        return web.json_response({"ok": True})

    async def release(self, request: web.Request) -> web.Response:
        self.hold = False
        return web.json_response({"ok": True})


def _anthropic_type(status: int | str | None) -> str:
    if status == "expired":
        return "expired"
    return "succeeded" if status is None else "errored"


def _chat(body: dict[str, Any], prompt: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-batch", "object": "chat.completion", "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())}}


def _message(body: dict[str, Any], prompt: str, text: str) -> dict[str, Any]:
    return {"id": "msg_batch", "type": "message", "role": "assistant",
            "model": body.get("model", ""), "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": len(prompt.split()), "output_tokens": len(text.split())}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--polls", type=int, default=1, help="retrieves until a batch ends")
    ap.add_argument("--hold", action="store_true", help="keep batches running until /release")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--poll-errors", type=int, default=0, help="first N retrieves answer 500")
    a = ap.parse_args(argv)
    srv = BatchServer(a.polls, a.hold, a.api_key, a.poll_errors)

    async def run() -> None:
        _, port = await serve(srv, a.port)  # type: ignore[arg-type]
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

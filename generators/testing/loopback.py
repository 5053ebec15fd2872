"""A loopback server speaking the OpenAI Chat Completions and Anthropic Messages protocols.

Used by the tests and benchmarks (and handy for trying datagen with no model at all): it answers
``echo: <last user message>`` after a configurable latency and can inject faults: 429 with
``Retry-After``, 500, hangs past the client's timeout, malformed bodies, a required API key
(401, echoing the key it got, to prove datagen never stores it), unknown models (404). With
``--echo-headers`` it copies the request headers into every reply and error body, as some
gateways and debugging proxies do.

Run it as ``python -m generators.testing.loopback --port 0``; it prints ``READY <port>`` once
listening. ``GET /stats`` returns how many requests it received and answered, per prompt;
``POST /reset`` clears them. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections import Counter
from typing import Any

import orjson
from aiohttp import web


class Faults:
    def __init__(self, p429: float = 0.0, p500: float = 0.0, phang: float = 0.0,
                 pmalformed: float = 0.0, retry_after: float = 0.05, hang_s: float = 30.0,
                 seed: int = 0) -> None:
        self.p429, self.p500, self.phang, self.pmalformed = p429, p500, phang, pmalformed
        self.retry_after, self.hang_s = retry_after, hang_s
        self.rng = random.Random(seed)

    def draw(self) -> str | None:
        x = self.rng.random()
        for name, p in (("429", self.p429), ("500", self.p500), ("hang", self.phang),
                        ("malformed", self.pmalformed)):
            if x < p:
                return name
            x -= p
        return None


class LoopbackServer:
    def __init__(self, latency: float = 0.0, faults: Faults | None = None,
                 api_key: str | None = None, models: list[str] | None = None,
                 echo_headers: bool = False) -> None:
        self.latency = latency
        self.faults = faults or Faults()
        self.api_key = api_key
        self.models = set(models or [])
        self.echo_headers = echo_headers
        self.received: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.total = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/reset", self.reset)
        return app

    async def _gate(self, request: web.Request, body: dict[str, Any], prompt: str,
                    key_header: str) -> web.Response | None:
        self.total += 1
        self.received[prompt] += 1
        if self.api_key is not None:
            # Anthropic's SDK may send x-api-key or a Bearer token; accept either.
            got = request.headers.get(key_header, "") or request.headers.get("Authorization", "")
            if self.api_key not in got:
                msg = f"Incorrect API key provided: {got}"
                return web.json_response({"error": {"message": msg, "type": "auth"}}, status=401)
        if self.models and body.get("model") not in self.models:
            return web.json_response(
                {"error": {"message": f"The model {body.get('model')} does not exist"}},
                status=404,
            )
        fault = self.faults.draw()
        if fault == "429":
            return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                     headers={"Retry-After": str(self.faults.retry_after)})
        if fault == "500":
            msg = "internal error" + (f" (request: {dict(request.headers.items())})"
                                      if self.echo_headers else "")
            return web.json_response({"error": {"message": msg}}, status=500)
        if fault == "hang":
            await asyncio.sleep(self.faults.hang_s)
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "malformed":
            return web.Response(body=b'{"choices": [{"message": ', content_type="application/json")
        return None

    @staticmethod
    def _last_user(messages: list[dict[str, Any]]) -> str:
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        content = users[-1] if users else ""
        if isinstance(content, list):  # content blocks
            content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
        return str(content)

    async def chat(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        prompt = self._last_user(body.get("messages", []))
        early = await self._gate(request, body, prompt, "Authorization")
        if early is not None:
            return early
        self.answered[prompt] += 1
        text = f"echo: {prompt}"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 1 << 30
        words = text.split()
        finish = "length" if len(words) > max_tokens else "stop"
        text = " ".join(words[:max_tokens])
        out = {
            "id": f"chatcmpl-{self.total}", "object": "chat.completion",
            "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())},
        }
        if self.echo_headers:
            out["request_headers"] = {str(k): v for k, v in request.headers.items()}
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def messages(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        prompt = self._last_user(body.get("messages", []))
        early = await self._gate(request, body, prompt, "x-api-key")
        if early is not None:
            return early
        self.answered[prompt] += 1
        system = body.get("system") or ""
        if isinstance(system, list):
            system = "".join(b.get("text", "") for b in system)
        text = f"echo: {prompt}" + (f" [system: {system}]" if system else "")
        out = {
            "id": f"msg_{self.total}", "type": "message", "role": "assistant",
            "model": body.get("model", ""),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": len(prompt.split()), "output_tokens": len(text.split())},
        }
        if self.echo_headers:
            out["request_headers"] = {str(k): v for k, v in request.headers.items()}
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"total": self.total, "received": dict(self.received),
                                  "answered": dict(self.answered)})

    async def reset(self, request: web.Request) -> web.Response:
        self.received.clear()
        self.answered.clear()
        self.total = 0
        return web.json_response({"ok": True})


async def serve(server: LoopbackServer, port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    listener: Any = site._server
    sockets = listener.sockets if listener is not None else []
    return runner, sockets[0].getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--p429", type=float, default=0.0)
    ap.add_argument("--p500", type=float, default=0.0)
    ap.add_argument("--phang", type=float, default=0.0)
    ap.add_argument("--pmalformed", type=float, default=0.0)
    ap.add_argument("--retry-after", type=float, default=0.05)
    ap.add_argument("--hang-s", type=float, default=30.0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--models", default=None, help="comma-separated; others get 404")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--echo-headers", action="store_true",
                    help="copy the request headers into every reply and error body")
    a = ap.parse_args(argv)
    faults = Faults(a.p429, a.p500, a.phang, a.pmalformed, a.retry_after, a.hang_s, a.seed)
    srv = LoopbackServer(a.latency, faults, a.api_key, a.models.split(",") if a.models else None,
                         a.echo_headers)

    async def run() -> None:
        _, port = await serve(srv, a.port)
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

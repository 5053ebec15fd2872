"""The web app (Starlette, served by uvicorn): its settings, routes, guards and the server loop.

Guards, because a local app still faces the browser's other tabs:

- it binds to 127.0.0.1 unless told otherwise, and another address needs ``expose=True``
  (``--expose``) and logs a warning: the app has no login, so anyone who can reach the port can
  read the workspace and write labels;
- the ``Host`` header must name the bound address (no DNS-rebinding page can talk to it), a
  label is written only by a same-origin JSON ``POST``, and pages carry a content security
  policy that allows scripts from the app only;
- files are read from a run's own folder only (:meth:`ServedWorkspace.run_file`), and every
  value a page shows is escaped (:mod:`datagen.serve.render`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datagen.serve.data import ServedWorkspace
from datagen.serve.labelling import label_page, pair_runs, pairs, resume, store_label
from datagen.serve.pages import compare, leaderboard, row, run, run_file, runs
from datagen.serve.render import page
from datagen_core.errors import ConfigError, DatagenError, NotFoundError

log = logging.getLogger("datagen.serve")
STATIC = Path(__file__).parent / "static"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_HEADERS = {
    b"content-security-policy": (
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        b"form-action 'self'; frame-ancestors 'none'"),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
}


class ServeConfig(BaseModel):
    """How to serve a workspace (:func:`serve` refuses an address other than the loopback
    without ``expose``)."""

    model_config = ConfigDict(extra="forbid")

    workspace: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535, description="0: any free port")
    expose: bool = Field(False, description="allow an address other than the loopback")
    annotator: str = Field("local", min_length=1, max_length=100,
                           description="whose labels the labelling page reads and writes")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _SecurityHeaders:
    """Adds the content security policy and its companions to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS.items()]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _plotly_js(request: Request) -> Response:
    """plotly.js from the installed plotly package (the leaderboard's plots; no network)."""
    from importlib import resources

    try:
        path = resources.files("plotly").joinpath("package_data", "plotly.min.js")
    except ModuleNotFoundError:
        return Response("plotly is not installed: pip install 'datagen[metrics]'",
                        status_code=404, media_type="text/plain")
    return FileResponse(str(path), media_type="text/javascript",
                        headers={"cache-control": "max-age=86400"})


async def _not_found(request: Request, exc: Exception) -> Response:
    return page("error.html", 404, nav="", title="Not found", message=str(exc))


async def _bad_request(request: Request, exc: Exception) -> Response:
    return page("error.html", 400, nav="", title="Cannot show this", message=str(exc))


def create_app(workspace: str | Path | None = None, *, annotator: str = "local",
               allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app over one workspace (``$DATAGEN_WORKSPACE`` or ``./datagen-workspace`` when
    None). ``allowed_hosts`` are the names the ``Host`` header may carry (default: the
    loopback names); any ASGI server can run the app, :func:`serve` runs it with uvicorn."""
    data = ServedWorkspace(workspace, annotator)
    routes = [
        Route("/", leaderboard, name="leaderboard"),
        Route("/runs", runs, name="runs"),
        Route("/runs/{run_id}", run, name="run"),
        Route("/runs/{run_id}/rows/{idx:int}", row, name="row"),
        Route("/runs/{run_id}/files/{name}", run_file, name="run_file"),
        Route("/compare", compare, name="compare"),
        Route("/pairs", pair_runs, name="pair_runs"),
        Route("/pairs/{run_id}", pairs, name="pairs"),
        Route("/pairs/{run_id}/label", resume, name="label_resume"),
        Route("/pairs/{run_id}/label/{idx:int}", label_page, name="label"),
        Route("/pairs/{run_id}/label/{idx:int}", store_label, methods=["POST"],
              name="store_label"),
        Route("/assets/plotly.min.js", _plotly_js, name="plotly"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or [
                "localhost", "127.0.0.1", "[::1]"]),
            Middleware(_SecurityHeaders),
        ],
        exception_handlers={NotFoundError: _not_found, DatagenError: _bad_request},
    )
    app.state.data = data
    return app


def serve(config: ServeConfig, announce: Callable[[str], Any] | None = None) -> None:
    """Serve the workspace until interrupted (Ctrl-C returns). ``announce(url)`` is called
    once the port is open (port 0 picks a free one; the url says which)."""
    import uvicorn

    if not is_loopback(config.host) and not config.expose:
        raise ConfigError(
            f"{config.host} is not a loopback address: anyone who can reach it could read the "
            "workspace and write labels (the app has no login); pass --expose to serve there "
            "anyway")
    if not is_loopback(config.host):
        log.warning("serving on %s: anyone who can reach this address can read the workspace "
                    "and write labels (no login)", config.host)
    hosts = None if is_loopback(config.host) else ["*"]
    app = create_app(config.workspace, annotator=config.annotator, allowed_hosts=hosts)
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host.strip("[]"), config.port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}"
                          ) from None
    sock.listen(128)
    port = sock.getsockname()[1]
    shown = f"[{config.host.strip('[]')}]" if family == socket.AF_INET6 else config.host
    if announce is not None:
        announce(f"http://{shown}:{port}")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops cleanly, then re-raises the signal it caught
        pass
    finally:
        sock.close()

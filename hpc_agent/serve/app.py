"""The HTTP side of ``hpc-agent serve``: Starlette routes on uvicorn, behind a token.

Why these: Starlette and uvicorn are small, pure-Python, widely used and maintained (the
base of FastAPI), and need nothing this project does not already install but themselves
(``anyio`` and ``h11`` come with openai's HTTP client, ``click`` with the CLI). They give
the routing, the static files with ETags and 304s, a thread pool for the handlers that read
files, and a server that stops cleanly on Ctrl-C; ``http.server`` would leave all of that to
us, and its documentation warns it off anything but local testing (docs/serve.md).

Every request, the page's scripts included, must carry the token: ``?token=...`` in the URL
(then a cookie, HttpOnly and SameSite=Strict, named for the port) or the cookie itself;
anything else is refused with 403, compared in constant time (:func:`hmac.compare_digest`).
The page polls ``/api/delta`` (docs/serve.md says why polling rather than server-sent events).
"""

from __future__ import annotations

import hmac
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hpc_agent.errors import UserError
from hpc_agent.serve.feed import Feed
from hpc_agent.serve.pages import analyses_page, lineage_page, trial_page

STATIC = Path(__file__).parent / "static"
REFUSED = "403: this page needs its token: open the URL `hpc-agent serve` printed (…/?token=…)\n"


def new_token() -> str:
    """A fresh secret for the URL (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


class TokenGate(BaseHTTPMiddleware):
    """Refuses (403) every request without the token, in its query or its cookie; a request
    with it in the query sets the cookie, so that the page's own requests carry it."""

    def __init__(self, app: Any, token: str, cookie: str) -> None:
        super().__init__(app)
        self.token = token.encode()
        self.cookie = cookie

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token)

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Let the request through when it carries the token; else 403."""
        in_query = self._ok(request.query_params.get("token"))
        if not (in_query or self._ok(request.cookies.get(self.cookie))):
            return PlainTextResponse(REFUSED, status_code=403)
        response = await call_next(request)
        if in_query:
            response.set_cookie(
                self.cookie, self.token.decode(), httponly=True, samesite="strict", max_age=30 * 86400
            )
        response.headers["Cache-Control"] = response.headers.get("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def make_app(results: Path, token: str, port: int = 0) -> Starlette:
    """The page of the campaign in ``results``, behind ``token`` (its cookie named for
    ``port``)."""
    feed = Feed(results)

    def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    def delta(request: Request) -> Response:
        since = _int(request.query_params.get("since"), 0)
        q = request.query_params
        return JSONResponse(feed.delta(since, q.get("epoch", ""), q.get("flight", "")))

    def trial(request: Request) -> Response:
        holdout = request.query_params.get("holdout") == "1"
        page = trial_page(feed, str(request.path_params["trial_id"]), holdout)
        if page is None:
            return JSONResponse({"error": "no such trial"}, status_code=404)
        return JSONResponse(page)

    def lineage(request: Request) -> Response:
        return JSONResponse(lineage_page(feed))

    def analyses(request: Request) -> Response:
        return JSONResponse(analyses_page(feed, _int(request.query_params.get("after"), -1)))

    routes = [
        Route("/", index),
        Route("/api/delta", delta),
        Route("/api/trial/{trial_id}", trial),
        Route("/api/lineage", lineage),
        Route("/api/analyses", analyses),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    gate = Middleware(TokenGate, token=token, cookie=f"hpc_agent_token_{port}")
    # the gate first: a refusal is never compressed, and costs nothing
    app = Starlette(routes=routes, middleware=[gate, Middleware(GZipMiddleware, minimum_size=1024)])
    app.state.feed = feed
    return app


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one); UserError when the port
    is taken or the host is not this machine's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port} ({e.strerror or e})",
            fix="choose another port with --port N (or --port 0 for any free one)",
        ) from None
    sock.listen(64)
    return sock


def serve(results: Path, sock: socket.socket, token: str) -> None:
    """Serve the page of ``results`` on the bound socket until Ctrl-C or SIGTERM."""
    import uvicorn

    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        make_app(results, token, port), log_level="warning", access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run(sockets=[sock])

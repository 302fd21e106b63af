"""hpc_agent.serve.app on its own: the app served by uvicorn in this process, over real HTTP
on localhost, behind its token gate; the socket it binds; the token it makes."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from hpc_agent.errors import UserError
from hpc_agent.serve.app import bind, make_app, new_token

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "journal-0.1.0.jsonl"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, token) of make_app over a results folder of release 0.1.0, served by
    uvicorn on a socket from bind(); stopped (and its thread joined) after the test."""
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(FIXTURE, results / "journal.jsonl")
    token = new_token()
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(results, token, port), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _get(url: str, cookie: str = "") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_the_gate_refuses_without_the_token_and_sets_its_cookie(served: tuple[str, str]) -> None:
    base, token = served
    for path in ("/", "/api/delta", "/api/lineage", "/static/app.js", f"/api/delta?token={token}x"):
        status, _, body = _get(base + path)
        assert status == 403, path
        assert b"token" in body.lower()
    status, headers, body = _get(f"{base}/?token={token}")
    assert status == 200 and b"<html" in body.lower()
    assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
    cookie = headers["set-cookie"].split(";")[0]
    status, headers, body = _get(base + "/api/delta?since=0", cookie=cookie)  # the page's own requests
    assert status == 200 and headers["cache-control"] == "no-store"
    delta = json.loads(body)
    assert delta["offset"] > 0  # the whole journal of the fixture was read


def test_a_trial_that_does_not_exist_is_404(served: tuple[str, str]) -> None:
    base, token = served
    status, _, body = _get(f"{base}/api/trial/9999-9999?token={token}")
    assert status == 404 and json.loads(body) == {"error": "no such trial"}


def test_bind_refuses_a_taken_port_with_a_fix() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(UserError) as err:
            bind("127.0.0.1", taken.getsockname()[1])
        assert "--port" in (err.value.fix or "")
    finally:
        taken.close()
    sock = bind("127.0.0.1", 0)
    assert sock.getsockname()[1] > 0 and sock.type == socket.SOCK_STREAM
    sock.close()


def test_tokens_are_long_and_fresh() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50 and all(len(t) >= 32 for t in tokens)

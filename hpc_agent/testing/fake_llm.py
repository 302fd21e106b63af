"""A scripted OpenAI-compatible server on 127.0.0.1, for tests and offline dry runs.

It speaks the part of the protocol hpc-agent uses, over real HTTP, so the real ``openai``
client talks to it exactly as it talks to vLLM, Ollama or a university gateway:

* ``POST /v1/chat/completions`` answers each request with the next *step* of a script;
* ``GET /v1/models`` lists the models it serves (each entry with ``model_meta``, e.g. vLLM's
  ``{"max_model_len": 4096}``);
* ``GET /props`` answers ``props`` when given (llama.cpp's server describes itself there).

Other paths are 404, as on real servers (a base URL without ``/v1`` finds nothing).

A step is a reply, or a fault to inject::

    "some text"                                  the assistant's reply, verbatim
    {"json": {...}}                              the reply is this value, JSON-encoded
    {"reply": "..."}                             same as a plain string
    {"status": 429, "headers": {"Retry-After": "1"}, "body": {...}}   an HTTP error
    {"fault": "malformed"}                       HTTP 200 whose body is not JSON
    {"fault": "close"}                           the connection closes without a reply
    {"fault": "no_choices"}                      HTTP 200 with an empty ``choices`` list
    {"delay_s": 2.0, ...}                        wait first (to trigger client timeouts)
    {"repeat": 3, ...} / {"forever": true, ...}  the same step for several requests

In Python a step may also be a callable ``f(request_body) -> step``. Requests the server
refuses on its own do not consume a step: a model it does not serve (404), a missing or
wrong key when ``api_key`` is set (401), and a ``response_format`` not in ``accept`` (400,
or ``refuse_status``: llama-cpp-python answers ``json_schema`` with 500). The formats are
``json_schema``, ``json_object+schema`` (llama.cpp's json_object carrying a schema),
``json_object`` and ``text``. ``serial=True`` answers one request at a time, ``GET /models``
included, as llama.cpp-based servers do while they generate. Every request is recorded in
:attr:`FakeLLM.requests` for assertions (with how many chat requests were in the server when
it arrived: :attr:`Request.in_flight`).

Command line (prints the base URL, serves until Ctrl-C)::

    python -m hpc_agent.testing.fake_llm --script replies.json [--port 8000] [--reject json_schema]
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 hpc-agent run my-campaign --planner llm

``replies.json`` is a list of steps, or ``{"steps": [...], "models": [...], "accept": [...]}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Step = str | Mapping[str, Any] | Callable[[Mapping[str, Any]], Any]

FORMATS = ("json_schema", "json_object+schema", "json_object", "text")
_STEP_KEYS = (
    "reply", "json", "status", "headers", "body", "fault", "delay_s", "repeat", "forever",
    "usage", "finish_reason", "model", "reasoning_content",
)  # fmt: skip
_FAULTS = ("malformed", "close", "no_choices")


@dataclass
class Request:
    """One request the server received (the body parsed when it was JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    answered: str = ""  # what the server did: "step 3", "refused: ...", "models"
    t: float = 0.0  # when it arrived (time.monotonic)
    in_flight: int = 0  # chat requests in the server when it arrived, itself included

    @property
    def response_format(self) -> str:
        """``json_schema``, ``json_object+schema``, ``json_object`` or ``text``."""
        rf = self.body.get("response_format") if isinstance(self.body, dict) else None
        if not isinstance(rf, dict):
            return "text"
        kind = str(rf.get("type"))
        return "json_object+schema" if kind == "json_object" and "schema" in rf else kind

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of the request (none when it had no JSON body)."""
        msgs = self.body.get("messages") if isinstance(self.body, dict) else None
        return list(msgs) if isinstance(msgs, list) else []

    def text(self) -> str:
        """Every message's content, joined: handy for ``assert "..." in req.text()``."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


@dataclass
class _Script:
    steps: list[Step] = field(default_factory=list)
    loop: bool = False
    position: int = 0
    used_of_current: int = 0

    def next(self) -> tuple[Step | None, int]:
        """The step answering this request, and its index (None when exhausted)."""
        if self.position >= len(self.steps):
            if not self.loop or not self.steps:
                return None, self.position
            self.position, self.used_of_current = 0, 0
        index = self.position
        step = self.steps[index]
        repeat: float = 1
        if isinstance(step, Mapping):
            repeat = float("inf") if step.get("forever") else int(step.get("repeat", 1))
        self.used_of_current += 1
        if self.used_of_current >= repeat:
            self.position += 1
            self.used_of_current = 0
        return step, index


class FakeLLM:
    """A scripted OpenAI-compatible server; a context manager that starts and stops it."""

    def __init__(
        self,
        script: Sequence[Step] = (),
        *,
        models: Sequence[str] = ("fake-model",),
        unlisted: Sequence[str] = (),
        api_key: str | None = None,
        accept: Sequence[str] = FORMATS,
        host: str = "127.0.0.1",
        port: int = 0,
        loop: bool = False,
        refuse_status: int = 400,
        serial: bool = False,
        model_meta: Mapping[str, Any] | None = None,
        props: Mapping[str, Any] | None = None,
    ) -> None:
        for s in script:
            check_step(s)
        bad = [a for a in accept if a not in FORMATS]
        if bad:
            raise ValueError(f"accept={bad!r}: expected some of {list(FORMATS)}")
        self.models = list(models)
        self.unlisted = list(unlisted)  # served, but not in GET /models (as some gateways do)
        self.api_key = api_key
        self.accept = tuple(accept)
        self.refuse_status = refuse_status
        self.serial = serial
        self.model_meta = dict(model_meta or {})
        self.props = dict(props) if props is not None else None
        self.requests: list[Request] = []
        self._in_flight = 0
        self._serial_lock = threading.Lock()
        self._script = _Script(list(script), loop)
        self._lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to point a client at (with ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLLM:
        """Serve in a background thread (idempotent); returns itself."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-llm",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ script
    def add(self, *steps: Step) -> None:
        """Append steps to the script (a test may script as it goes)."""
        for s in steps:
            check_step(s)
        with self._lock:
            self._script.steps.extend(steps)

    @property
    def chat_requests(self) -> list[Request]:
        """The chat completion requests that consumed a step or were refused."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def remaining(self) -> int:
        """Script steps not used yet."""
        return max(0, len(self._script.steps) - self._script.position)

    def _next_step(self) -> tuple[Step | None, int]:
        with self._lock:
            return self._script.next()


def check_step(step: Any) -> None:
    """Refuse a malformed step when the script is loaded, not in the middle of a test."""
    if isinstance(step, str) or callable(step):
        return
    if not isinstance(step, Mapping):
        raise ValueError(f"script step {step!r}: expected a string, an object or a callable")
    unknown = [k for k in step if k not in _STEP_KEYS]
    if unknown:
        raise ValueError(f"script step {step!r}: unknown key(s) {unknown}; valid keys are {list(_STEP_KEYS)}")
    if "fault" in step and step["fault"] not in _FAULTS:
        raise ValueError(f"script step fault={step['fault']!r}: expected one of {list(_FAULTS)}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeLLM

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection, with Nagle's algorithm off."""
        conn, addr = super().get_request()
        # without it, every reply waits for the client's delayed ACK (~40 ms)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore a client that hung up; report anything else."""
        # a client that gave up (its timeout) before a delayed reply is a scripted case, not a bug
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: every request is in :attr:`FakeLLM.requests` instead."""

    # ------------------------------------------------------------------ routing
    def do_GET(self) -> None:
        """``GET /v1/models`` and ``GET /props``; 404 elsewhere."""
        req = self._record(None)
        with self._turn():
            self._get(req)

    def _get(self, req: Request) -> None:
        path = self.path.rstrip("/")
        if path == "/v1/models":
            if not self._authorized(req):
                return
            req.answered = "models"
            data = [
                {
                    "id": m,
                    "object": "model",
                    "created": 0,
                    "owned_by": "hpc-agent-fake",
                    **self.fake.model_meta,
                }
                for m in self.fake.models
            ]
            self._send_json(200, {"object": "list", "data": data})
            return
        if path == "/props" and self.fake.props is not None:
            req.answered = "props"
            self._send_json(200, self.fake.props)
            return
        req.answered = "refused: unknown path"
        self._send_error(404, f"no route for GET {self.path}", "not_found")

    def do_POST(self) -> None:
        """``POST /v1/chat/completions``: the next step of the script; 404 elsewhere."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        chat = self.path.rstrip("/") == "/v1/chat/completions"
        with self.fake._lock:
            self.fake._in_flight += chat
        try:
            req = self._record(body)
            with self._turn():
                self._post(req, body)
        finally:
            with self.fake._lock:
                self.fake._in_flight -= chat

    def _turn(self) -> Any:
        """One request at a time when the fake is serial (a lock), else no wait."""
        return self.fake._serial_lock if self.fake.serial else contextlib.nullcontext()

    def _post(self, req: Request, body: Any) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            req.answered = "refused: unknown path"
            self._send_error(404, f"no route for POST {self.path}", "not_found")
            return
        if not self._authorized(req):
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            req.answered = "refused: bad body"
            self._send_error(400, "expected a JSON body with 'messages'", "invalid_request_error")
            return
        model = body.get("model")
        if model not in self.fake.models and model not in self.fake.unlisted:
            req.answered = "refused: model"
            self._send_error(
                404, f"The model `{model}` does not exist or you do not have access to it.", "model_not_found"
            )
            return
        fmt = req.response_format
        if fmt not in self.fake.accept:
            req.answered = f"refused: response_format {fmt}"
            self._send_error(
                self.fake.refuse_status,
                f"response_format type '{fmt}' is not supported by this server "
                f"(supported: {', '.join(self.fake.accept)})",
                "invalid_request_error",
                param="response_format",
            )
            return
        step, index = self.fake._next_step()
        if step is None:
            req.answered = "refused: script exhausted"
            self._send_error(500, f"fake_llm: the script is exhausted after {index} step(s)", "server_error")
            return
        req.answered = f"step {index}"
        if callable(step):
            step = step(body)
            check_step(step)
        self._answer(step, body)

    # ------------------------------------------------------------------ answers
    @property
    def fake(self) -> FakeLLM:
        """The server's :class:`FakeLLM`."""
        return self.server.fake

    def _record(self, body: Any) -> Request:
        req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        req.t = time.monotonic()
        with self.fake._lock:
            req.in_flight = self.fake._in_flight
            self.fake.requests.append(req)
        return req

    def _authorized(self, req: Request) -> bool:
        key = self.fake.api_key
        if key is None:
            return True
        if req.headers.get("authorization", "") == f"Bearer {key}":
            return True
        req.answered = "refused: key"
        self._send_error(401, "Incorrect API key provided.", "invalid_api_key")
        return False

    def _answer(self, step: Any, body: Mapping[str, Any]) -> None:
        if isinstance(step, str):
            step = {"reply": step}
        delay = float(step.get("delay_s", 0))
        if delay:
            time.sleep(delay)
        fault = step.get("fault")
        if fault == "close":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault == "malformed":
            self._send_raw(200, b'{"id": "chatcmpl-fake", "choices": [{"message": {"content": "trunc', {})
            return
        if "status" in step:
            status = int(step["status"])
            payload = step.get("body")
            if payload is None:
                payload = {"error": {"message": f"fake_llm: injected HTTP {status}", "type": "server_error"}}
            self._send_json(status, payload, step.get("headers", {}))
            return
        content = json.dumps(step["json"]) if "json" in step else str(step.get("reply", ""))
        prompt_text = "".join(
            str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict)
        )
        usage = {"prompt_tokens": len(prompt_text) // 4 + 1, "completion_tokens": len(content) // 4 + 1}
        usage.update(step.get("usage", {}))
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if "reasoning_content" in step:
            message["reasoning_content"] = step["reasoning_content"]
        choices = [] if fault == "no_choices" else [
            {"index": 0, "message": message, "finish_reason": step.get("finish_reason", "stop")}
        ]  # fmt: skip
        self._send_json(
            200,
            {
                "id": f"chatcmpl-fake-{len(self.fake.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": step.get("model", body.get("model")),
                "choices": choices,
                "usage": usage,
            },
        )

    def _send_error(self, status: int, message: str, code: str, param: str | None = None) -> None:
        err = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
        self._send_json(status, {"error": err})

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self._send_raw(status, data, headers or {})

    def _send_raw(self, status: int, data: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


# ------------------------------------------------------------------------------- command line


def _load_script(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: --script {path}: cannot read it as JSON ({e})") from None
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise SystemExit(f"error: --script {path}: expected a list of steps or an object with 'steps'")
    return data


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m hpc_agent.testing.fake_llm``: serve a script until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m hpc_agent.testing.fake_llm",
        description="A scripted OpenAI-compatible server on 127.0.0.1 for offline dry runs.",
        epilog="example: python -m hpc_agent.testing.fake_llm --script replies.json --port 8000",
    )
    parser.add_argument(
        "--script", type=Path, required=True, help="JSON list of steps (see the module docstring)"
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument(
        "--model", action="append", help="model name to serve (repeatable; default fake-model)"
    )
    parser.add_argument(
        "--reject", action="append", choices=FORMATS[:3], default=[], help="refuse this response_format"
    )
    parser.add_argument("--loop", action="store_true", help="start the script again when it is exhausted")
    args = parser.parse_args(argv)
    data = _load_script(args.script)
    models = args.model or data.get("models") or ["fake-model"]
    accept = [f for f in data.get("accept", FORMATS) if f not in args.reject]
    try:
        fake = FakeLLM(data["steps"], models=models, accept=accept, port=args.port, loop=args.loop)
    except ValueError as e:
        raise SystemExit(f"error: --script {args.script}: {e}") from None
    fake.start()
    print(fake.base_url, flush=True)
    print(
        f"serving {', '.join(models)} with {len(data['steps'])} scripted step(s); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()

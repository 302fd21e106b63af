"""The scripted OpenAI-compatible server, through the real openai client over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from hpc_agent.testing import FakeLLM


def client(fake: FakeLLM, key: str = "k", timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=key, max_retries=0, timeout=timeout)


def ask(c: openai.OpenAI, **kw: object) -> str:
    kw.setdefault("model", "fake-model")
    kw.setdefault("messages", [{"role": "user", "content": "hi"}])
    resp = c.chat.completions.create(**kw)  # type: ignore[call-overload]
    return str(resp.choices[0].message.content)


def test_replies_in_order_with_usage_and_records() -> None:
    with FakeLLM(["one", {"json": {"a": 1}}, {"reply": "three", "repeat": 2}]) as fake:
        c = client(fake)
        assert ask(c) == "one"
        assert json.loads(ask(c)) == {"a": 1}
        assert ask(c) == "three"
        resp = c.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x" * 400}]
        )
        assert resp.choices[0].message.content == "three"
        assert resp.usage is not None and resp.usage.prompt_tokens == 101
        assert fake.remaining == 0
        with pytest.raises(openai.InternalServerError, match="exhausted"):
            ask(c)
    assert [r.answered for r in fake.chat_requests] == [
        "step 0",
        "step 1",
        "step 2",
        "step 2",
        "refused: script exhausted",
    ]
    assert fake.chat_requests[3].text() == "x" * 400


def test_faults() -> None:
    script = [
        {"status": 429, "headers": {"Retry-After": "2"}},
        {"status": 500, "body": {"error": {"message": "boom"}}},
        {"fault": "close"},
        {"fault": "malformed"},
        {"delay_s": 0.5, "reply": "late"},
        {"reply": ""},
        {"fault": "no_choices"},
        "ok",
    ]
    with FakeLLM(script) as fake:
        c = client(fake, timeout=0.2)
        with pytest.raises(openai.RateLimitError) as e429:
            ask(c)
        assert e429.value.response.headers["retry-after"] == "2"
        with pytest.raises(openai.InternalServerError, match="boom"):
            ask(c)
        with pytest.raises(openai.APIConnectionError):
            ask(c)
        with pytest.raises(ValueError):  # the client cannot decode the body
            ask(c)
        with pytest.raises(openai.APITimeoutError):
            ask(c)
        assert ask(c) == ""
        resp = c.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices == []
        assert ask(c) == "ok"


def test_refusals_do_not_consume_steps() -> None:
    with FakeLLM(["ok", "ok2"], api_key="sk-right", accept=("json_object", "text")) as fake:
        with pytest.raises(openai.AuthenticationError):
            ask(client(fake, key="sk-wrong"))
        c = client(fake, key="sk-right")
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            ask(c, model="gpt-nope")
        schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
        with pytest.raises(openai.BadRequestError, match="response_format"):
            ask(c, response_format=schema)
        assert ask(c, response_format={"type": "json_object"}) == "ok"
        assert [m.id for m in c.models.list()] == ["fake-model"]
        assert ask(c) == "ok2"
    answered = [r.answered for r in fake.requests]
    assert answered == [
        "refused: key",
        "refused: model",
        "refused: response_format json_schema",
        "step 0",
        "models",
        "step 1",
    ]
    assert fake.requests[3].headers["authorization"] == "Bearer sk-right"


def test_callable_steps_and_bad_steps() -> None:
    def echo(body: object) -> str:
        assert isinstance(body, dict)
        return "echo: " + body["messages"][-1]["content"]

    with FakeLLM([echo]) as fake:
        assert ask(client(fake), messages=[{"role": "user", "content": "ping"}]) == "echo: ping"
    with pytest.raises(ValueError, match="unknown key"):
        FakeLLM([{"replay": "typo"}])
    with pytest.raises(ValueError, match="fault"):
        FakeLLM([{"fault": "explode"}])


def test_replies_are_fast() -> None:
    """TCP_NODELAY: a reply must not wait for the client's delayed ACK (~40 ms)."""
    with FakeLLM([{"reply": "x", "forever": True}]) as fake:
        c = client(fake)
        ask(c)  # connect
        t0 = time.perf_counter()
        for _ in range(10):
            ask(c)
        assert (time.perf_counter() - t0) / 10 < 0.03


def test_command_line(tmp_path: Path) -> None:
    script = tmp_path / "replies.json"
    script.write_text(json.dumps({"steps": ["hello"], "models": ["m1"]}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpc_agent.testing.fake_llm",
            "--script",
            str(script),
            "--reject",
            "json_schema",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        c = openai.OpenAI(base_url=url, api_key="k", max_retries=0, timeout=5)
        assert ask(c, model="m1") == "hello"
        with pytest.raises(openai.BadRequestError):
            ask(
                c,
                model="m1",
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_command_line_bad_script(tmp_path: Path) -> None:
    script = tmp_path / "replies.json"
    script.write_text('{"steps": [{"fault": "nope"}]}')
    out = subprocess.run(
        [sys.executable, "-m", "hpc_agent.testing.fake_llm", "--script", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "fault='nope'" in out.stderr

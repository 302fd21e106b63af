"""hpc_agent.llm.transport: one request with retries (over real HTTP to the scripted server),
and what an HTTP error means."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from hpc_agent.llm.transport import (
    ContextExceeded,
    LLMUnavailable,
    mentions_format,
    retry_after,
    send_with_retries,
    status_message,
)
from hpc_agent.testing.fake_llm import FakeLLM


def send(fake: FakeLLM, max_retries: int, waits: list[float], retries: list[dict[str, Any]]) -> Any:
    api = openai.OpenAI(api_key="k", base_url=fake.base_url, max_retries=0, timeout=5)

    def create() -> Any:
        return api.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])

    return send_with_retries(
        create,
        mode="text",
        sent={},
        max_retries=max_retries,
        timeout_s=5,
        sleep=waits.append,
        wait_idle=lambda limit: 0.0,
        retries=retries,
    )


def test_a_retry_after_is_honoured_then_the_reply_comes() -> None:
    waits: list[float] = []
    retries: list[dict[str, Any]] = []
    with FakeLLM([{"status": 429, "headers": {"Retry-After": "2"}}, "ok"]) as fake:
        resp, latency = send(fake, 2, waits, retries)
    assert resp.choices[0].message.content == "ok" and latency >= 0
    assert waits == [2.0] and retries[0]["attempt"] == 1 and retries[0]["error"].startswith("HTTP 429")


def test_spent_retries_raise_llm_unavailable_with_each_attempt_recorded() -> None:
    waits: list[float] = []
    retries: list[dict[str, Any]] = []
    with FakeLLM([{"status": 500, "forever": True}]) as fake:
        with pytest.raises(LLMUnavailable) as e:
            send(fake, 1, waits, retries)
    assert "(2 attempt(s))" in str(e.value) and e.value.status == 500
    assert [r["attempt"] for r in retries] == [1, 2] and retries[-1]["wait_s"] is None and len(waits) == 1


def test_a_prompt_over_the_context_is_context_exceeded_at_once() -> None:
    body = {
        "error": {
            "message": "This model's maximum context length is 2048 tokens. "
            "However, you requested 3000 tokens (2900 in the messages)"
        }
    }
    with FakeLLM([{"status": 400, "body": body}]) as fake:
        with pytest.raises(ContextExceeded) as e:
            send(fake, 3, [], [])
    assert e.value.limit == 2048 and e.value.prompt_tokens == 2900


class _Err:
    def __init__(self, body: Any) -> None:
        self.body = body


def test_error_words() -> None:
    assert status_message(_Err({"error": {"message": "bad key"}})) == "bad key"
    assert status_message(_Err({"detail": "Not Found"})) == "Not Found"
    assert status_message(_Err("plain")) == "plain"
    assert mentions_format("response_format json_schema is not supported")
    assert not mentions_format("rate limited")
    assert retry_after({"retry-after-ms": "1500"}) == 1.5
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({}) is None and retry_after(None) is None

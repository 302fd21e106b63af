"""hpc_agent.llm.client: the round trip against the scripted server over real HTTP: the reply
parsed, the format negotiated down when refused, every exchange logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpc_agent.llm import transport
from hpc_agent.llm.client import LLMClient, family, response_format, strict_subset
from hpc_agent.llm.config import LLMConfig
from hpc_agent.llm.transport import LLMUnavailable
from hpc_agent.testing.fake_llm import FakeLLM

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "BACKOFF_BASE_S", 0.0)


def client(fake: FakeLLM, log: Path, **kw: object) -> LLMClient:
    c = LLMClient(LLMConfig(base_url=fake.base_url, model="fake-model", max_retries=2, **kw), log)  # type: ignore[arg-type]
    c.sleep = lambda s: None
    return c


def test_a_round_trip_returns_the_parsed_reply_and_logs_it(tmp_path: Path) -> None:
    with FakeLLM([{"json": {"a": 1}}]) as fake:
        reply = client(fake, tmp_path / "llm.jsonl").complete(
            HELLO, schema=SCHEMA, purpose="propose", generation=0
        )
        (req,) = fake.chat_requests
    assert (reply.data, reply.parse_error, reply.mode) == ({"a": 1}, "", "json_schema")
    assert req.response_format == "json_schema" and req.messages == HELLO
    (rec,) = [json.loads(line) for line in (tmp_path / "llm.jsonl").read_text().splitlines()]
    assert (rec["purpose"], rec["generation"], rec["response_format"]) == ("propose", 0, "json_schema")


def test_a_refused_format_falls_back_and_is_remembered(tmp_path: Path) -> None:
    with FakeLLM([{"json": {"a": 2}}, {"json": {"a": 3}}], accept=("json_object", "text")) as fake:
        c = client(fake, tmp_path / "llm.jsonl")
        first = c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=0)
        second = c.complete(HELLO, schema=SCHEMA, purpose="propose", generation=1)
        formats = [r.response_format for r in fake.chat_requests]
    assert first.data == {"a": 2} and first.mode == "json_object"
    assert second.mode == "json_object" and formats[-1] == "json_object"  # no second negotiation
    assert "json_schema" in c.memory.rejected_modes
    restarted = client(fake, tmp_path / "llm.jsonl")
    assert restarted.mode == "json_object"  # read back from llm.jsonl


def test_a_server_that_keeps_failing_raises_llm_unavailable_and_logs_the_attempts(tmp_path: Path) -> None:
    with FakeLLM([{"status": 503, "forever": True}]) as fake:
        with pytest.raises(LLMUnavailable):
            client(fake, tmp_path / "llm.jsonl").complete(
                HELLO, schema=SCHEMA, purpose="propose", generation=0
            )
    (rec,) = [json.loads(line) for line in (tmp_path / "llm.jsonl").read_text().splitlines()]
    assert rec["error"] and len(rec["retries"]) == 3  # the first try and two retries


def test_the_pure_helpers() -> None:
    assert family("json_object+schema") == "json_object" and family("json_schema") == "json_schema"
    assert response_format("text", SCHEMA) is None
    fmt = response_format("json_schema", SCHEMA)
    assert fmt is not None and fmt["type"] == "json_schema"
    bounded = {"type": "object", "properties": {"minimum": {"type": "array", "maxItems": 3}}}
    assert strict_subset(bounded) == {"type": "object", "properties": {"minimum": {"type": "array"}}}
    assert fmt["json_schema"]["strict"] is True
    assert response_format("json_object+schema", SCHEMA) == {"type": "json_object", "schema": SCHEMA}

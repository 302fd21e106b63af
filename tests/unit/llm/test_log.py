"""hpc_agent.llm.log: llm.jsonl written with a version and scrubbed of secrets, read back as the
campaign's usage and as the planner's memory of an endpoint."""

from __future__ import annotations

import json
from pathlib import Path

from hpc_agent.llm.log import LOG_VERSION, ExchangeLog, Memory, read_log, usage


def test_records_carry_the_version_and_never_the_secret(tmp_path: Path) -> None:
    log = ExchangeLog(tmp_path / "sub" / "llm.jsonl", secrets=["sk-SECRET-123", ""])
    log.append({"purpose": "propose", "note": "key sk-SECRET-123 in a message"})
    text = (tmp_path / "sub" / "llm.jsonl").read_text()
    assert "sk-SECRET-123" not in text and "***" in text
    (rec,) = list(log.records())
    assert rec["v"] == LOG_VERSION and rec["purpose"] == "propose"
    assert list(ExchangeLog(None).records()) == []
    ExchangeLog(None).append({"purpose": "x"})  # writes nothing, raises nothing


def test_old_records_read_as_version_1(tmp_path: Path) -> None:
    path = tmp_path / "llm.jsonl"
    path.write_text(
        json.dumps({"purpose": "propose"}) + "\n" + json.dumps({"v": 2, "purpose": "analyze"}) + "\n"
    )
    assert [r["v"] for r in read_log(path)] == [1, 2]


def test_usage_counts_round_trips_and_leaves_preflight_out() -> None:
    u = usage([{"purpose": "preflight"}, {"purpose": "propose", "tokens_in": 5, "error": "x"}])
    assert (u.round_trips, u.failed, u.tokens_in, dict(u.by_purpose)) == (1, 1, 5, {"propose": 1})


def test_memory_learns_modes_parameters_and_the_context(tmp_path: Path) -> None:
    log = ExchangeLog(tmp_path / "llm.jsonl")
    url = "http://user:pass1234@host/v1"
    log.append(
        {
            "base_url": "http://***@host/v1",
            "model": "m",
            "negotiation": [
                {"response_format": "json_schema", "rejected": "no"},
                {"temperature": 0.7, "rejected": "no"},
            ],
        }
    )
    log.append(
        {
            "base_url": "http://***@host/v1",
            "model": "m",
            "context_limit": 4096,
            "prompt_tokens": 300,
            "prompt_tokens_estimate": 200,
        }
    )
    log.append({"base_url": "http://***@host/v1", "model": "other", "context_limit": 99})
    memory = log.remembered(url, "m")
    assert memory.rejected_modes == {"json_schema"} and memory.rejected_params == {"temperature"}
    assert memory.context_limit == 4096 and memory.token_ratio == 1.5
    assert memory.start_mode(("json_schema", "json_object")) == "json_object"
    memory.learn({"mode_ok": True, "response_format": "json_object"})
    assert memory.start_mode() == "json_object"
    assert Memory(rejected_modes={"a", "b"}).start_mode(("a", "b")) == "b"  # all refused: the last

"""hpc_agent.llm.render: ``hpc-agent logs`` renders the exchange log for a person."""

from __future__ import annotations

import json
from pathlib import Path

from hpc_agent.llm.log import ExchangeLog
from hpc_agent.llm.render import format_log, listing


def test_listing_cuts_long_lists() -> None:
    assert listing(None) == "none" and listing([]) == "none"
    assert listing(["a", "b"]) == "a, b"
    assert listing([str(i) for i in range(5)], limit=2) == "0, 1, ... (5 in all)"


def test_format_log_summarises_each_exchange_and_the_totals(tmp_path: Path) -> None:
    assert format_log(tmp_path).startswith(f"no LLM exchanges in {tmp_path}")
    log = ExchangeLog(tmp_path / "llm.jsonl")
    log.append(
        {
            "t": 0,
            "generation": 0,
            "purpose": "propose",
            "model": "m",
            "response_format": "json_schema",
            "tokens_in": 1200,
            "tokens_out": 30,
            "latency_s": 1.5,
            "cost": 0.01,
            "proposals": [{"params": {"x": 0.5}, "hypothesis": "smaller x"}],
            "validation_errors": ["x = 5: above high"],
            "reply": '{"proposals": []}',
        }
    )
    log.append(
        {
            "t": 0,
            "generation": 1,
            "purpose": "analyze",
            "model": "m",
            "error": "timed out",
            "retries": [{"attempt": 1, "error": "timeout", "wait_s": 2}],
        }
    )
    text = format_log(tmp_path)
    assert "gen 0 · propose · m · json_schema · 1,200→30 tokens · 1.50 s · ~0.0100" in text
    assert "  proposals accepted: 1\n    - x=0.5: smaller x" in text
    assert "  invalid: x = 5: above high" in text
    assert "  attempt 1 failed: timeout, waited 2 s\n  ERROR: timed out" in text
    assert text.rstrip().endswith(
        "total: 2 round trip(s) (1 analyze, 1 propose), 1 failed, 1 transport retry; "
        "tokens in 1,200, out 30; cost ~0.0100"
    )
    only = format_log(tmp_path, generation=1)
    assert "propose" not in only.split("total:")[0] and "analyze" in only
    assert (
        format_log(tmp_path, generation=7)
        == f"no LLM exchanges for generation 7 in {tmp_path / 'llm.jsonl'}\n"
    )
    raw = format_log(tmp_path, as_json=True).splitlines()
    assert [json.loads(line)["purpose"] for line in raw] == ["propose", "analyze"]

"""A journal written by release 0.1.0 replays to the state that release computed.

The fixture is a real campaign's journal (tests/fixtures/journal-0.1.0.jsonl): a refused
sbatch, a SLURM generation with a failed and a timed-out trial, a driver killed with its
lanes (lost trials requeued), an `hpc-agent cancel` and its resume, spec changes and a
``--force``. ``journal-0.1.0.state.json`` is what 0.1.0's ``replay`` made of it. Newer
versions may add fields to the state; every field 0.1.0 had must keep its value.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any

from hpc_agent.journal import Journal
from hpc_agent.state import replay

FIXTURES = Path(__file__).parent / "fixtures"


def plain(value: Any) -> Any:
    """A state as JSON-ready data (dataclasses, enums, tuples and mappings unfolded)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def project(actual: Any, expected: Any) -> Any:
    """``actual`` restricted to the keys ``expected`` has (new fields are allowed)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: project(actual.get(k, "<missing>"), v) for k, v in expected.items()}
    if isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        return [project(a, e) for a, e in zip(actual, expected)]
    return actual


def test_a_release_0_1_0_journal_replays_to_the_same_state() -> None:
    state = plain(replay(Journal(FIXTURES / "journal-0.1.0.jsonl").iter()))
    expected = json.loads((FIXTURES / "journal-0.1.0.state.json").read_text())
    assert project(state, expected) == expected
    # the fixture covers what it claims to
    trials = expected["trials"]
    states = {t["state"] for t in trials.values()}
    assert {"completed", "failed", "timeout"} <= states
    assert any(t["retries"] for t in trials.values())  # lost, then requeued
    assert expected["runs"] == 7 and len(expected["submissions"]) == 7

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

from hpc_agent.store.journal import Journal
from hpc_agent.store.state import replay

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


def _indexes_agree(state: Any) -> None:
    """The state's incremental views against the same facts computed from scratch."""
    from hpc_agent.store.state import STATE_ORDER

    everything = state.configs()
    for g in state.generations:
        brute = {s.value: 0 for s in STATE_ORDER}
        for t in state.trials_of(g):
            brute[t.state.value] += 1
        assert state.counts(g) == brute, g
    due = [c for c in everything if not c.purpose and c.config_id not in state.verdicts and not c.pending]
    assert [c.config_id for c in state.settled_unjudged()] == [c.config_id for c in due]
    assert state.unfinished() == sum(not t.state.is_finished() for t in state.trials.values())
    pooled = [c for c in everything if len(c.values) >= 2]
    assert state.configs_with_values(2) == pooled


def test_the_incremental_views_match_a_recount_after_every_event(make_campaign: Any, tmp_path: Path) -> None:
    """Counts, the configurations due a verdict and those the noise floor pools are kept up to
    date event by event; after each event of the 0.1.0 fixture (requeues, a cancel and its
    resume) and of a campaign with seeds, controls and verdicts, they equal a recount."""
    import random

    from hpc_agent.config.spec import load_spec
    from hpc_agent.loop.campaign import Campaign
    from hpc_agent.planners.random import RandomPlanner
    from hpc_agent.store.events import parse
    from hpc_agent.store.state import CampaignState
    from hpc_agent.testing import Fate, ScriptedExecutor

    journals = [FIXTURES / "journal-0.1.0.jsonl"]
    for seeds in (1, 2):  # one seed: controls estimate the noise; two: the seeds do
        camp = make_campaign(
            generations=3, batch_size=3, campaign=f"seeds = {seeds}", experiment="max_retries = 1"
        )
        rng = random.Random(seeds)
        fates = {"0001-0001": [Fate("vanish", ended_as="lost")], "0000-0002": [Fate("fail")]}
        ex = ScriptedExecutor(objective=lambda p, rng=rng: rng.random(), fates=fates)
        results = tmp_path / f"res{seeds}"
        assert Campaign(load_spec(camp), results, ex, RandomPlanner()).run().status == "done"
        journals.append(results / "journal.jsonl")
    kinds: set[str] = set()
    controls = pooled = False
    for path in journals:
        state = CampaignState()
        for record in Journal(path).iter():
            event = parse(record)
            if event is not None:
                state.apply(event)
                kinds.add(record["event"])
                _indexes_agree(state)
        controls = controls or any(t.purpose == "control" for t in state.trials.values())
        pooled = pooled or any(len(c.values) >= 2 for c in state.configs())
    assert {"requeued", "verdict", "trial_ended", "cancelled"} <= kinds and controls and pooled

"""hpc_agent.loop.cancel and hpc_agent.loop.rerun: the two commands that write to a results
folder without running the loop: a cancel journaled (and its trials recorded when no driver
runs), a rerun planned as a generation of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hpc_agent.errors import UserError
from hpc_agent.loop.cancel import cancel_campaign
from hpc_agent.loop.rerun import plan_rerun
from hpc_agent.store.journal import Journal
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import load_state
from hpc_agent.store.state import TrialState
from unit.conftest import Finished, interrupted


def test_a_cancel_without_a_driver_records_the_open_trials_cancelled(tmp_path: Path) -> None:
    run = interrupted(tmp_path)
    assert sorted(t.state for t in run.state.trials.values()) == [TrialState.SUBMITTED] * 3
    jobs, open_trials = cancel_campaign(run.results)
    assert (jobs, open_trials) == (0, 3)  # the scripted executor is no kind `cancel` can signal
    events = [e["event"] for e in Journal(run.paths.journal).read()]
    assert events[-4] == "cancelled" and events[-3:] == ["trial_ended"] * 3
    state = load_state(run.results)
    assert all(t.state is TrialState.CANCELLED and t.by_campaign_cancel for t in state.trials.values())


def test_a_rerun_is_a_generation_of_its_own(finished: Finished, tmp_path: Path) -> None:
    results = tmp_path / "r"
    shutil.copytree(finished.results, results)
    g = plan_rerun(results, "0000-0002", seeds=2, budget_multiplier=2.0)
    assert g == 2
    state = load_state(results)
    new = state.trials_of(2)
    original = state.trials["0000-0002"]
    assert [t.trial_id for t in new] == ["0002-0000", "0002-0001"]
    assert [t.seed for t in new] == [original.seed, original.seed + 1]
    assert all(
        t.purpose == "rerun" and t.of == original.config_id and t.budget_multiplier == 2.0 for t in new
    )
    assert all(dict(t.params) == dict(original.params) and t.parent == "0000-0002" for t in new)
    assert json.loads(ResultsPaths(results).plan(2).read_text())["planner"] == "rerun"


def test_a_rerun_refuses_bad_counts_and_an_unfinished_campaign(finished: Finished, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="expected >= 1 and > 0"):
        plan_rerun(finished.results, "0000-0000", seeds=0)
    run = interrupted(tmp_path)
    with pytest.raises(UserError):
        plan_rerun(run.results, "0000-0000")

"""hpc_agent.loop.driver, .sync, .overlap and .campaign: the driver run under each schedule
directly (a Driver subclass that names its schedule), with the scripted executor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_campaign

from hpc_agent.config.spec import load_spec
from hpc_agent.errors import UserError
from hpc_agent.loop.campaign import SCHEDULES, Campaign
from hpc_agent.loop.driver import Driver, RunResult, Schedule, exit_message
from hpc_agent.loop.overlap import AsyncSchedule
from hpc_agent.loop.sync import SyncSchedule
from hpc_agent.planners.random import RandomPlanner
from hpc_agent.store.journal import Journal
from hpc_agent.store.results import load_state
from hpc_agent.testing import Fate, ScriptedExecutor
from unit.conftest import objective


def driver_with(schedule: Callable[[Driver], Schedule]) -> type[Driver]:
    class _Driver(Driver):
        def schedule(self) -> Schedule:
            return schedule(self)

    return _Driver


def events(results: Path) -> list[str]:
    return [e["event"] for e in Journal(results / "journal.jsonl").read()]


def test_the_sync_schedule_runs_one_generation_at_a_time(tmp_path: Path) -> None:
    spec = load_spec(write_campaign(tmp_path / "c", generations=2, batch_size=2))
    ex = ScriptedExecutor(objective=objective)
    result = driver_with(SyncSchedule)(spec, tmp_path / "r", ex, RandomPlanner()).run()
    assert (result.status, result.generations_done, result.counts["completed"]) == ("done", 2, 4)
    kinds = events(tmp_path / "r")
    assert kinds[:2] == ["campaign", "run"] and kinds[-1] == "run_ended"
    # generation 1 is planned only once generation 0 has been analyzed: a barrier
    assert kinds.index("analyzed") < [i for i, k in enumerate(kinds) if k == "planned"][1]
    assert len(ex.submissions) == 2


def test_the_async_schedule_overlaps_generations(tmp_path: Path) -> None:
    spec = load_spec(
        write_campaign(tmp_path / "c", generations=2, batch_size=2, campaign='schedule = "async"')
    )
    slow = {"0000-0001": [Fate(duration_s=0.8)]}  # its slot stays busy; the other frees at once
    ex = ScriptedExecutor(objective=objective, fates=slow)
    result = driver_with(AsyncSchedule)(spec, tmp_path / "r", ex, RandomPlanner()).run()
    assert result.status == "done" and result.counts["completed"] == 4
    records = Journal(tmp_path / "r" / "journal.jsonl").read()
    planned_1 = next(i for i, e in enumerate(records) if e["event"] == "planned" and e["generation"] == 1)
    slow_end = next(
        i for i, e in enumerate(records) if e["event"] == "trial_ended" and e["trial"] == "0000-0001"
    )
    assert planned_1 < slow_end  # generation 1 was planned into the freed slot, not after a barrier
    state = load_state(tmp_path / "r")
    assert sum(1 for t in state.trials.values() if t.purpose in ("", "control")) == 4
    schedule = AsyncSchedule(driver_with(AsyncSchedule)(spec, tmp_path / "r2", ex, RandomPlanner()))
    assert schedule.slots == spec.campaign.slots


def test_campaign_picks_the_schedule_its_spec_names(tmp_path: Path) -> None:
    assert SCHEDULES == {"sync": SyncSchedule, "async": AsyncSchedule}
    ex = ScriptedExecutor(objective=objective)
    sync = Campaign(load_spec(write_campaign(tmp_path / "a")), tmp_path / "ra", ex, RandomPlanner())
    assert isinstance(sync.schedule(), SyncSchedule)
    spec = load_spec(write_campaign(tmp_path / "b", campaign='schedule = "async"'))
    assert isinstance(Campaign(spec, tmp_path / "rb", ex, RandomPlanner()).schedule(), AsyncSchedule)


def test_a_bare_driver_has_no_schedule_and_a_second_driver_is_refused(tmp_path: Path) -> None:
    spec = load_spec(write_campaign(tmp_path / "c"))
    with pytest.raises(NotImplementedError):
        Driver(spec, tmp_path / "r", ScriptedExecutor(), RandomPlanner()).run()
    first = Campaign(spec, tmp_path / "r2", ScriptedExecutor(), RandomPlanner())
    from hpc_agent.store.results import acquire_driver_lock

    lock = acquire_driver_lock(first.paths)
    try:
        with pytest.raises(UserError):
            first.run()
    finally:
        lock.release()


def test_exit_message() -> None:
    done = RunResult("done", Path("/r"), 2, None, {"completed": 3})
    assert exit_message(done) == "done: 2 generation(s) in /r"
    failed = RunResult("done", Path("/r"), 1, None, {"failed": 2})
    assert failed.failed and "failed: no trial completed" in exit_message(failed)
    assert not RunResult("cancelled", Path("/r"), 0, None, {"failed": 2}).failed

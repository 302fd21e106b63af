"""hpc_agent.loop.reconcile: open trials reconciled with their status files and the scheduler
(the scripted executor plays each attempt's fate when polled), and the requeue rules."""

from __future__ import annotations

import time
from dataclasses import replace

from hpc_agent.executors.base import JobStatus
from hpc_agent.loop.planning import Planning
from hpc_agent.loop.prepare import base_files, prepare_trial
from hpc_agent.loop.reconcile import (
    Reconciler,
    cancelled_by_campaign,
    gone_outcome,
    interrupted,
    next_delay,
    resumed_after_cancel,
)
from hpc_agent.loop.submit import Submissions
from hpc_agent.store.events import Requeued, TrialEnded
from hpc_agent.store.state import TrialState
from hpc_agent.testing import Fate
from unit.conftest import BareDriver


def submitted(driver: BareDriver) -> None:
    planning = Planning(driver)
    req = planning.start(0, "explore")
    assert req is not None
    planning.finish(req, req.ask(driver.planner, None, driver.reporter))
    base = base_files(driver.paths, driver.spec.experiment)
    for t in driver.state.trials_of(0):
        prepare_trial(driver.paths, t, driver.spec.experiment, base, unset_env=[])
    Submissions(driver).submit(0, driver.state.trials_of(0))


def test_each_fate_becomes_its_event(bare_driver: BareDriver) -> None:
    ex = bare_driver.executor
    ex.fates = {"0000-0001": [Fate("fail")], "0000-0002": [Fate("preempt")]}
    submitted(bare_driver)
    rec = Reconciler(bare_driver.paths, bare_driver.spec, ex)
    got: list = []
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        open_trials = [t for t in bare_driver.state.trials_of(0) if not t.state.is_finished()]
        events = rec.reconcile(bare_driver.state, open_trials)
        bare_driver.record(*events)
        got += events
    by_trial = {e.trial: e for e in got}
    done, failed, preempted = by_trial["0000-0000"], by_trial["0000-0001"], by_trial["0000-0002"]
    assert isinstance(done, TrialEnded) and done.state == "completed" and done.objective is not None
    assert isinstance(failed, TrialEnded) and failed.state == "failed" and "scripted failure" in failed.reason
    assert isinstance(preempted, Requeued) and preempted.counted
    assert bare_driver.state.trials["0000-0002"].state is TrialState.PLANNED  # back to be submitted
    assert rec.reconcile(bare_driver.state, []) == []  # nothing open, nothing changes


def test_the_requeue_rules(bare_driver: BareDriver) -> None:
    submitted(bare_driver)
    t = bare_driver.state.trials["0000-0000"]
    exp = replace(bare_driver.spec.experiment, max_retries=1, max_progress_requeues=1)
    assert isinstance(interrupted(t, "preempted", {}, "preempted", exp), Requeued)
    spent = replace(t, retries=1)
    end = interrupted(spent, "preempted", {}, "preempted", exp)
    assert isinstance(end, TrialEnded) and end.state == "preempted"
    progress = interrupted(spent, "preempted", {"checkpoint_advanced": True}, "preempted", exp)
    assert isinstance(progress, Requeued) and progress.progress and not progress.counted
    free = interrupted(replace(t, retries=9), "ctrl-c", {"interrupted_by": "SIGINT"}, "preempted", exp)
    assert isinstance(free, Requeued) and not free.counted


def test_gone_outcome_cancel_and_delay(bare_driver: BareDriver) -> None:
    assert gone_outcome(None, None)[0] == "lost" and "before it started" in gone_outcome(None, None)[1]
    job = JobStatus(
        "1", "gone", "TIMEOUT", "", "", "timeout", "the job hit its time limit", "raise timeout_min"
    )
    assert gone_outcome(job, {"state": "running"}) == (
        "timeout",
        "the job hit its time limit while running; raise timeout_min",
    )
    c = cancelled_by_campaign("0000-0000")
    assert c.state == "cancelled" and c.by_campaign_cancel
    submitted(bare_driver)
    bare_driver.record(cancelled_by_campaign("0000-0000"))
    (again,) = resumed_after_cancel(bare_driver.state)
    assert again.trial == "0000-0000" and not again.counted
    ex = bare_driver.executor
    assert next_delay(1.0, True, 10, ex) == 0.05
    assert next_delay(0.05, False, 10, replace(ex, poll_interval_s=30.0)) == 0.05 * 1.5
    assert next_delay(10.0, False, 4000, replace(ex, poll_interval_s=30.0)) == 2.0

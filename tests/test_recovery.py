"""The loop's recovery paths, through the scripted in-process executor: milliseconds each.

Each test plays one thing a cluster does to a campaign (a driver killed inside submit, a job
gone without a word, preemptions, a cancel racing the end of a trial) and checks what the
journal and the trials say afterwards. The same paths run on real processes and the real
local SLURM in test_campaign.py, test_slurm_cluster.py and test_survive_slurm.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpc_agent.config.spec import load_spec
from hpc_agent.errors import UserError
from hpc_agent.loop.campaign import Campaign
from hpc_agent.loop.driver import RunResult
from hpc_agent.planners.random import RandomPlanner
from hpc_agent.store.events import Cancelled
from hpc_agent.store.journal import Journal
from hpc_agent.store.results import load_state
from hpc_agent.store.state import TrialState
from hpc_agent.testing import DriverKilled, Fate, ScriptedExecutor


def results(camp: Path) -> Path:
    return camp.parent / f"results-{camp.name}"


def run(camp: Path, ex: ScriptedExecutor) -> RunResult:
    return Campaign(load_spec(camp), results(camp), ex, RandomPlanner()).run()


def events(camp: Path, name: str) -> list[dict[str, Any]]:
    return [e for e in Journal(results(camp) / "journal.jsonl").read() if e["event"] == name]


@pytest.fixture
def camp(make_campaign: Callable[..., Path]) -> Path:
    return make_campaign(generations=2, batch_size=3, experiment="max_retries = 2")


def test_a_clean_campaign_takes_milliseconds(camp: Path) -> None:
    t0 = time.perf_counter()
    result = run(camp, ScriptedExecutor())
    assert result.status == "done" and result.counts["completed"] == 6
    assert time.perf_counter() - t0 < 5  # no process, no sleep: the loop alone


def test_driver_killed_in_submit_before_the_scheduler_had_it_resubmits(camp: Path) -> None:
    ex = ScriptedExecutor(kill_in_submit="before")
    with pytest.raises(DriverKilled):
        run(camp, ex)
    assert len(events(camp, "submitting")) == 1 and not events(camp, "submitted")
    assert run(camp, ex).status == "done"
    (failed,) = events(camp, "submit_failed")
    assert "no job found" in failed["error"]
    assert len(ex.submissions) == 2 and all(n == 1 for n in ex.executions.values())  # once each


def test_driver_killed_in_submit_after_the_scheduler_took_it_reattaches(camp: Path) -> None:
    ex = ScriptedExecutor(kill_in_submit="after")
    with pytest.raises(DriverKilled):
        run(camp, ex)
    assert run(camp, ex).status == "done"
    recovered = [e for e in events(camp, "submitted") if e.get("recovered")]
    assert len(recovered) == 1 and not events(camp, "submit_failed")
    assert len(ex.submissions) == 2  # generation 0 once (re-attached), generation 1 once
    assert all(n == 1 for n in ex.executions.values())


def test_a_job_gone_without_status_is_lost_and_requeued(camp: Path) -> None:
    ex = ScriptedExecutor(fates={"0000-0001": [Fate("vanish", ended_as="lost")]})
    assert run(camp, ex).status == "done"
    (requeued,) = events(camp, "requeued")
    assert (
        requeued["trial"] == "0000-0001"
        and requeued["counted"]
        and "without a final status" in requeued["reason"]
    )
    st = load_state(results(camp))
    assert st.trials["0000-0001"].state is TrialState.COMPLETED and st.trials["0000-0001"].attempt == 2


def test_scheduler_words_decide_a_vanished_trials_state(camp: Path) -> None:
    ex = ScriptedExecutor(
        fates={
            "0000-0000": [Fate("vanish", ended_as="failed")],
            "0000-0001": [Fate("vanish", ended_as="timeout")],
        }
    )
    run(camp, ex)
    st = load_state(results(camp))
    assert (
        st.trials["0000-0000"].state is TrialState.FAILED
        and st.trials["0000-0001"].state is TrialState.TIMEOUT
    )
    assert not events(camp, "requeued")  # a verdict, not an interruption


def test_preempted_twice_then_completes_and_a_third_time_gives_up(make_campaign: Callable[..., Path]) -> None:
    twice = make_campaign(folder="twice", batch_size=1, experiment="max_retries = 2")
    run(twice, ScriptedExecutor(fates={"0000-0000": [Fate("preempt"), Fate("preempt")]}))
    st = load_state(results(twice))
    assert st.trials["0000-0000"].state is TrialState.COMPLETED and st.trials["0000-0000"].retries == 2
    thrice = make_campaign(folder="thrice", batch_size=1, experiment="max_retries = 2")
    result = run(thrice, ScriptedExecutor(fates={"0000-0000": [Fate("preempt")] * 3}))
    t = load_state(results(thrice)).trials["0000-0000"]
    assert t.state is TrialState.PREEMPTED and "gave up after 2 requeue(s)" in t.reason and result.failed


def test_preemptions_after_progress_do_not_count(make_campaign: Callable[..., Path]) -> None:
    camp = make_campaign(batch_size=1, experiment="max_retries = 0")
    fates = [Fate("time_limit", checkpoint=True)] * 4
    run(camp, ScriptedExecutor(fates={"0000-0000": fates}))
    t = load_state(results(camp)).trials["0000-0000"]
    assert t.state is TrialState.COMPLETED and t.progress_requeues == 4 and t.retries == 0 and t.attempt == 5


def test_a_cancel_racing_the_end_of_trials_keeps_what_completed(camp: Path) -> None:
    """Trial 0 completes and, before the driver reads it, `hpc-agent cancel` writes its event:
    the completed trial stays completed, the unfinished ones are cancelled (not requeued)."""
    ex = ScriptedExecutor(fates={"0000-0001": [Fate("hang")], "0000-0002": [Fate("hang")]})
    original_poll = ex.poll

    def poll_then_cancel(job_ids: Any) -> Any:
        out = original_poll(job_ids)
        Journal(results(camp) / "journal.jsonl").write([Cancelled(reason="test")])
        ex.cancel(list(job_ids))
        return out

    ex.poll = poll_then_cancel  # type: ignore[method-assign]
    result = run(camp, ex)
    st = load_state(results(camp))
    assert result.status == "cancelled"
    assert st.trials["0000-0000"].state is TrialState.COMPLETED
    for t in ("0000-0001", "0000-0002"):
        assert st.trials[t].state is TrialState.CANCELLED and st.trials[t].by_campaign_cancel
    assert not events(camp, "requeued")
    # resumed: the cancelled trials run again, the completed one does not
    ex.poll = original_poll  # type: ignore[method-assign]
    ex.fates.clear()
    assert run(camp, ex).status == "done"
    assert ex.executions["0000-0000"] == 1 and ex.executions["0000-0001"] == 2


def test_a_refused_submission_loses_nothing(camp: Path) -> None:
    ex = ScriptedExecutor(refuse_next="sbatch: error: Invalid partition name specified")
    with pytest.raises(UserError, match="Invalid partition"):
        run(camp, ex)
    st = load_state(results(camp))
    assert all(t.state is TrialState.PLANNED for t in st.trials.values())
    for t in st.trials.values():  # no job may run them until they are submitted again
        assert json.loads((results(camp) / f"gen-0000/trials/{t.trial_id}/assignment.json").read_text()) == {
            "token": None
        }
    assert run(camp, ex).status == "done" and len(events(camp, "planned")) == 2


def test_a_diverged_metric_is_a_failure_with_its_reason(camp: Path) -> None:
    run(camp, ScriptedExecutor(fates={"0000-0000": [Fate("diverge")]}))
    t = load_state(results(camp)).trials["0000-0000"]
    assert t.state is TrialState.FAILED and "diverged" in t.reason


def test_the_trials_table_kept_between_gathers_is_the_one_built_at_once(camp: Path) -> None:
    """The driver keeps the rows of ended trials between gathers (EndedRows): its last
    trials.parquet equals one built from the whole journal at once, failures, requeues and
    trials without metrics included."""
    import polars as pl
    from polars.testing import assert_frame_equal

    from hpc_agent.store.metrics import gather_table
    from hpc_agent.store.paths import ResultsPaths

    ex = ScriptedExecutor(
        objective=lambda p: float(p["x"]),
        fates={
            "0000-0000": [Fate("fail")],
            "0000-0001": [Fate("preempt"), Fate("complete")],
            "0001-0000": [Fate("vanish", ended_as="failed")],
        },
    )
    assert run(camp, ex).status == "done"
    paths = ResultsPaths(results(camp))
    kept = pl.read_parquet(paths.trials_table)
    at_once = gather_table(paths, load_state(results(camp)), load_spec(camp))
    assert kept.height == len(load_state(results(camp)).trials) >= 4
    assert_frame_equal(kept, at_once)


def test_an_announced_end_is_read_at_once_and_an_unannounced_one_at_the_sweep(
    camp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait phase lists gen-NNNN/ended/ instead of every status file: a status the runner
    announced is read on the next look (and its notice removed), one it did not announce (a
    runner of an older release) on the next sweep of every status file."""
    import os

    from hpc_agent.job.fileio import atomic_write_json
    from hpc_agent.job.trial import write_status
    from hpc_agent.loop import reconcile
    from hpc_agent.store.events import Planned, PlannedTrial, Submitted, Submitting, TrialEnded
    from hpc_agent.store.paths import ResultsPaths
    from hpc_agent.store.state import CampaignState

    paths = ResultsPaths(results(camp))
    st = CampaignState()
    trials = ("0000-0000", "0000-0001")
    st.apply(
        Planned(generation=0, trials=tuple(PlannedTrial(t, i, f"c{i}", 0, {}) for i, t in enumerate(trials)))
    )
    st.apply(Submitting(generation=0, token="tok", trials=trials, executor="scripted"))
    st.apply(Submitted(token="tok", job_ids=("1",)))
    rec = reconcile.Reconciler(paths, load_spec(camp), ScriptedExecutor(poll_interval_s=3600))
    rec.submitted()
    final = {"state": "completed", "token": "tok", "attempt": 1, "exit_code": 0}
    for t in trials:
        os.makedirs(paths.trial_dir(t))
        Path(paths.trial_dir(t), "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    atomic_write_json(f"{paths.trial_dir(trials[0])}/status.json", final)  # not announced
    write_status(paths.trial_dir(trials[1]), final)  # announced, as the runner does
    assert os.listdir(paths.ended(0)) == ["0000-0001.tok.1"]

    def ended(events: list[Any]) -> list[str]:
        return [e.trial for e in events if isinstance(e, TrialEnded) and e.state == "completed"]

    open_trials = [st.trials[t] for t in trials]
    assert ended(rec.reconcile(st, open_trials)) == ["0000-0001"]
    assert os.listdir(paths.ended(0)) == []  # read once: the next listing holds only new ones
    assert rec.reconcile(st, open_trials[:1]) == []  # the sweep is not due yet
    monkeypatch.setattr(reconcile, "STATUS_SWEEP_S", 0.0)
    assert ended(rec.reconcile(st, open_trials[:1])) == ["0000-0000"]


def test_a_trial_has_no_assignment_until_a_second_submission(camp: Path) -> None:
    """The first submission of a trial may run it without an assignment.json (one file less a
    trial); a requeued trial is assigned to its new submission, so the old one cannot."""
    ex = ScriptedExecutor(fates={"0000-0001": [Fate("vanish", ended_as="lost")]})
    assert run(camp, ex).status == "done"
    trials = results(camp) / "gen-0000" / "trials"
    assert not (trials / "0000-0000" / "assignment.json").exists()
    token = load_state(results(camp)).trials["0000-0001"].token
    assert json.loads((trials / "0000-0001" / "assignment.json").read_text()) == {"token": token}

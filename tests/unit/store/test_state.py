"""hpc_agent.store.state: the fold over a real journal's events (replay) and its views: trials,
counts, configurations, the best trial and the champion, a snapshot that later events leave
alone."""

from __future__ import annotations

from hpc_agent.store.events import Requeued, TrialEnded
from hpc_agent.store.journal import Journal
from hpc_agent.store.state import CampaignState, TrialState, replay
from unit.conftest import Finished


def test_replaying_the_journal_gives_the_same_state(finished: Finished) -> None:
    state = replay(Journal(finished.paths.journal).iter())
    assert state.counts() == finished.state.counts()
    assert state.counts()["completed"] == 5 and state.counts(0)["failed"] == 1
    assert state.completed_generations() == 2 and state.next_generation() == 2
    assert [t.trial_id for t in state.trials_of(1)] == ["0001-0000", "0001-0001", "0001-0002"]
    assert state.unfinished() == 0 and state.pending_submissions() == []
    assert state.runs == 1 and state.spec["campaign"]["name"] == "tiny"


def test_configurations_best_and_champion(finished: Finished) -> None:
    state = finished.state
    done = [t for t in state.trials.values() if t.state is TrialState.COMPLETED]
    best = state.best("min")
    assert best is not None and best.objective == min(t.objective or 0 for t in done)
    worst = state.best("max")
    assert worst is not None and worst.objective == max(t.objective or 0 for t in done)
    configs = state.configs()
    assert len({c.config_id for c in configs}) == len(configs)
    failed = state.config("0000-0001")
    assert failed is not None and failed.n_completed == 0 and failed.verdict == "crash"
    assert state.config("nope") is None and len(state.config_keys()) == len(configs)
    champ = state.champion("min")
    assert champ is not None and champ.verdict == "keep"


def test_a_snapshot_is_not_changed_by_later_events(finished: Finished) -> None:
    state = replay(Journal(finished.paths.journal).iter())
    snap = state.snapshot()
    state.apply(Requeued(trial="0000-0001", reason="again", counted=False))
    assert state.trials["0000-0001"].state is TrialState.PLANNED
    assert snap.trials["0000-0001"].state is TrialState.FAILED and snap.counts(0)["failed"] == 1
    state.apply(TrialEnded(trial="0000-0001", state="completed", objective=0.0, reason=""))
    assert state.best("min").trial_id == "0000-0001" and snap.best("min").trial_id != "0000-0001"  # type: ignore[union-attr]
    assert isinstance(CampaignState(), CampaignState) and CampaignState().counts()["completed"] == 0

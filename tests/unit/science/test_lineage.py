"""hpc_agent.science.lineage: a trial's chain of parents, each step with its own code diff."""

from __future__ import annotations

from hpc_agent.science.lineage import champion_lineage, lineage
from unit.conftest import Finished


def test_a_trial_without_parent_is_its_own_lineage(finished: Finished) -> None:
    (step,) = lineage(finished.paths, finished.state, "0000-0000", ["train.py"])
    t = finished.state.trials["0000-0000"]
    assert (step.trial_id, step.generation, step.parent, step.diff) == ("0000-0000", 0, None, "")
    assert step.params == dict(t.params) and step.source == t.source


def test_champion_lineage_ends_at_the_champion(finished: Finished) -> None:
    steps = champion_lineage(finished.paths, finished.state, finished.spec)
    champ = finished.state.champion(finished.spec.campaign.mode)
    assert champ is not None and steps[-1].trial_id == champ.trial_ids[0]
    assert steps[-1].objective == champ.objective and steps[-1].n == champ.n_completed


def test_unknown_trial_has_no_lineage(finished: Finished) -> None:
    assert lineage(finished.paths, finished.state, "9999-9999", ["train.py"]) == []

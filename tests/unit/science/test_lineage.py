"""hpc_agent.science.lineage: a trial's chain of parents, each step with its own code diff."""

from __future__ import annotations

import shutil
from pathlib import Path

from hpc_agent.loop.prepare import base_files, prepare_trial
from hpc_agent.science.lineage import champion_lineage, lineage
from hpc_agent.store import events as ev
from hpc_agent.store.events import Planned, PlannedTrial
from hpc_agent.store.journal import Journal
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import load_state
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


def test_a_patched_child_shows_its_own_diff(finished: Finished, tmp_path: Path) -> None:
    results = tmp_path / "r"
    shutil.copytree(finished.results, results)
    paths = ResultsPaths(results)
    base = (paths.base / "train.py").read_text()
    line = base.splitlines()[1]
    edit = {"file": "train.py", "search": line, "replace": line + "  # changed"}
    child = PlannedTrial(
        "0002-0000", 0, "0002-0000", 0, {"x": 0.3, "mode": "a"}, "a code change", parent="0000-0000",
        source="llm", patch=(edit,),
    )  # fmt: skip
    Journal(paths.journal).write(
        [ev.Planning(generation=2, planner="llm"), Planned(2, "llm", trials=(child,))]
    )
    state = load_state(results)
    prepare_trial(
        paths,
        state.trials["0002-0000"],
        finished.spec.experiment,
        base_files(paths, finished.spec.experiment),
        [],
    )
    first, second = lineage(paths, state, "0002-0000", ["train.py"])
    assert (first.trial_id, first.diff) == ("0000-0000", "")  # the base code
    assert (second.trial_id, second.parent, second.hypothesis) == ("0002-0000", "0000-0000", "a code change")
    assert f"-{line}\n+{line}  # changed\n" in second.diff

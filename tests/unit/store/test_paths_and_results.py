"""hpc_agent.store.paths (every path of a results folder) and hpc_agent.store.results (a
folder's ownership, the driver lock, the state loaded, trials named by the user)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_campaign

from hpc_agent.config.spec import load_spec
from hpc_agent.errors import UserError
from hpc_agent.store.paths import ResultsPaths, array_folder_name
from hpc_agent.store.results import (
    acquire_driver_lock,
    analyses_before,
    check_results,
    driver_info,
    load_state,
    open_results,
    resolve_trial,
    spec_of,
)
from unit.conftest import Finished


def test_the_layout(tmp_path: Path) -> None:
    p = ResultsPaths(tmp_path)
    assert p.journal == tmp_path / "journal.jsonl" and p.trials_table == tmp_path / "trials.parquet"
    assert p.generation(3) == tmp_path / "gen-0003" and p.plan(3) == tmp_path / "gen-0003" / "plan.json"
    assert p.trial("0003-0007").root == tmp_path / "gen-0003" / "trials" / "0003-0007"
    assert p.trial_dir("0003-0007") == str(p.trial("0003-0007").root)
    assert p.ended(3) == tmp_path / "gen-0003" / "ended"
    assert (
        p.array_folder(3, "ab")
        == tmp_path / "submitit" / array_folder_name(3, "ab")
        == p.submitit / "g0003.ab"
    )
    assert p.run_provenance(2).name == "run-0002.json"


def test_a_folder_belongs_to_one_campaign(finished: Finished, tmp_path: Path) -> None:
    assert check_results(finished.spec, finished.results) == []
    other = load_spec(write_campaign(tmp_path / "other", metric="acc"))
    with pytest.raises(UserError, match="belongs to a different campaign spec"):
        check_results(other, finished.results)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(UserError, match="is not an hpc-agent results folder"):
        check_results(finished.spec, tmp_path / "junk")
    journal, messages = open_results(finished.spec, tmp_path / "new")
    assert (
        journal.exists()
        and messages == []
        and load_state(tmp_path / "new").spec["campaign"]["name"] == "tiny"
    )
    with pytest.raises(UserError):
        load_state(tmp_path / "nothing-here")


def test_the_driver_lock_says_who_holds_it(tmp_path: Path) -> None:
    paths = ResultsPaths(tmp_path)
    assert driver_info(paths) is None
    lock = acquire_driver_lock(paths)
    try:
        info = driver_info(paths)
        assert info is not None and info["alive"] is True
        with pytest.raises(UserError):
            acquire_driver_lock(paths)
    finally:
        lock.release()
    assert driver_info(paths) is None


def test_trials_named_by_the_user_and_the_recorded_spec(finished: Finished) -> None:
    state = finished.state
    best = state.best("min")
    assert best is not None and resolve_trial(state, "best", "min") == best.trial_id
    assert resolve_trial(state, "1-2", "min") == "0001-0002" == resolve_trial(state, "0001-0002", "min")
    with pytest.raises(UserError, match=r"trial '7-7': no such trial in this campaign \(6 trials: 0000-0000"):
        resolve_trial(state, "7-7", "min")
    assert spec_of(state).to_dict() == finished.spec.to_dict()
    analyses = analyses_before(finished.paths, state, 2)
    assert [g for g, _ in analyses] == [0, 1] and analyses[0][1].startswith("# Generation 0")

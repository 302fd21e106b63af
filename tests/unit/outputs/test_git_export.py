"""hpc_agent.outputs.git_export on its own, over the finished campaign of tests/unit/conftest.py
(random planner, editable train.py, verdicts journaled): which configurations become commits,
what their messages say, and the repository export_git writes (read back with git itself)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hpc_agent.errors import UserError
from hpc_agent.outputs.git_export import export_git, keep_message, kept_configs, metric_text, plan_commits

from ..conftest import Finished


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_the_kept_configurations_in_the_order_they_were_kept(finished: Finished) -> None:
    kept = kept_configs(finished.state)
    assert kept, "the first configuration to complete is always kept"
    assert all(c.verdict == "keep" and not c.purpose for c in kept)
    ats = [float(finished.state.verdicts[c.config_id]["at"]) for c in kept]
    assert ats == sorted(ats)
    assert kept[-1].config_id == finished.state.champion_id


def test_one_commit_for_the_base_and_one_per_keep(finished: Finished) -> None:
    commits = plan_commits(finished.paths, finished.state, finished.spec)
    kept = kept_configs(finished.state)
    assert len(commits) == 1 + len(kept)
    assert commits[0].message.startswith("base: ")
    for commit, c in zip(commits[1:], kept):
        assert commit.message.startswith(f"{c.config_id}: ")
        assert f"hpc-agent-config: {c.config_id}" in commit.message
        assert metric_text(c) in commit.message
        assert set(commit.files) == {"train.py"} and all(p.is_file() for p in commit.files.values())
    assert [c.date for c in commits] == sorted(c.date for c in commits)


def test_metric_text_says_mean_se_and_n(finished: Finished) -> None:
    c = kept_configs(finished.state)[0]
    if len(c.values) > 1:
        assert "mean ± SE" in metric_text(c) and f"n = {len(c.values)}" in metric_text(c)
    else:
        assert "n = 1" in metric_text(c)
    assert c.config_id in keep_message(c, finished.spec)


def test_the_repository_holds_the_story_and_a_second_export_is_identical(
    finished: Finished, tmp_path: Path
) -> None:
    first = export_git(finished.results, tmp_path / "log")
    log = _git(first.dest, "log", "--format=%s", first.branch).splitlines()
    assert len(log) == len(first.commits) == 1 + len(first.kept)
    assert log[-1].startswith("base: ") and log[0].startswith(f"{first.kept[-1]}: ")
    assert (
        _git(first.dest, "show", f"{first.branch}:train.py") == (finished.paths.base / "train.py").read_text()
    )
    again = export_git(finished.results, tmp_path / "again")
    assert again.commits == first.commits  # deterministic: dates and authors from the journal


def test_an_export_into_a_folder_that_is_not_empty_is_refused(finished: Finished, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    with pytest.raises(UserError) as err:
        export_git(finished.results, tmp_path / "taken")
    assert "not an empty folder" in err.value.message
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"

"""hpc_agent.science.provenance: per driver run, the code's git commit, dirt and diff."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hpc_agent.science.provenance import code_provenance, read_run_provenance, write_run_provenance
from hpc_agent.store.paths import ResultsPaths


def git(where: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(where), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
    )


def test_a_dirty_repository_is_recorded_with_its_diff(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert code_provenance(work)[0]["git"] in ("not a repository", "ok")  # tmp may sit in a repository
    git(work, "init", "-q")
    (work / "train.py").write_text("a = 1\n")
    git(work, "add", "train.py")
    git(work, "commit", "-qm", "first")
    record, diff = code_provenance(work)
    assert record["git"] == "ok" and len(record["commit"]) == 40 and record["dirty"] is False and diff == ""
    (work / "train.py").write_text("a = 2\n")
    results = work / "results"
    results.mkdir()
    (results / "journal.jsonl").write_text("{}\n")
    record, diff = code_provenance(work, exclude=[results])
    assert record["dirty"] is True and record["changed"] == [" M train.py"]  # the results folder left out
    assert "-a = 1\n+a = 2\n" in diff
    paths = ResultsPaths(results)
    path = write_run_provenance(paths, 1, work, extra={"argv": ["run"]})
    assert path == paths.run_provenance(1) and paths.run_provenance(1, ".diff").read_text() == diff
    runs = read_run_provenance(paths)
    assert list(runs) == [1] and runs[1]["commit"] == record["commit"] and runs[1]["argv"] == ["run"]
    assert read_run_provenance(ResultsPaths(tmp_path / "none")) == {}

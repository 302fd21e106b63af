"""hpc_agent.edits.patches: search/replace edits on a trial's own copy; the code folder that
mirrors the workdir with links, the editable files copied."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpc_agent.edits.patches import (
    apply_patch,
    build_code_dir,
    check_path,
    read_files,
    snapshot,
    unified_diff,
    workdir_entries,
)

CODE = {"train.py": "lr = 0.1\nact = relu\nact2 = relu\n"}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("/etc/passwd", "is an absolute path"),
        ("~/x.py", "is an absolute path"),
        ("../train.py", "leaves the workdir"),
        ("other.py", "is not editable"),
        ("", "is not a file name"),
        (3, "is not a file name"),
    ],
)
def test_check_path_refuses_what_may_not_change(name: object, why: str) -> None:
    assert why in (check_path(name, ["train.py"]) or "")


def test_check_path_takes_an_editable_file() -> None:
    assert check_path("train.py", ["train.py"]) is None
    assert check_path("./train.py", ["train.py"]) is None  # normalized


def test_edits_apply_in_order_and_each_search_must_be_unique() -> None:
    new, errors = apply_patch(
        CODE, [{"file": "train.py", "search": "lr = 0.1", "replace": "lr = 0.2"}], ["train.py"]
    )
    assert errors == [] and new["train.py"].startswith("lr = 0.2\n")
    same, errors = apply_patch(
        CODE, [{"file": "train.py", "search": "= relu", "replace": "= gelu"}], ["train.py"]
    )
    assert same == CODE and errors == [
        "edit 1: the search text occurs 2 times in train.py; include more context"
    ]


def test_one_bad_edit_invalidates_the_whole_patch_and_says_why() -> None:
    edits = [
        {"file": "train.py", "search": "lr = 0.1", "replace": "lr = 0.2"},
        {"file": "train.py", "search": "lr = 0.3", "replace": "x"},
        {"file": "train.py", "search": "x", "replace": "y", "why": "?"},
        "not an edit",
        {"file": "train.py", "search": "", "replace": "y"},
    ]
    new, errors = apply_patch(CODE, edits, ["train.py"])
    assert new == CODE
    assert errors == [
        "edit 2: the search text was not found in train.py; the closest line is 'lr = 0.2' "
        "(copy it exactly, including indentation)",
        "edit 3: unknown key(s) ['why']; an edit is one of {file, search, replace}; {file, content}; "
        "{file, diff}",
        "edit 4: expected an object with keys ['file', 'search', 'replace']",
        "edit 5: 'search' must be a non-empty string (text copied from train.py)",
    ]
    assert apply_patch(CODE, {"file": "x"}, ["train.py"])[1] == ["patch must be a list of edits, got dict"]  # type: ignore[arg-type]


def test_unified_diff_shows_only_changed_files() -> None:
    after = {"train.py": CODE["train.py"].replace("0.1", "0.2"), "same.py": "x\n"}
    diff = unified_diff({**CODE, "same.py": "x\n"}, after)
    assert diff.splitlines()[:2] == ["--- a/train.py", "+++ b/train.py"]
    assert "-lr = 0.1\n+lr = 0.2\n" in diff and "same.py" not in diff
    assert unified_diff(CODE, CODE) == ""


def test_the_code_folder_links_everything_but_the_editable_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "pkg").mkdir(parents=True)
    (work / "train.py").write_text(CODE["train.py"])
    (work / "train.py").chmod(0o755)
    (work / "data.csv").write_text("1,2\n")
    (work / "pkg" / "model.py").write_text("m = 1\n")
    (work / "pkg" / "util.py").write_text("u = 1\n")
    (work / "results").mkdir()
    assert workdir_entries(work, skip=[work / "results"]) == ["data.csv", "pkg", "train.py"]
    base = tmp_path / "base"
    snapshot(work, ["train.py", "pkg/model.py"], base)
    assert read_files(base, ["train.py", "pkg/model.py"]) == {
        "train.py": CODE["train.py"],
        "pkg/model.py": "m = 1\n",
    }
    dest = tmp_path / "code"
    build_code_dir(work, {"train.py": "patched\n", "pkg/model.py": "m = 2\n"}, dest, skip=[work / "results"])
    assert sorted(os.listdir(dest)) == ["data.csv", "pkg", "train.py"]
    assert (dest / "data.csv").is_symlink() and not (dest / "train.py").is_symlink()
    assert (dest / "train.py").read_text() == "patched\n" and (
        dest / "train.py"
    ).stat().st_mode & 0o777 == 0o755
    assert (dest / "pkg").is_dir() and not (dest / "pkg").is_symlink()
    assert (dest / "pkg" / "util.py").is_symlink() and (dest / "pkg" / "model.py").read_text() == "m = 2\n"
    assert (work / "train.py").read_text() == CODE["train.py"]  # the original untouched

"""Code changes, applied to a trial's own copy of the editable files, safely.

A patch is a list of search/replace edits::

    [{"file": "train.py", "search": "nn.ReLU()", "replace": "nn.GELU()"}]

Each ``search`` must occur exactly once in the file as it stands (after the edits before it),
so an edit is never applied to the wrong place. Only files listed in ``[experiment] editable``
may change; absolute paths and ``..`` are refused. The user's originals are never touched:
a trial's ``code/`` folder mirrors the workdir with symbolic links, except for the editable
files, which are real copies (from the campaign's snapshot, or from the parent trial whose
code the patch edits, then patched).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

EDIT_KEYS = ("file", "search", "replace")


def check_path(name: object, editable: Sequence[str]) -> str | None:
    """Why ``name`` may not be edited, or None when it may."""
    if not isinstance(name, str) or not name:
        return f"file {name!r} is not a file name"
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("~"):
        return f"file {name!r} is an absolute path; only these files may change: {list(editable)}"
    if ".." in p.parts:
        return f"file {name!r} leaves the workdir ('..'); only these files may change: {list(editable)}"
    if str(p) not in editable:
        return f"file {name!r} is not editable; only these files may change: {list(editable)}"
    return None


def apply_patch(
    files: Mapping[str, str], edits: Sequence[Mapping[str, Any]], editable: Sequence[str]
) -> tuple[dict[str, str], list[str]]:
    """Apply edits to a copy of ``files`` (name -> text). Returns (new files, errors);
    with any error the patch as a whole is invalid and the files are returned unchanged."""
    out = dict(files)
    errors: list[str] = []
    if not isinstance(edits, (list, tuple)):
        return dict(files), [f"patch must be a list of edits, got {type(edits).__name__}"]
    for i, edit in enumerate(edits):
        where = f"edit {i + 1}"
        if not isinstance(edit, Mapping):
            errors.append(f"{where}: expected an object with keys {list(EDIT_KEYS)}")
            continue
        unknown = [k for k in edit if k not in EDIT_KEYS]
        if unknown:
            errors.append(f"{where}: unknown key(s) {unknown}; valid keys are {list(EDIT_KEYS)}")
            continue
        name = edit.get("file")
        bad = check_path(name, editable)
        if bad:
            errors.append(f"{where}: {bad}")
            continue
        name = str(PurePosixPath(str(name)))
        search, replace = edit.get("search"), edit.get("replace")
        if not isinstance(search, str) or not search:
            errors.append(f"{where}: 'search' must be a non-empty string (text copied from {name})")
            continue
        if not isinstance(replace, str):
            errors.append(f"{where}: 'replace' must be a string")
            continue
        text = out.get(name)
        if text is None:
            errors.append(f"{where}: {name} has no content to edit")
            continue
        count = text.count(search)
        if count == 0:
            hint = _closest_line(text, search)
            errors.append(
                f"{where}: the search text was not found in {name}"
                + (f"; the closest line is {hint!r}" if hint else "")
                + " (copy it exactly, including indentation)"
            )
            continue
        if count > 1:
            errors.append(f"{where}: the search text occurs {count} times in {name}; include more context")
            continue
        out[name] = text.replace(search, replace, 1)
    if errors:
        return dict(files), errors
    return out, []


def _closest_line(text: str, search: str) -> str:
    first = next((ln for ln in search.splitlines() if ln.strip()), "")
    if not first:
        return ""
    match = difflib.get_close_matches(first, text.splitlines(), n=1, cutoff=0.6)
    return match[0].strip() if match else ""


def unified_diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    """The change from ``before`` to ``after`` (file name -> text) as a unified diff (patch.diff)."""
    chunks: list[str] = []
    for name in sorted(after):
        old, new = before.get(name, ""), after[name]
        if old == new:
            continue
        chunks.extend(
            difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{name}", f"b/{name}"
            )
        )
    return "".join(chunks)


def read_files(root: Path, names: Sequence[str]) -> dict[str, str]:
    """The text of these files under ``root``."""
    return {n: (root / n).read_text(encoding="utf-8") for n in names}


def snapshot(workdir: Path, editable: Sequence[str], dest: Path) -> None:
    """Copy the editable files of the workdir (the campaign's base code) into ``dest``."""
    for name in editable:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(workdir / name, target)


def workdir_entries(workdir: Path, skip: Sequence[Path] = ()) -> list[str]:
    """What a trial's code folder mirrors: the workdir's entries, sorted, without ``skip``
    (the results folder: a campaign inside its own workdir does not recurse). Read once for a
    generation's trials."""
    here = workdir.resolve()
    skip_names = {p.resolve().name for p in skip if p.resolve().parent == here}
    return [e for e in sorted(os.listdir(workdir)) if e not in skip_names]


def build_code_dir(
    workdir: Path,
    files: Mapping[str, str],
    dest: str | os.PathLike[str],
    skip: Sequence[Path] = (),
    entries: Sequence[str] | None = None,
) -> None:
    """Make ``dest`` a mirror of ``workdir`` where ``files`` (relative name -> text) are real
    files and everything else is a symbolic link to the original. ``skip``: paths (such as the
    results folder) never linked, so a campaign inside its own workdir does not recurse;
    ``entries``: :func:`workdir_entries` already read. The names in ``files`` are normalized
    relative paths (the spec makes them so): split on "/", with strings rather than pathlib
    (a generation builds thousands of these folders)."""
    src_dir, dest_dir = os.fspath(workdir), os.fspath(dest)
    try:
        os.mkdir(dest_dir)
    except OSError:  # there already, or its parent is not
        os.makedirs(dest_dir, exist_ok=True)
    dirs_with_files = {n.split("/", 1)[0] for n in files if "/" in n}
    for entry in workdir_entries(workdir, skip) if entries is None else entries:
        if entry in files:
            continue
        src = f"{src_dir}/{entry}"
        if entry in dirs_with_files and os.path.isdir(src):
            inner = {n.split("/", 1)[1]: text for n, text in files.items() if n.startswith(f"{entry}/")}
            build_code_dir(Path(src), inner, f"{dest_dir}/{entry}", skip)
            continue
        with contextlib.suppress(FileExistsError):  # a half-built folder of a killed driver
            os.symlink(src, f"{dest_dir}/{entry}")
    for name, text in files.items():
        if "/" in name:
            continue  # written by the recursive call for its folder
        target = f"{dest_dir}/{name}"
        if os.path.islink(target):
            os.unlink(target)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            os.chmod(target, os.stat(f"{src_dir}/{name}").st_mode & 0o777)
        except OSError:
            pass

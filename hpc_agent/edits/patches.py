"""Code changes, applied to a trial's own copy of the editable files, safely.

A patch is a list of edits, each of one of three forms (models write all three; which one a
model gets right is measured in docs/benchmarks.md)::

    {"file": "train.py", "search": "nn.ReLU()", "replace": "nn.GELU()"}    # search/replace
    {"file": "train.py", "content": "<the whole new file>"}                # whole file
    {"file": "train.py", "diff": "@@ -3,1 +3,1 @@\n-a = 1\n+a = 2\n"}       # unified diff

Each form is declared once (:class:`SearchReplace`, :class:`WholeFile`, :class:`Diff`, with
:mod:`hpc_agent.config.schema`): the same declaration checks an edit's keys and types and
gives the JSON schema of the edits the LLM is asked for. Each ``search`` must occur exactly
once in the file as it stands (after the edits before it), so an edit is never applied to
the wrong place. A diff's hunks are placed by their lines (context and removed), not by
their line numbers, which models get wrong; the numbers only choose between several places.
:func:`split_diff` turns a whole unified diff (``--- a/f``, ``+++ b/f`` headers) into one
edit per file. Only files listed in ``[experiment] editable`` may change; absolute paths and
``..`` are refused. :func:`compile_errors` says which patched Python files do not compile
(the LLM planner refuses such a patch before it costs a job). The user's originals are never touched:
a trial's ``code/`` folder mirrors the workdir with symbolic links, except for the editable
files, which are real copies (from the campaign's snapshot, or from the parent trial whose
code the patch edits, then patched).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from hpc_agent.config.schema import Check, Section, Words, problem, validated
from hpc_agent.errors import UserError


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


def _editable(name: Any, info: Any) -> Any:
    """An edit's ``file``: a relative name listed in ``[experiment] editable`` (the
    context's ``editable``), normalized (``./train.py`` is ``train.py``)."""
    bad = check_path(name, info.context["editable"])
    if bad:
        raise problem(f": {bad}")
    return str(PurePosixPath(name))


def _filled(key: str, expected: str) -> Check:
    """The check that text ``key`` is not blank; ``expected`` says what it must be (``{name}``:
    the edited file)."""

    def check(text: str, info: Any) -> str:
        if not text.strip():
            raise problem(f": '{key}' must be {expected.format(name=info.data.get('file', 'the file'))}")
        return text

    return Check(check)


EditableFile = Annotated[str, Check(_editable, before=True)]


@dataclass(frozen=True)
class SearchReplace(Section):
    """Replace the one occurrence of ``search`` in ``file`` by ``replace``."""

    file: EditableFile
    search: Annotated[
        str,
        _filled("search", "a non-empty string (text copied from {name})"),
        Words(expects="a non-empty string (text copied from the file)"),
    ]
    replace: str


@dataclass(frozen=True)
class WholeFile(Section):
    """Replace ``file`` by ``content``, the whole of its new text."""

    file: EditableFile
    content: Annotated[str, _filled("content", "the whole new text of {name}, not empty")]


@dataclass(frozen=True)
class Diff(Section):
    """Apply ``diff``'s hunks to ``file``, placed by their lines (:func:`apply_diff`)."""

    file: EditableFile
    diff: Annotated[str, _filled("diff", "a non-empty unified diff (@@ hunks with ' ', '-' and '+' lines)")]


Edit = SearchReplace | WholeFile | Diff
EDIT_FORMS: dict[str, type[Edit]] = {"search_replace": SearchReplace, "whole_file": WholeFile, "diff": Diff}
EDIT_KEYS = tuple(SearchReplace.valid_keys())  # the first form, and the default
ALL_EDIT_KEYS = tuple(dict.fromkeys(k for form in EDIT_FORMS.values() for k in form.valid_keys()))
_HUNK = re.compile(r"^@@+ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_HEADERS = ("--- ", "+++ ", "diff --git ", "index ", "new file mode", "deleted file mode", "similarity ")


def edit_form(edit: Mapping[str, Any]) -> str | None:
    """Which form an edit has (a key of :data:`EDIT_FORMS`), by its keys; None for none."""
    keys = set(edit) - {"file"}
    for form, declared in EDIT_FORMS.items():
        if keys == set(declared.valid_keys()) - {"file"}:
            return form
    return None


def normalize_edit(edit: Mapping[str, Any]) -> dict[str, Any]:
    """The edit with its form's keys only, in their order (as journaled)."""
    keys = EDIT_FORMS[edit_form(edit) or "search_replace"].valid_keys()
    return {k: (str(PurePosixPath(str(edit[k]))) if k == "file" else edit[k]) for k in keys}


def read_edit(edit: Any, editable: Sequence[str], where: str = "edit") -> tuple[Edit | None, str]:
    """``edit`` read into its form's declaration (picked by its keys): (the edit, "") or
    (None, what is wrong with it, after ``where``)."""
    if not isinstance(edit, Mapping):
        return None, f"{where}: expected an object with keys {list(EDIT_KEYS)}"
    unknown = [k for k in edit if k not in ALL_EDIT_KEYS]
    form = edit_form(edit)
    if unknown or form is None:
        return None, f"{where}: {_form_error(edit, unknown)}"
    try:
        return validated(EDIT_FORMS[form], edit, where, context={"editable": editable}, sep=": "), ""
    except UserError as e:
        return None, e.message


def apply_patch(
    files: Mapping[str, str], edits: Sequence[Mapping[str, Any]], editable: Sequence[str]
) -> tuple[dict[str, str], list[str]]:
    """Apply edits to a copy of ``files`` (name -> text). Returns (new files, errors);
    with any error the patch as a whole is invalid and the files are returned unchanged."""
    out = dict(files)
    errors: list[str] = []
    if not isinstance(edits, (list, tuple)):
        return dict(files), [f"patch must be a list of edits, got {type(edits).__name__}"]
    for i, raw in enumerate(edits):
        where = f"edit {i + 1}"
        edit, error = read_edit(raw, editable, where)
        if edit is None:
            errors.append(error)
            continue
        text = out.get(edit.file)
        if text is None:
            errors.append(f"{where}: {edit.file} has no content to edit")
            continue
        new, err = _apply_one(edit, text)
        if err:
            errors.append(f"{where}: {err}")
        else:
            out[edit.file] = new
    if errors:
        return dict(files), errors
    return out, []


def _form_error(edit: Mapping[str, Any], unknown: Sequence[str]) -> str:
    forms = "; ".join("{" + ", ".join(form.valid_keys()) + "}" for form in EDIT_FORMS.values())
    head = f"unknown key(s) {list(unknown)}" if unknown else f"keys {sorted(edit)} mix forms"
    return f"{head}; an edit is one of {forms}"


def _apply_one(edit: Edit, text: str) -> tuple[str, str]:
    """(the new text, "") or (text, why the edit does not apply)."""
    name = edit.file
    if isinstance(edit, WholeFile):
        content = unfence(edit.content)
        return content if content.endswith("\n") or not text.endswith("\n") else content + "\n", ""
    if isinstance(edit, Diff):
        return apply_diff(text, unfence(edit.diff), name)
    search, replace = edit.search, edit.replace
    count = text.count(search)
    if count == 0:
        hint = _closest_line(text, search)
        return text, (
            f"the search text was not found in {name}"
            + (f"; the closest line is {hint!r}" if hint else "")
            + " (copy it exactly, including indentation)"
        )
    if count > 1:
        return text, f"the search text occurs {count} times in {name}; include more context"
    return text.replace(search, replace, 1), ""


def unfence(text: str) -> str:
    """``text`` without a Markdown code fence around it (models fence code out of habit)."""
    lines = text.strip("\n").splitlines()
    if len(lines) >= 2 and lines[0].lstrip().startswith("```") and lines[-1].strip() == "```":
        return "\n".join(lines[1:-1]) + "\n"
    return text


def _hunks(diff: str) -> list[tuple[int | None, list[str], list[str]]]:
    """(old start line or None, old lines, new lines) of each hunk; lines without a ' ', '-'
    or '+' prefix are read as context (models drop the space of a context line)."""
    hunks: list[tuple[int | None, list[str], list[str]]] = []
    old: list[str] = []
    new: list[str] = []
    start: int | None = None
    started = False
    for line in diff.rstrip("\n").splitlines():  # a blank line after the diff is no context line
        m = _HUNK.match(line)
        if m or line.startswith("@@"):
            if started and (old or new):
                hunks.append((start, old, new))
            old, new, started = [], [], True
            start = int(m.group(1)) if m else None
            continue
        if not started and line.startswith(_HEADERS):
            continue
        if line.startswith("\\"):  # "\ No newline at end of file"
            continue
        started = True
        if line.startswith("-"):
            old.append(line[1:])
        elif line.startswith("+"):
            new.append(line[1:])
        else:
            ctx = line[1:] if line.startswith(" ") else line
            old.append(ctx)
            new.append(ctx)
    if old or new:
        hunks.append((start, old, new))
    return hunks


def apply_diff(text: str, diff: str, name: str = "the file") -> tuple[str, str]:
    """Apply a unified diff's hunks to ``text``: (new text, "") or (text, why not)."""
    hunks = _hunks(diff)
    if not hunks or all(o == n for _, o, n in hunks):
        return text, "the diff has no '-' or '+' line: it changes nothing"
    lines = text.splitlines()
    end_nl = text.endswith("\n")
    for k, (start, old, new) in enumerate(hunks, 1):
        where = f"hunk {k}" if len(hunks) > 1 else "the hunk"
        at, err = _place(lines, old, start, name)
        if err:
            return text, f"{where}: {err}"
        lines[at : at + len(old)] = new
    return "\n".join(lines) + ("\n" if end_nl or not text else ""), ""


def _place(lines: list[str], old: list[str], start: int | None, name: str) -> tuple[int, str]:
    """Where ``old`` (a hunk's context and removed lines) stands in ``lines``."""
    if not old:
        if start is None:
            return 0, "it only adds lines and has no '@@ -N' line number to say where"
        return min(max(start, 0), len(lines)), ""
    n = len(old)
    for norm in (_same, str.rstrip, str.strip):  # exact, then trailing blanks, then indentation
        want = [norm(x) for x in old]
        have = [norm(x) for x in lines]
        found = [i for i in range(len(lines) - n + 1) if have[i : i + n] == want]
        if found:
            if len(found) > 1 and start is None:
                return (
                    0,
                    f"its lines occur {len(found)} times in {name}; add context lines or the '@@ -N' line",
                )
            return min(found, key=lambda i: abs(i + 1 - (start or 0))), ""
    hint = _closest_line("\n".join(lines), "\n".join(old))
    return 0, (
        f"its context and '-' lines were not found in {name}"
        + (f"; the closest line is {hint!r}" if hint else "")
        + " (copy them exactly, one ' ' or '-' prefix a line)"
    )


def _same(line: str) -> str:
    return line


def split_diff(text: str) -> list[dict[str, str]] | None:
    """A whole unified diff (``--- a/f`` / ``+++ b/f`` headers) as one ``{"file", "diff"}``
    edit per file; None when it names no file."""
    edits: list[dict[str, str]] = []
    current: list[str] = []
    name: str | None = None
    for line in unfence(text).splitlines():
        if line.startswith("+++ "):
            if name is not None and current:
                edits.append({"file": name, "diff": "\n".join(current) + "\n"})
            target = line[4:].split("\t")[0].strip()
            name = target[2:] if target.startswith(("a/", "b/")) else target
            current = []
        elif line.startswith(("--- ", "diff --git ", "index ")) and not current:
            continue
        elif name is not None:
            if line.startswith(("--- ", "diff --git ")):
                continue
            current.append(line)
    if name is not None and current:
        edits.append({"file": name, "diff": "\n".join(current) + "\n"})
    return edits or None


def compile_errors(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Why each Python file a patch changed does not compile (``compile()``, nothing run)."""
    errors = []
    for name in sorted(after):
        if not name.endswith(".py") or after[name] == before.get(name):
            continue
        try:
            compile(after[name], name, "exec", dont_inherit=True)
        except SyntaxError as e:
            where = f"line {e.lineno}" if e.lineno else "somewhere"
            text = (e.text or "").strip()
            errors.append(
                f"the patched {name} does not compile: {e.msg} ({where}"
                + (f": {text!r}" if text else "")
                + "); fix the edit so that the file is valid Python"
            )
        except ValueError as e:  # null bytes
            errors.append(f"the patched {name} does not compile: {e}")
    return errors


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

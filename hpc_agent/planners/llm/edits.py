"""The code edits the LLM is asked for, and the check of the ones it writes.

``[planner] edit_format`` picks the form the prompt asks for and the reply's schema allows
(``search_replace``, ``whole_file``, ``diff``, or ``any`` of them); whatever form a model
writes is accepted all the same (:mod:`hpc_agent.edits.patches` applies all three), and a patch
given as one unified-diff string is split into one edit per file. A patch is accepted only
when it applies to the champion's files, changes something, and leaves every Python file it
touches compiling (:func:`~hpc_agent.edits.patches.compile_errors`): a syntax error goes back to the
model with the compiler's message, like any invalid edit, instead of costing a job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hpc_agent.config.schema import json_schema
from hpc_agent.edits.patches import EDIT_FORMS, apply_patch, compile_errors, normalize_edit, split_diff

WHOLE_FILE_MAX_LINES = 300  # the prompt offers whole-file replacement for files up to this long
TOKENS_PER_LINE = 12  # a line of code, in tokens, when a reply must hold a whole file

_RULES = {
    "search_replace": '{"file": "<editable file>", "search": "<text copied exactly from the current file, '
    'occurring once>", "replace": "<new text>"}',
    "whole_file": '{"file": "<editable file>", "content": "<the whole new text of the file>"}',
    "diff": '{"file": "<editable file>", "diff": "<a unified diff of the file: @@ hunks whose lines start '
    "with ' ' (context, copied exactly), '-' (removed) or '+' (added)>\"}",
}


def forms(edit_format: str) -> list[str]:
    """The edit forms asked for (``any``: all three)."""
    return list(_RULES) if edit_format == "any" else [edit_format]


def patch_rule(editable: Sequence[str], edit_format: str) -> str:
    """The reply format's line about "patch"."""
    if not editable:
        return '- No file is editable in this campaign: "patch" must be null.'
    asked = forms(edit_format)
    if len(asked) == 1:
        shape = f"a list of edits {_RULES[asked[0]]}"
    else:
        shape = (
            "a list of edits, each one of: "
            + "; or ".join(_RULES[f] for f in asked)
            + (f" (whole files only for files under {WHOLE_FILE_MAX_LINES} lines)")
        )
    return (
        f'- "patch" is null, or {shape}, applied in order to the champion\'s version of the files shown. '
        f"Only these files may change: {json.dumps(list(editable))}. A patched Python file must compile."
    )


def whole_file_tokens(workdir: str, editable: Sequence[str], edit_format: str) -> int:
    """The extra room a reply needs per proposal when whole files may be written: the longest
    editable file (at most :data:`WHOLE_FILE_MAX_LINES` lines), in tokens; 0 otherwise."""
    if edit_format not in ("whole_file", "any") or not editable:
        return 0
    longest = 0
    for name in editable:
        try:
            with open(f"{workdir}/{name}", encoding="utf-8", errors="replace") as f:
                longest = max(longest, sum(1 for _ in f))
        except OSError:
            continue
    return min(longest, WHOLE_FILE_MAX_LINES) * TOKENS_PER_LINE


def edit_schema(editable: Sequence[str], edit_format: str) -> dict[str, Any]:
    """The JSON schema of "patch" for the forms asked for, from their declarations
    (:data:`~hpc_agent.edits.patches.EDIT_FORMS`), each ``file`` one of the editable files."""
    if not editable:
        return {"type": "null"}
    items = [json_schema(EDIT_FORMS[form], enums={"file": editable}) for form in forms(edit_format)]
    item = items[0] if len(items) == 1 else {"anyOf": items}
    return {"anyOf": [{"type": "array", "items": item}, {"type": "null"}]}


def read_patch(
    raw: Any, files: Mapping[str, str], editable: Sequence[str]
) -> tuple[tuple[dict[str, Any], ...] | None, list[str]]:
    """A proposal's "patch" checked against the champion's ``files``: (the edits as journaled,
    or None for no patch; the errors to send back)."""
    if raw is None or raw in ([], (), "", {}):
        return None, []
    if isinstance(raw, str):
        split = split_diff(raw)
        if split is None:
            return None, [
                "a patch given as text must be a unified diff with '--- a/FILE' and '+++ b/FILE' "
                "lines; or give a list of edits"
            ]
        raw = split
    if isinstance(raw, Mapping):
        raw = [raw]  # one edit, without its list
    if not isinstance(raw, (list, tuple)):
        return None, [f"expected a list of edits or null, got {type(raw).__name__}"]
    if not editable:
        return None, ["no file is editable in this campaign: set patch to null"]
    new, errors = apply_patch(files, raw, editable)
    if errors:
        return None, errors
    if new == files:
        return None, ["the edits change nothing"]
    errors = compile_errors(files, new)
    if errors:
        return None, errors
    return tuple(normalize_edit(e) for e in raw), []


def edit_text(e: Mapping[str, Any], short: Callable[[str, int], str]) -> str:
    """One edit in a line of the history (``short``: the prompt's cutter)."""

    def first(s: Any) -> str:
        lines = [ln.strip() for ln in str(s).splitlines() if ln.strip()]
        more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
        return short(lines[0] if lines else "", 100) + more

    if "content" in e:
        return f"{e.get('file')}: the whole file ({len(str(e['content']).splitlines())} lines)"
    if "diff" in e:
        lines = str(e["diff"]).splitlines()
        added = [ln[1:] for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
        removed = [ln[1:] for ln in lines if ln.startswith("-") and not ln.startswith("---")]
        return f"{e.get('file')}: diff `{first(chr(10).join(removed))}` -> `{first(chr(10).join(added))}`"
    return f"{e.get('file')}: `{first(e.get('search'))}` -> `{first(e.get('replace'))}`"

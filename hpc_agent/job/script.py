"""The user's script, unchanged: parameters into its command line, metrics out of its output.

Standard library only: the driver fills a trial's command here when it prepares the trial,
and the runner (inside the job) reads the metrics out of the command's output here.

Parameters into the command (``[experiment] command``), filled when the trial is prepared:

==================  ========================================================================
``{name}``          the value of parameter ``name`` (``{seed}``: the trial's seed)
``{args}``          ``--name value`` for every parameter of ``[space]``, in its order
``{overrides}``     ``name=value`` for every parameter (as Hydra takes them)
==================  ========================================================================

A placeholder that is a whole word of the command becomes its own words (``{args}`` many);
inside a longer word (``--lr={lr}``, ``bash -c "python train.py {args}"``) it is replaced by
text, ``{args}`` and ``{overrides}`` shell-quoted. ``${HOME}`` is left alone (a shell's).

Metrics out of the output (``[experiment] parse = { val_bpb = '^val_bpb:\\s*([-+0-9.eE]+)' }``):
one regular expression a metric, searched line by line in the command's stdout (and stderr
with ``parse_stderr = true``), its first group the value; every match is a step. The runner
appends them to the trial's ``metrics.jsonl`` (``{"step": k, "val_bpb": v, "parsed": "stdout"}``)
when the command ends, whatever the end, so the trial's file of record holds them beside
whatever the code logged through the JSONL contract.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hpc_agent.job.fileio import atomic_write_text
from hpc_agent.job.trial import TrialPaths

PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
IGNORED = "ignored/"  # the training's own value of an evaluated metric is kept under this prefix
LISTS = ("args", "overrides")  # the placeholders that stand for every parameter
SEED = "seed"


def placeholders(command: Sequence[str]) -> list[str]:
    """The placeholder names of a command, in order (repeats kept)."""
    return [m.group(1) for word in command for m in PLACEHOLDER.finditer(word)]


def unknown_placeholders(command: Sequence[str], names: Iterable[str]) -> list[str]:
    """The placeholders that name no parameter (nor ``seed``, ``args``, ``overrides``)."""
    known = {*names, SEED, *LISTS}
    return [n for n in placeholders(command) if n not in known]


def value_text(value: Any) -> str:
    """A parameter's value as a command-line word (``true``/``false`` for booleans, the
    shortest exact form for numbers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def fill_command(command: Sequence[str], params: Mapping[str, Any], seed: int) -> tuple[str, ...]:
    """The command with its placeholders filled from ``params`` (the space's, in order) and
    ``seed``; a command without placeholders is returned as it is."""
    if not any(PLACEHOLDER.search(word) for word in command):
        return tuple(command)
    lists = {
        "args": [w for k, v in params.items() for w in (f"--{k}", value_text(v))],
        "overrides": [f"{k}={value_text(v)}" for k, v in params.items()],
    }
    scalars = {k: value_text(v) for k, v in params.items()}
    scalars.setdefault(SEED, str(seed))
    out: list[str] = []
    for word in command:
        whole = PLACEHOLDER.fullmatch(word)
        if whole and whole.group(1) in lists:
            out.extend(lists[whole.group(1)])
            continue

        def text(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in lists:
                return shlex.join(lists[name])
            return scalars.get(name, m.group(0))

        out.append(PLACEHOLDER.sub(text, word))
    return tuple(out)


def pattern_problem(pattern: str) -> str:
    """Why ``pattern`` cannot read a metric ("" when it can): it must compile and have a group."""
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        return f"does not compile ({e})"
    if compiled.groups < 1:
        return "has no group: put the value in parentheses, e.g. '^val_bpb:\\s*([-+0-9.eE]+)'"
    return ""


def parse_metrics(
    text: str, patterns: Mapping[str, str], start: Mapping[str, int] | None = None
) -> list[dict[str, Any]]:
    """The metrics ``patterns`` find in ``text``, one record a match: ``{"step": k, name:
    value}``, ``k`` counting that metric's matches from ``start[name]`` (matches of earlier
    attempts). A match whose group is not a finite number is skipped."""
    compiled = {name: re.compile(p) for name, p in patterns.items()}
    steps = dict(start or {})
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        found: dict[str, float] = {}
        for name, rx in compiled.items():
            m = rx.search(line)
            if m is None or m.group(1) is None:
                continue
            try:
                value = float(m.group(1))
            except ValueError:
                continue
            if math.isfinite(value):
                found[name] = value
        at = {steps.get(name, 0) for name in found}
        for name in found:
            steps[name] = steps.get(name, 0) + 1
        if len(at) == 1:  # one line, one step: its metrics in one record
            out.append({"step": at.pop(), **found})
        else:
            out.extend({"step": steps[name] - 1, name: value} for name, value in found.items())
    return out


def count_matches(text: str, patterns: Mapping[str, str]) -> dict[str, int]:
    """How many records :func:`parse_metrics` finds per metric (the steps already taken)."""
    counts: dict[str, int] = {}
    for rec in parse_metrics(text, patterns):
        for name in rec:
            if name != "step":
                counts[name] = counts.get(name, 0) + 1
    return counts


def jsonl(records: Iterable[Mapping[str, Any]], **extra: Any) -> str:
    """Records as JSON lines, each with ``extra`` fields."""
    return "".join(json.dumps({**rec, **extra}) + "\n" for rec in records)


def _read_text(path: str | os.PathLike[str], start: int = 0, end: int | None = None) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read() if end is None else f.read(max(0, end - start))
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def append_lines(path: str | os.PathLike[str], text: str) -> None:
    """Append JSON lines to a metrics file, after a newline if its last line is torn."""
    if not text:
        return
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    except OSError:
        torn = False  # empty or missing
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + text)


def record_parsed(
    paths: TrialPaths, patterns: Mapping[str, str], stderr_too: bool, out_start: int, err_start: int
) -> int:
    """Append to ``metrics.jsonl`` what ``patterns`` find in this attempt's stdout (from byte
    ``out_start``) and, with ``stderr_too``, stderr; steps continue the earlier attempts'.
    Returns how many records were appended."""
    streams = [("stdout", paths.stdout, out_start)] + (
        [("stderr", paths.stderr, err_start)] if stderr_too else []
    )
    text = ""
    n = 0
    for name, path, start in streams:
        before = count_matches(_read_text(path, 0, start), patterns) if start else {}
        records = parse_metrics(_read_text(path, start), patterns, before)
        n += len(records)
        text += jsonl(records, parsed=name)
    append_lines(paths.metrics, text)
    return n


def set_aside(metrics: str | os.PathLike[str], names: Sequence[str]) -> dict[str, int]:
    """Rename ``names`` in every line of a metrics file to ``ignored/<name>`` (the fixed
    evaluator alone reports them); returns how many values of each were set aside."""
    counts: dict[str, int] = {}
    text = _read_text(metrics)
    if not names or not any(f'"{n}"' in text for n in names):
        return counts
    lines = []
    for line in text.splitlines(keepends=True):
        try:
            rec = json.loads(line)
        except ValueError:
            lines.append(line)  # a torn or foreign line: the gather judges it
            continue
        if isinstance(rec, dict) and any(n in rec for n in names):
            for n in names:
                if n in rec:
                    rec[IGNORED + n] = rec.pop(n)
                    counts[n] = counts.get(n, 0) + 1
            line = json.dumps(rec) + "\n"
        lines.append(line)
    atomic_write_text(metrics, "".join(lines))
    return counts


def take_evaluation(paths: TrialPaths, patterns: Mapping[str, str], out_start: int) -> int:
    """Append the evaluator's metrics to the trial's ``metrics.jsonl`` (its file of record):
    its ``evaluation.jsonl`` lines, then what ``patterns`` find in its stdout from byte
    ``out_start``. Returns how many records were appended."""
    records: list[dict[str, Any]] = []
    for line in _read_text(paths.evaluation).splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    if patterns:
        records += parse_metrics(_read_text(paths.evaluate_out, out_start), patterns)
    append_lines(paths.metrics, jsonl(records, source="evaluate"))
    return len(records)

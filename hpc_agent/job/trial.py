"""The trial folder: its files, and what they say. Standard library only.

One folder per trial (``results/<name>/gen-0003/trials/0003-0007/``) is the only thing a
job, the driver and ``hpc-agent status`` share. This module is that contract; the runner
(inside a job), ``slurm_task``, the driver and the status command all read and write the
folder through it, so its file names and the meaning of each state are written down once.

==================  ===========  =====================================================
file                written by   what
==================  ===========  =====================================================
``params.json``     driver       the configuration, plus ``seed``
``launch.json``     driver       how to run it: command, cwd, env, budget (written last
                                 when preparing: its presence means "prepared")
``assignment.json`` driver       the one submission (token) that may run it now (none
                                 yet: its first submission may)
``code/``           driver       its own copy of the editable files (+ patch), links to
                                 the rest of the workdir
``patch.diff``      driver       the code change, as a unified diff
``status.json``     runner       ``running``, then its final word (below)
``provenance.json`` runner       per attempt: host, job and array ids, seed, Python,
                                 torch and CUDA versions, GPUs, CPUs
                                 (:mod:`hpc_agent.job.provenance`)
``metrics.jsonl``   experiment   one JSON object a line
``stdout.log``,     runner       the command's output, every attempt appended (its
``stderr.log``                   ``[experiment] parse`` matches appended to metrics.jsonl)
``trained.json``    runner       the training command completed (an evaluator follows;
                                 a requeue then runs the evaluator only)
``evaluate.out.log``, runner     the fixed evaluator's output (``[experiment] evaluate``)
``evaluate.err.log``
``evaluation.jsonl`` evaluator   its metrics (JSONL contract), moved into metrics.jsonl
``checkpoint/``     experiment   kept across requeues
==================  ===========  =====================================================

Beside the trial folders, ``gen-0003/ended/`` holds one empty file per attempt that ended,
``<trial>.<token>.<attempt>``, made by the runner right after the status that ends it
(:func:`write_status`): the driver lists that one folder on each look instead of reading
every running trial's status file (it still reads them all now and then, for the trials
whose end was never announced: a runner of an older hpc-agent, or one killed in between).

A ``status.json`` ends an attempt when it says ``completed``, ``failed`` or ``timeout``
(a verdict on the configuration, whatever submission wrote it: :data:`FINAL_STATES`), or
``preempted`` / ``cancelled`` written by the attempt's own submission (an interruption of
an earlier attempt was already dealt with): :func:`ends_attempt`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hpc_agent.job.fileio import atomic_write_json, read_json

PARAMS = "params.json"
LAUNCH = "launch.json"
ASSIGNMENT = "assignment.json"
CODE = "code"
PATCH = "patch.diff"
STATUS = "status.json"
PROVENANCE = "provenance.json"
METRICS = "metrics.jsonl"
STDOUT = "stdout.log"
STDERR = "stderr.log"
CHECKPOINT = "checkpoint"
TRAINED = "trained.json"
EVALUATE_OUT = "evaluate.out.log"
EVALUATE_ERR = "evaluate.err.log"
EVALUATION = "evaluation.jsonl"
TRIALS = "trials"  # a generation's trial folders: gen-0003/trials/<trial>/
ENDED = "ended"  # gen-0003/ended/<trial>.<token>.<attempt>: the ends of attempts, announced

FINAL_STATES = ("completed", "failed", "timeout")  # a verdict: never run again
INTERRUPTIONS = ("preempted", "cancelled")  # the attempt was stopped; the driver decides
RUNNING = "running"
SUPERSEDED = "superseded"  # what a job reports for a trial assigned to another submission
TIME_LIMIT = "time_limit"  # interrupted_by: stopped on the runner's clock before the job's limit


def trial_id(generation: int, index: int) -> str:
    """``0003-0007``: sortable as text, unique in a campaign, readable in a table."""
    return f"{generation:04d}-{index:04d}"


def generation_of(trial: str) -> int:
    """The generation a trial id belongs to (inverse of :func:`trial_id`)."""
    return int(trial.split("-", 1)[0])


@dataclass(frozen=True)
class TrialPaths:
    """The files of one trial folder (see the module docstring for who writes which); each path
    is made once (the driver asks for thousands)."""

    root: Path

    @cached_property
    def params(self) -> Path:
        return self.root / PARAMS

    @cached_property
    def launch(self) -> Path:
        return self.root / LAUNCH

    @cached_property
    def assignment(self) -> Path:
        return self.root / ASSIGNMENT

    @cached_property
    def patch(self) -> Path:
        return self.root / PATCH

    @cached_property
    def code(self) -> Path:
        return self.root / CODE

    @cached_property
    def provenance(self) -> Path:
        return self.root / PROVENANCE

    @cached_property
    def metrics(self) -> Path:
        return self.root / METRICS

    @cached_property
    def status(self) -> Path:
        return self.root / STATUS

    @cached_property
    def stdout(self) -> Path:
        return self.root / STDOUT

    @cached_property
    def stderr(self) -> Path:
        return self.root / STDERR

    @cached_property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @cached_property
    def trained(self) -> Path:
        return self.root / TRAINED

    @cached_property
    def evaluate_out(self) -> Path:
        return self.root / EVALUATE_OUT

    @cached_property
    def evaluate_err(self) -> Path:
        return self.root / EVALUATE_ERR

    @cached_property
    def evaluation(self) -> Path:
        return self.root / EVALUATION


@dataclass(frozen=True)
class Launch:
    """``launch.json``: how the runner runs the trial. Written by the driver when it prepares
    the trial (last: its presence means "prepared"); read by the runner in the job."""

    trial: str
    command: tuple[str, ...]
    time_budget_s: float
    cwd: str = CODE  # relative to the trial folder: results folders can move
    env: Mapping[str, str] = field(default_factory=dict)
    kill_grace_s: float = 10.0
    seed: int = 0
    unset_env: tuple[str, ...] = ()  # removed from the command's environment (secrets)
    fidelity: float = 1.0  # a confirmation's budget multiplier (HPC_AGENT_FIDELITY)
    parse: Mapping[str, str] = field(default_factory=dict)  # metric -> regex on the output
    parse_stderr: bool = False
    evaluate: tuple[str, ...] = ()  # the fixed evaluator's command (none: no evaluator)
    evaluate_cwd: str = ""  # where it runs, relative to the trial folder: the unpatched snapshot
    evaluate_time_s: float = 0.0
    evaluated: tuple[str, ...] = ()  # the metrics only the evaluator may report

    def write(self, folder: str | os.PathLike[str]) -> None:
        """Write ``launch.json`` into the trial folder (atomically)."""
        data = {  # by hand: dataclasses.asdict deep-copies, and the driver writes thousands
            "trial": self.trial,
            "command": list(self.command),
            "time_budget_s": self.time_budget_s,
            "cwd": self.cwd,
            "env": dict(self.env),
            "kill_grace_s": self.kill_grace_s,
            "seed": self.seed,
            "unset_env": list(self.unset_env),
            "fidelity": self.fidelity,
            "parse": dict(self.parse),
            "parse_stderr": self.parse_stderr,
            "evaluate": list(self.evaluate),
            "evaluate_cwd": self.evaluate_cwd,
            "evaluate_time_s": self.evaluate_time_s,
            "evaluated": list(self.evaluated),
        }
        atomic_write_json(f"{os.fspath(folder)}/{LAUNCH}", data, compact=True)

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Launch | None:
        """The trial's launch.json, or None when it was never prepared (or is unreadable)."""
        data = read_json(Path(folder) / LAUNCH)
        if not isinstance(data, dict) or "command" not in data or "time_budget_s" not in data:
            return None
        return cls(
            trial=str(data.get("trial", Path(folder).name)),
            command=tuple(str(c) for c in data["command"]),
            time_budget_s=float(data["time_budget_s"]),
            cwd=str(data.get("cwd", CODE)),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
            kill_grace_s=float(data.get("kill_grace_s", 10.0)),
            seed=int(data.get("seed", 0)),
            unset_env=tuple(str(n) for n in data.get("unset_env") or ()),
            fidelity=float(data.get("fidelity", 1.0)),
            parse={str(k): str(v) for k, v in (data.get("parse") or {}).items()},
            parse_stderr=bool(data.get("parse_stderr", False)),
            evaluate=tuple(str(c) for c in data.get("evaluate") or ()),
            evaluate_cwd=str(data.get("evaluate_cwd", "")),
            evaluate_time_s=float(data.get("evaluate_time_s", 0.0)),
            evaluated=tuple(str(n) for n in data.get("evaluated") or ()),
        )


def write_status(folder: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write the trial's ``status.json`` (atomically); when ``data`` is not ``running`` (the
    attempt ended), announce it in the generation's ``ended/`` folder (see the module's
    docstring), after the status, so that a driver that sees the notice finds the status."""
    root = os.fspath(folder)
    atomic_write_json(f"{root}/{STATUS}", dict(data))
    if data.get("state") == RUNNING:
        return
    ended = ended_folder(root)
    if ended is None:
        return
    name = f"{ended}/{os.path.basename(root)}.{data.get('token') or '-'}.{data.get('attempt', 0)}"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o666)
    except FileNotFoundError:
        os.makedirs(ended, exist_ok=True)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o666)
    os.close(fd)


def ended_folder(folder: str | os.PathLike[str]) -> str | None:
    """Where the ends of this trial folder's attempts are announced: ``gen-0003/ended/`` for
    ``gen-0003/trials/<trial>/`` (None for a folder outside a campaign's layout)."""
    trials = os.path.dirname(os.path.abspath(folder))
    if os.path.basename(trials) != TRIALS:
        return None
    return f"{os.path.dirname(trials)}/{ENDED}"


def announced(ended: str | os.PathLike[str]) -> list[str]:
    """The notices in an ``ended/`` folder ([] before the first): ``<trial>.<token>.<attempt>``."""
    try:
        return os.listdir(ended)
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_status(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The trial's ``status.json``, or None (not written yet, or being replaced)."""
    data = read_json(Path(folder) / STATUS)
    return data if isinstance(data, dict) else None


def is_final(status: Mapping[str, Any] | None) -> bool:
    """Does this status hold a verdict on the configuration (never run it again)?"""
    return status is not None and status.get("state") in FINAL_STATES


def ends_attempt(status: Mapping[str, Any] | None, token: str | None) -> bool:
    """Does this status end the attempt of submission ``token``? A verdict ends it whenever it
    was written; an interruption only when it is that submission's own (an older one was
    already requeued)."""
    if not status:
        return False
    state = status.get("state")
    if state in FINAL_STATES:
        return True
    return state in INTERRUPTIONS and status.get("token") == token


def is_running_for(status: Mapping[str, Any] | None, token: str | None) -> bool:
    """Is submission ``token``'s attempt running (not an earlier one's that died running)?"""
    return status is not None and status.get("state") == RUNNING and status.get("token") == token


def assign(folder: str | os.PathLike[str], token: str | None) -> None:
    """Let submission ``token`` (None: none) run this trial from now on (the driver's call)."""
    atomic_write_json(Path(folder) / ASSIGNMENT, {"token": token}, compact=True)


def assigned_to(folder: str | os.PathLike[str], token: str) -> bool:
    """May the submission ``token`` run this trial? Yes unless ``assignment.json`` names
    another one (or none: a submission being resolved). A trial in its first submission has
    no assignment file (the driver writes one from the second on, and when it resolves or
    refuses a submission), nor has one prepared by an older hpc-agent: it may run."""
    data = read_json(Path(folder) / ASSIGNMENT)
    if not isinstance(data, dict) or not token:
        return True
    return data.get("token") == token


def checkpoint_written_since(folder: Path, since: float, limit: int = 10_000) -> bool:
    """Did anything in ``folder`` (a trial's checkpoint directory) change after ``since``? A
    requeue after which the checkpoint advanced is progress, not a failure. At most ``limit``
    entries are looked at."""
    pending = [folder]
    seen = 0
    while pending and seen < limit:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                if entry.stat(follow_symlinks=False).st_mtime > since:
                    return True
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
            except OSError:
                continue
    return False


def attempt_duration(status: Mapping[str, Any] | None, token: str | None) -> float | None:
    """How long submission ``token``'s attempt ran, from its status (a final status says; a
    ``running`` one left by a lost job gives a lower bound)."""
    if not status or status.get("token") != token:
        return None
    if isinstance(status.get("duration_s"), (int, float)):
        return float(status["duration_s"])
    start, last = status.get("started_at"), status.get("updated_at")
    if isinstance(start, (int, float)) and isinstance(last, (int, float)):
        return round(max(0.0, float(last) - float(start)), 3)
    return None

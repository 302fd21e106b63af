"""The journal's events: one small frozen dataclass each, one writer, one handler.

Modelled on Optuna's journal storage (one enum of operations, each beside its ``_apply_*``):
every event the campaign records is a class here, written in exactly one place of the code
and applied to the state by exactly one handler (:data:`hpc_agent.store.state.HANDLERS`). On disk
an event is one JSON line, ``{"v": 1, "t": <unix time>, "event": <kind>, <its fields>}``: the
format of release 0.1.0, which this version reads unchanged (tests/fixtures holds such a
journal). Fields unknown to a class are ignored and missing ones take their defaults, so a
journal written by a newer or older hpc-agent still reads; an unknown event kind is skipped
(:func:`parse` returns None). Each class is named as its kind (``verdict`` is
:class:`Verdict`, ``campaign`` is :class:`Campaign`); where a name meets the loop's own
(:class:`hpc_agent.loop.campaign.Campaign`), the module is imported as ``ev`` and the event
written ``ev.Campaign``.

==================  ===============  ====================================================
kind                class            written
==================  ===============  ====================================================
``campaign``        Campaign         a new results folder: the resolved spec
``spec``            Spec             a later run with a changed spec (``forced``: --force)
``run``             Run              a driver took the folder
``run_ended``       RunEnded         it stopped: done, exhausted, cancelled, interrupted,
                                     failed
``cancelled``       Cancelled        ``hpc-agent cancel``
``planning``        Planning         before the planner is asked for generation g
``planned``         Planned          its proposals, one ``PlannedTrial`` per trial
``submitting``      Submitting       before trials are submitted under a new token
``submitted``       Submitted        the scheduler took them: job ids
``widened``         Widened          more of a submission's trials may run at once (async)
``submit_failed``   SubmitFailed     it refused them, or a submission of a dead driver
                                     turned out never to have reached it
``trial_ended``     TrialEnded       a trial's final state, objective and reason
``requeued``        Requeued         an interrupted attempt goes back to be submitted
``verdict``         Verdict          a finished configuration: keep, discard, crash or
                                     candidate (a second verdict follows its replicate),
                                     and why
``analyzed``        Analyzed         generation g's analysis.md is written, by ``author``
``generation_done`` GenerationDone   generation g is finished
==================  ===============  ====================================================

``running`` is never journaled: it is read live from a trial's ``status.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

SCHEMA_VERSION = 1
_D = TypeVar("_D")


@dataclass(frozen=True)
class Event:
    """Base of every event. ``t`` is the time it was written (set by the journal)."""

    kind: ClassVar[str] = ""
    t: float = field(default=0.0, kw_only=True, compare=False)

    def fields(self) -> dict[str, Any]:
        """The event's own fields as the journal writes them (JSON-ready), in their declared
        order (the instance's ``__dict__``: ``__init__`` and :func:`copy_with` keep it)."""
        return {k: v if type(v) in _SIMPLE else _plain(v) for k, v in self.__dict__.items() if k != "t"}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        """The event a journal line holds; unknown fields are ignored, missing ones defaulted."""
        names = _names(cls)
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in names
        }
        return cls(**values)


def copy_with(obj: _D, **changes: Any) -> _D:
    """``dataclasses.replace`` for the frozen records and events here (none has a
    ``__post_init__``): a copy of the instance's fields, without calling ``__init__``, about
    seven times faster, and the driver makes thousands of such copies a generation."""
    new = object.__new__(type(obj))
    fields = new.__dict__
    fields.update(obj.__dict__)
    fields.update(changes)
    return new


_NAMES: dict[type, tuple[str, ...]] = {}
_SIMPLE = frozenset({str, int, float, bool, type(None)})  # most fields: written as they are


def _names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names, read once per class (``dataclasses.fields`` is slow)."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _plain(value: Any) -> Any:
    if type(value) in _SIMPLE:
        return value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------- the campaign


@dataclass(frozen=True)
class Campaign(Event):
    """A new results folder: the campaign's resolved spec and its two hashes."""

    kind: ClassVar[str] = "campaign"
    name: str = ""
    spec: Mapping[str, Any] = field(default_factory=dict)
    spec_hash: str = ""
    identity_hash: str = ""


@dataclass(frozen=True)
class Spec(Campaign):
    """A later run whose spec differs (``forced``: its identity changed, under ``--force``)."""

    kind: ClassVar[str] = "spec"
    forced: bool = False


@dataclass(frozen=True)
class Run(Event):
    """A driver took the results folder: who it is and what it runs with."""

    kind: ClassVar[str] = "run"
    pid: int = 0
    host: str = ""
    executor: str = ""
    planner: str = ""
    version: str = ""
    argv: Sequence[str] = ()


@dataclass(frozen=True)
class RunEnded(Event):
    """A driver stopped: done, exhausted, cancelled, interrupted or failed (with the error)."""

    kind: ClassVar[str] = "run_ended"
    status: str = ""
    error: str | None = None


@dataclass(frozen=True)
class Cancelled(Event):
    """``hpc-agent cancel`` was run: a running driver stops at its next poll."""

    kind: ClassVar[str] = "cancelled"
    reason: str = ""
    pid: int = 0
    host: str = ""


@dataclass(frozen=True)
class Stopped(Event):
    """A stop rule ended the search (:mod:`hpc_agent.science.budget`): ``rule`` is ``generations``,
    ``max_trials``, ``target``, ``plateau``, ``max_hours`` or ``max_gpu_hours``; ``detail``
    says it in words. Trials in flight still finish; a rerun with a looser rule continues."""

    kind: ClassVar[str] = "stopped"
    rule: str = ""
    detail: str = ""


# ------------------------------------------------------------------------------- a generation


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of a plan (``planned`` event): a proposal, for one seed."""

    trial_id: str
    index: int
    config: str  # trials of one proposal share it (one trial per seed)
    seed: int
    params: Mapping[str, Any]
    hypothesis: str = ""
    parent: str | None = None  # the champion whose code this one edits
    source: str = ""  # who proposed it: baseline, random, tpe, llm, tpe-fill, control, ...
    patch: tuple[Mapping[str, Any], ...] | None = None
    # "" (the search), "control" (the champion again, new seed), "replicate" (a candidate
    # again, new seed, same budget), "confirm" or "rerun" (a
    # configuration run again, ``of``, at ``budget_multiplier`` times the budget)
    purpose: str = ""
    of: str | None = None
    budget_multiplier: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """The trial as the ``planned`` event (and plan.json) writes it."""
        return {
            "id": self.trial_id,
            "index": self.index,
            "config": self.config,
            "seed": self.seed,
            "params": dict(self.params),
            "hypothesis": self.hypothesis,
            "parent": self.parent,
            "source": self.source,
            "patch": [dict(e) for e in self.patch] if self.patch else None,
            **({"purpose": self.purpose, "of": self.of} if self.purpose else {}),
            **({"budget_multiplier": self.budget_multiplier} if self.budget_multiplier != 1.0 else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlannedTrial:
        """The trial from a ``planned`` event's record (missing fields defaulted)."""
        return cls(
            trial_id=str(d["id"]),
            index=int(d["index"]),
            config=str(d.get("config", d["id"])),
            seed=int(d.get("seed", 0)),
            params=d["params"],
            hypothesis=str(d.get("hypothesis", "")),
            parent=d.get("parent"),
            source=str(d.get("source", "")),
            patch=tuple(d["patch"]) if d.get("patch") else None,
            purpose=str(d.get("purpose", "")),
            of=d.get("of"),
            budget_multiplier=float(d.get("budget_multiplier", 1.0)),
        )


@dataclass(frozen=True)
class Planning(Event):
    """The planner is about to be asked for generation ``generation``."""

    kind: ClassVar[str] = "planning"
    generation: int = 0
    planner: str = ""


@dataclass(frozen=True)
class Planned(Event):
    """Generation ``generation``'s trials, as the planner proposed them (after validation)."""

    kind: ClassVar[str] = "planned"
    generation: int = 0
    planner: str = ""
    note: str = ""
    trials: tuple[PlannedTrial, ...] = ()

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        """The event of a ``planned`` record (its trials parsed)."""
        trials = tuple(PlannedTrial.from_dict(t) for t in record.get("trials", ()))
        return cls(
            generation=int(record["generation"]),
            planner=str(record.get("planner", "")),
            note=str(record.get("note", "")),
            trials=trials,
            t=float(record.get("t", 0.0)),
        )


@dataclass(frozen=True)
class Analyzed(Event):
    """Generation ``generation``'s analysis.md is written; ``author`` says by whom."""

    kind: ClassVar[str] = "analyzed"
    generation: int = 0
    author: str = ""  # the planner, or "deterministic"
    fallback: str = ""  # why the deterministic analysis was written instead of the planner's


@dataclass(frozen=True)
class Verdict(Event):
    """A finished configuration's verdict under the promotion rule (:mod:`hpc_agent.science.rigor`):
    ``keep`` (the new champion), ``discard`` (worse, within the noise, or not confirmed by its
    replicate), ``crash``, or ``candidate`` (it passed on its screening runs; its replicate's
    verdict, keep or discard, follows: the last one holds), why,
    its improvement over the champion of the moment and the standard error it was held to,
    and the noise floor it was judged with."""

    kind: ClassVar[str] = "verdict"
    config: str = ""
    verdict: str = ""
    reason: str = ""
    improvement: float | None = None
    se: float | None = None
    champion: str | None = None
    noise_sigma: float | None = None
    noise_n: int = 0
    noise_from: str = ""


@dataclass(frozen=True)
class GenerationDone(Event):
    """Generation ``generation`` is finished (every trial ended, analysis written)."""

    kind: ClassVar[str] = "generation_done"
    generation: int = 0


# ------------------------------------------------------------------------------- submissions


@dataclass(frozen=True)
class Submitting(Event):
    """Trials are about to be submitted under ``token`` (written before the executor is called)."""

    kind: ClassVar[str] = "submitting"
    generation: int = 0
    token: str = ""
    trials: tuple[str, ...] = ()
    executor: str = ""
    width: int = 0  # at most this many run at once until widened (0: as many as the executor allows)


@dataclass(frozen=True)
class Widened(Event):
    """Up to ``width`` trials of submission ``token`` may now run at once (written before the
    executor is told: a driver that dies in between under-uses its slots, never over-uses them,
    and the next one tells the executor again)."""

    kind: ClassVar[str] = "widened"
    token: str = ""
    width: int = 0


@dataclass(frozen=True)
class Submitted(Event):
    """The executor took submission ``token``: its job ids (``recovered``: found by name later)."""

    kind: ClassVar[str] = "submitted"
    token: str = ""
    job_ids: tuple[str, ...] = ()
    trial_jobs: Mapping[str, str] | None = None  # per-trial job id, where the executor knows it
    recovered: bool = False  # found by name after the driver died inside submit


@dataclass(frozen=True)
class SubmitFailed(Event):
    """Submission ``token`` was refused, or turned out never to have reached the scheduler."""

    kind: ClassVar[str] = "submit_failed"
    token: str = ""
    error: str = ""
    job_ids: tuple[str, ...] | None = None  # chunks that went through before the refusal


# ------------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class TrialEnded(Event):
    """A trial's final state, objective and reason (its last attempt's exit code and duration)."""

    kind: ClassVar[str] = "trial_ended"
    trial: str = ""
    state: str = ""
    objective: float | None = None
    reason: str = ""
    exit_code: int | None = None
    duration_s: float | None = None  # of the last attempt
    job_id: str | None = None
    attempt: int | None = None
    by_campaign_cancel: bool = False


@dataclass(frozen=True)
class Requeued(Event):
    """An interrupted attempt goes back to be submitted (same folder, same checkpoint).
    ``counted`` against ``max_retries``; ``progress`` (it wrote a checkpoint) against
    ``max_progress_requeues``; neither for a driver stopped from its terminal."""

    kind: ClassVar[str] = "requeued"
    trial: str = ""
    reason: str = ""
    counted: bool = True
    progress: bool = False
    duration_s: float | None = None  # of the interrupted attempt
    why: str = ""  # time_limit, SIGTERM, lost, ... (what interrupted it)


EVENTS: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        Campaign,
        Spec,
        Run,
        RunEnded,
        Cancelled,
        Stopped,
        Planning,
        Planned,
        Analyzed,
        Verdict,
        GenerationDone,
        Submitting,
        Submitted,
        Widened,
        SubmitFailed,
        TrialEnded,
        Requeued,
    )
}


def parse(record: Mapping[str, Any]) -> Event | None:
    """The event of a journal record; None for a kind this version does not know."""
    cls = EVENTS.get(str(record.get("event", "")))
    if cls is None:
        return None
    event = cls.from_record(record)
    if "t" in record and event.t != record["t"]:
        event = dataclasses.replace(event, t=float(record["t"]))
    return event


def to_record(event: Event, t: float) -> dict[str, Any]:
    """The journal line of ``event`` written at ``t``."""
    return {"v": SCHEMA_VERSION, "t": round(t, 3), "event": event.kind, **event.fields()}

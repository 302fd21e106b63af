"""A campaign's state is a pure replay of its journal.

``replay(events) -> CampaignState`` does no I/O: the same journal always gives the same state,
so a driver that died at any point rebuilds exactly what it knew. The events, in the order a
generation writes them (each before and after its side effect):

========================  =====================================================
``campaign`` / ``spec``   the resolved spec (first run / a later run that changed it)
``run``                   a driver started (pid, host, executor, planner)
``planning``              about to ask the planner for generation g
``planned``               the proposals of generation g, with their trial ids
``submitting``            about to submit these trials under a unique token
``submitted``             the scheduler accepted them: job ids
``submit_failed``         it refused them (the trials stay planned)
``trial_ended``           a trial's final state, objective and reason
``requeued``              a preempted or lost trial goes back to be submitted again (counted
                          against max_retries, or after progress against max_progress_requeues)
``analyzed``              generation g's analysis.md is written
``generation_done``       generation g is finished
``cancelled``             ``hpc-agent cancel`` stopped the campaign
``run_ended``             a driver stopped (done, failed, interrupted, detached)
========================  =====================================================

``running`` is never journaled: it is read live from a trial's ``status.json``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any


class TrialState(str, Enum):
    """planned -> submitted -> running -> {completed, failed, timeout, preempted, lost, cancelled}.

    ``preempted`` and ``lost`` go back to ``planned`` (``requeued``) until the retry cap; when
    journaled in ``trial_ended`` they are final.
    """

    PLANNED = "planned"
    SUBMITTED = "submitted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"
    LOST = "lost"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self in _FINISHED

    def is_retryable(self) -> bool:
        """An interruption, not a verdict on the configuration: worth running again."""
        return self in (TrialState.PREEMPTED, TrialState.LOST)


_FINISHED = frozenset(
    {
        TrialState.COMPLETED,
        TrialState.FAILED,
        TrialState.TIMEOUT,
        TrialState.PREEMPTED,
        TrialState.LOST,
        TrialState.CANCELLED,
    }
)
STATE_ORDER = tuple(TrialState)


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    generation: int
    index: int
    config_id: str  # trials of one proposal share it (one trial per seed)
    seed: int
    params: Mapping[str, Any]
    hypothesis: str = ""
    parent: str | None = None  # the champion trial whose code this one edits
    source: str = ""  # who proposed it: baseline, random, tpe, llm, tpe-fill, ...
    patch: tuple[Mapping[str, Any], ...] | None = None
    state: TrialState = TrialState.PLANNED
    attempt: int = 0  # submissions so far
    retries: int = 0  # requeues that count against max_retries
    progress_requeues: int = 0  # requeues after an attempt that wrote a checkpoint
    earlier_duration_s: float = 0.0  # time used by the attempts before the current one
    token: str | None = None  # the submission it belongs to now
    job_id: str | None = None
    objective: float | None = None
    reason: str = ""
    exit_code: int | None = None
    duration_s: float | None = None
    ended_at: float | None = None
    by_campaign_cancel: bool = False

    @property
    def total_duration_s(self) -> float | None:
        """Time used over every attempt (the last one's ``duration_s`` plus the earlier ones)."""
        if self.duration_s is None:
            return self.earlier_duration_s or None
        return round(self.earlier_duration_s + self.duration_s, 3)


@dataclass(frozen=True)
class SubmissionRecord:
    token: str
    generation: int
    trial_ids: tuple[str, ...]
    executor: str
    state: str = "submitting"  # submitting -> submitted | failed
    job_ids: tuple[str, ...] = ()
    trial_jobs: Mapping[str, str] | None = None  # per-trial job id, where the executor knows it
    error: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class GenerationRecord:
    generation: int
    planner: str = ""
    note: str = ""  # e.g. "LLM unreachable: fell back to TPE"
    trial_ids: tuple[str, ...] = ()
    planning: bool = False
    planned: bool = False
    analyzed: bool = False
    done: bool = False
    planned_at: float = 0.0
    done_at: float = 0.0


@dataclass(frozen=True)
class CampaignState:
    name: str = ""
    spec: Mapping[str, Any] = field(default_factory=dict)
    spec_hash: str = ""
    identity_hash: str = ""
    generations: Mapping[int, GenerationRecord] = field(default_factory=dict)
    trials: Mapping[str, TrialRecord] = field(default_factory=dict)
    submissions: Mapping[str, SubmissionRecord] = field(default_factory=dict)
    runs: int = 0
    run_times: tuple[float, ...] = ()  # when each driver started (its "run" event)
    cancelled: bool = False  # a cancel came after the last run started
    last_run_end: str = ""
    started_at: float = 0.0
    events: int = 0

    # ------------------------------------------------------------------ queries
    def trials_of(self, generation: int) -> list[TrialRecord]:
        g = self.generations.get(generation)
        return [self.trials[t] for t in g.trial_ids] if g else []

    def completed_generations(self) -> int:
        return sum(1 for g in self.generations.values() if g.done)

    def next_generation(self) -> int:
        """The generation to work on: the first one not done."""
        for g in sorted(self.generations):
            if not self.generations[g].done:
                return g
        return max(self.generations, default=-1) + 1

    def pending_submissions(self) -> list[SubmissionRecord]:
        """Submissions whose outcome the journal does not know (the driver died in sbatch)."""
        return [s for s in self.submissions.values() if s.state == "submitting"]

    def counts(self, generation: int | None = None) -> dict[str, int]:
        trials = self.trials_of(generation) if generation is not None else list(self.trials.values())
        out = {s.value: 0 for s in STATE_ORDER}
        for t in trials:
            out[t.state.value] += 1
        return out

    def best(self, mode: str) -> TrialRecord | None:
        """The best completed trial (single seed view)."""
        done = [t for t in self.trials.values() if t.state is TrialState.COMPLETED and _finite(t.objective)]
        if not done:
            return None
        sign = 1.0 if mode == "min" else -1.0
        return min(done, key=lambda t: (sign * (t.objective or 0.0), t.trial_id))

    def configs(self) -> list[ConfigResult]:
        """Trials grouped by proposal: the unit the planners learn from (mean over seeds)."""
        groups: dict[str, list[TrialRecord]] = {}
        for t in self.trials.values():
            groups.setdefault(t.config_id, []).append(t)
        out = []
        for cid, trials in sorted(groups.items()):
            trials.sort(key=lambda t: t.trial_id)
            values = [
                t.objective
                for t in trials
                if t.state is TrialState.COMPLETED and t.objective is not None and math.isfinite(t.objective)
            ]
            first = trials[0]
            pending = any(not t.state.is_finished() for t in trials)
            failed = [t for t in trials if t.state.is_finished() and t.state is not TrialState.COMPLETED]
            out.append(
                ConfigResult(
                    config_id=cid,
                    generation=first.generation,
                    params=first.params,
                    hypothesis=first.hypothesis,
                    source=first.source,
                    parent=first.parent,
                    patch=first.patch,
                    trial_ids=tuple(t.trial_id for t in trials),
                    objective=sum(values) / len(values) if values else None,
                    n_completed=len(values),
                    pending=pending,
                    failed_reasons=tuple(f"{t.trial_id}: {t.state.value}: {t.reason}" for t in failed),
                )
            )
        return out

    def champion(self, mode: str) -> ConfigResult | None:
        """The best configuration so far (mean objective over its completed seeds)."""
        scored = [c for c in self.configs() if c.objective is not None and not c.pending]
        if not scored:
            return None
        sign = 1.0 if mode == "min" else -1.0
        return min(scored, key=lambda c: (sign * (c.objective or 0.0), c.config_id))


@dataclass(frozen=True)
class ConfigResult:
    config_id: str
    generation: int
    params: Mapping[str, Any]
    hypothesis: str
    source: str
    parent: str | None
    patch: tuple[Mapping[str, Any], ...] | None
    trial_ids: tuple[str, ...]
    objective: float | None  # mean over completed seeds
    n_completed: int
    pending: bool
    failed_reasons: tuple[str, ...]


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# ------------------------------------------------------------------------------- replay


def replay(events: Iterable[Mapping[str, Any]]) -> CampaignState:
    """Fold the journal's events into a :class:`CampaignState`. Pure; unknown events are skipped
    (a newer hpc-agent may write events an older one does not know)."""
    st: dict[str, Any] = {
        "name": "",
        "spec": {},
        "spec_hash": "",
        "identity_hash": "",
        "runs": 0,
        "run_times": (),
        "cancelled": False,
        "last_run_end": "",
        "started_at": 0.0,
    }
    gens: dict[int, GenerationRecord] = {}
    trials: dict[str, TrialRecord] = {}
    subs: dict[str, SubmissionRecord] = {}
    n = 0
    for ev in events:
        n += 1
        kind = ev.get("event")
        if kind in ("campaign", "spec"):
            st["spec"] = ev.get("spec", {})
            st["spec_hash"] = ev.get("spec_hash", "")
            st["identity_hash"] = ev.get("identity_hash", "")
            st["name"] = ev.get("name", st["name"])
            if kind == "campaign":
                st["started_at"] = ev.get("t", 0.0)
        elif kind == "run":
            st["runs"] += 1
            st["run_times"] = (*st["run_times"], float(ev.get("t", 0.0)))
            st["cancelled"] = False
        elif kind == "run_ended":
            st["last_run_end"] = ev.get("status", "")
        elif kind == "cancelled":
            st["cancelled"] = True
        elif kind == "planning":
            g = int(ev["generation"])
            gens[g] = replace(gens.get(g, GenerationRecord(g)), planning=True, planner=ev.get("planner", ""))
        elif kind == "planned":
            g = int(ev["generation"])
            planned_ids: list[str] = []
            for t in ev["trials"]:
                rec = TrialRecord(
                    trial_id=t["id"],
                    generation=g,
                    index=int(t["index"]),
                    config_id=t.get("config", t["id"]),
                    seed=int(t.get("seed", 0)),
                    params=t["params"],
                    hypothesis=t.get("hypothesis", ""),
                    parent=t.get("parent"),
                    source=t.get("source", ""),
                    patch=tuple(t["patch"]) if t.get("patch") else None,
                )
                trials[rec.trial_id] = rec
                planned_ids.append(rec.trial_id)
            gens[g] = replace(
                gens.get(g, GenerationRecord(g)),
                planned=True,
                planner=ev.get("planner", ""),
                note=ev.get("note", ""),
                trial_ids=tuple(planned_ids),
                planned_at=ev.get("t", 0.0),
            )
        elif kind == "submitting":
            token = ev["token"]
            sub_ids = tuple(ev["trials"])
            subs[token] = SubmissionRecord(
                token, int(ev["generation"]), sub_ids, ev.get("executor", ""), at=ev.get("t", 0.0)
            )
            for tid in sub_ids:
                if tid in trials:
                    trials[tid] = replace(
                        trials[tid], state=TrialState.SUBMITTED, token=token, attempt=trials[tid].attempt + 1
                    )
        elif kind == "submitted":
            token = ev["token"]
            if token in subs:
                tj = ev.get("trial_jobs")
                subs[token] = replace(
                    subs[token], state="submitted", job_ids=tuple(ev.get("job_ids", ())), trial_jobs=tj
                )
                if tj:
                    for tid, jid in tj.items():
                        if tid in trials and trials[tid].token == token:
                            trials[tid] = replace(trials[tid], job_id=jid)
        elif kind == "submit_failed":
            token = ev["token"]
            if token in subs:
                subs[token] = replace(subs[token], state="failed", error=ev.get("error", ""))
                for tid in subs[token].trial_ids:
                    if tid in trials and trials[tid].token == token and not trials[tid].state.is_finished():
                        trials[tid] = replace(
                            trials[tid], state=TrialState.PLANNED, attempt=trials[tid].attempt - 1
                        )
        elif kind == "trial_ended":
            tid = ev["trial"]
            if tid in trials:
                trials[tid] = replace(
                    trials[tid],
                    state=TrialState(ev["state"]),
                    objective=ev.get("objective"),
                    reason=ev.get("reason", ""),
                    exit_code=ev.get("exit_code"),
                    duration_s=ev.get("duration_s"),
                    job_id=ev.get("job_id") or trials[tid].job_id,
                    ended_at=ev.get("t"),
                    by_campaign_cancel=bool(ev.get("by_campaign_cancel", False)),
                )
        elif kind == "requeued":
            tid = ev["trial"]
            if tid in trials:
                counted = bool(ev.get("counted", True))
                progress = bool(ev.get("progress", False))
                used = ev.get("duration_s")
                trials[tid] = replace(
                    trials[tid],
                    state=TrialState.PLANNED,
                    retries=trials[tid].retries + (1 if counted else 0),
                    progress_requeues=trials[tid].progress_requeues + (1 if progress else 0),
                    earlier_duration_s=trials[tid].earlier_duration_s + float(used or 0.0),
                    reason=ev.get("reason", ""),
                    objective=None,
                    exit_code=None,
                    by_campaign_cancel=False,
                )
        elif kind == "analyzed":
            g = int(ev["generation"])
            gens[g] = replace(gens.get(g, GenerationRecord(g)), analyzed=True)
        elif kind == "generation_done":
            g = int(ev["generation"])
            gens[g] = replace(gens.get(g, GenerationRecord(g)), done=True, done_at=ev.get("t", 0.0))
    return CampaignState(
        generations=dict(sorted(gens.items())),
        trials=trials,
        submissions=subs,
        events=n,
        **st,
    )

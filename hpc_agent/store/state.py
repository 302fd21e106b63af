"""A campaign's state: the journal's events, applied one by one.

The driver holds one live :class:`CampaignState` and applies each event as it writes it (and
what another process appended, read from a byte offset: :meth:`hpc_agent.store.journal.Journal.read_from`);
``replay(events)`` builds the same state from a whole journal. Both go through one handler
per event kind (:data:`HANDLERS`, as Optuna's journal storage has one ``_apply_*`` per
operation), and the handlers do no I/O: the same journal always gives the same state, so a
driver that died at any point rebuilds exactly what it knew. The events are listed in
:mod:`hpc_agent.store.events`. ``running`` is never journaled: it is read live from a trial's
``status.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from hpc_agent.config.space import config_key
from hpc_agent.store import events as ev
from hpc_agent.store.events import Event, copy_with


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
        """Has the trial ended for good (or until a requeue)?"""
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
# a configuration's own runs again: the champion's controls and a candidate's replicates (they
# estimate the noise; the configuration's screening result does not wait for them)
AGAIN = ("control", "replicate")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the journal knows it: its plan, where it stands, and how it ended."""

    trial_id: str
    generation: int
    index: int
    config_id: str  # trials of one proposal share it (one trial per seed)
    seed: int
    params: Mapping[str, Any]
    hypothesis: str = ""
    parent: str | None = None  # the champion trial whose code this one edits
    source: str = ""  # who proposed it: baseline, random, tpe, llm, tpe-fill, control, ...
    patch: tuple[Mapping[str, Any], ...] | None = None
    purpose: str = ""  # "" (the search), "control", "replicate", "confirm" or "rerun" (see PlannedTrial)
    of: str | None = None  # the configuration a confirm or rerun trial runs again
    budget_multiplier: float = 1.0
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
    """One submission: its trials, and whether the scheduler took it."""

    token: str
    generation: int
    trial_ids: tuple[str, ...]
    executor: str
    state: str = "submitting"  # submitting -> submitted | failed
    job_ids: tuple[str, ...] = ()
    trial_jobs: Mapping[str, str] | None = None  # per-trial job id, where the executor knows it
    error: str = ""
    at: float = 0.0
    width: int = 0  # at most this many of its trials at once (0: all of them)


@dataclass(frozen=True)
class GenerationRecord:
    """One generation: its planner and trials, and which phases are done."""

    generation: int
    planner: str = ""
    note: str = ""  # e.g. "LLM unreachable: fell back to TPE"
    trial_ids: tuple[str, ...] = ()
    planning: bool = False
    planned: bool = False
    analyzed: bool = False
    done: bool = False
    planning_at: float = 0.0  # when the planner was last asked for it
    planned_at: float = 0.0
    done_at: float = 0.0

    @property
    def planning_s(self) -> float | None:
        """How long its planner took (None before it was planned, or for an old journal)."""
        if not (self.planned and self.planning_at):
            return None
        return max(0.0, self.planned_at - self.planning_at)


@dataclass
class StateViews:
    """The derived indexes of a campaign's state: what its queries read, kept current as the
    fold applies events (:meth:`planned`, :meth:`trial_changed`, :meth:`judged`) so that asking
    costs no more as the history grows. Nothing here is in the journal: every index can be
    rebuilt from the fold (``replay``), and :meth:`snapshot` copies them for a reader on
    another thread. The fold (:class:`CampaignState`) owns the records; the views only point
    at them (trial ids, config ids) or cache what was computed from them."""

    trials_by_config: dict[str, list[str]] = field(default_factory=dict)  # config -> its trials
    keys: dict[str, str] = field(default_factory=dict)  # config -> its config_key
    # configs() kept up to date: each configuration's result at its place in plan order, and
    # the configurations whose result must be computed again (a trial or verdict changed)
    config_list: list[ConfigResult | None] = field(default_factory=list)
    config_at: dict[str, int] = field(default_factory=dict)
    config_dirty: set[str] = field(default_factory=set)
    unjudged: dict[str, None] = field(default_factory=dict)  # search configs, no verdict yet
    best: dict[str, TrialRecord | None] = field(default_factory=dict)  # mode -> best trial
    counts: dict[int, dict[str, int]] = field(default_factory=dict)  # generation -> by state
    trial_changes: int = 0  # how many times a trial's record changed
    # config -> (its unfinished search runs, its completed values)
    tallies: dict[str, tuple[int, int]] = field(default_factory=dict)

    def planned(self, record: TrialRecord) -> None:
        """A trial was planned: it joins its configuration (in plan order)."""
        self.trials_by_config.setdefault(record.config_id, []).append(record.trial_id)

    def trial_changed(self, prev: TrialRecord | None, record: TrialRecord) -> None:
        """A trial's record changed from ``prev`` (None: new) to ``record``."""
        self.trial_changes += 1
        counts = self.counts.get(record.generation)
        if counts is None:
            counts = self.counts[record.generation] = {s.value: 0 for s in STATE_ORDER}
        if prev is not None:
            counts[prev.state.value] -= 1
        counts[record.state.value] += 1
        if record.config_id not in self.config_at and not record.purpose:
            self.unjudged[record.config_id] = None
        if prev is None or prev.state.is_finished() or record.state.is_finished():
            # a configuration's result sees its trials' ends only (planned -> submitted: none)
            self._config_changed(record.config_id)
            self._tally(prev, record)
        for mode, best in list(self.best.items()):  # the best so far, kept up to date
            if best is not None and best.trial_id == record.trial_id:
                del self.best[mode]  # the best trial itself changed: look again when asked
            elif (
                record.state is TrialState.COMPLETED
                and _finite(record.objective)
                and (best is None or _better(record, best, mode))
            ):
                self.best[mode] = record

    def judged(self, e: ev.Verdict) -> None:
        """Configuration ``e.config`` got a verdict: its cached result carries it."""
        at = self.config_at.get(e.config)
        if at is not None:
            known = self.config_list[at]
            if known is None or e.config in self.config_dirty:
                self.config_dirty.add(e.config)
            else:  # only the verdict changed: no need to go through its trials again
                self.config_list[at] = copy_with(
                    known, verdict=e.verdict, verdict_reason=e.reason, improvement=e.improvement
                )
        self.unjudged.pop(e.config, None)

    def _tally(self, prev: TrialRecord | None, record: TrialRecord) -> None:
        """Keep each configuration's count of unfinished search runs and of completed values
        (what :meth:`CampaignState.settled_unjudged` and :meth:`CampaignState.configs_with_values`
        select by)."""
        unfinished, values = self.tallies.get(record.config_id, (0, 0))
        for trial, sign in ((prev, -1), (record, 1)):
            if trial is None:
                continue
            if trial.purpose not in AGAIN and trial.state not in _FINISHED:
                unfinished += sign
            if trial.state is TrialState.COMPLETED and _finite(trial.objective):
                values += sign
        self.tallies[record.config_id] = (unfinished, values)  # a tuple: a snapshot shares it

    def _config_changed(self, cid: str) -> None:
        """Configuration ``cid`` (new, or one of its trials or its verdict changed)."""
        if cid not in self.config_at:
            self.config_at[cid] = len(self.config_list)
            self.config_list.append(None)
        self.config_dirty.add(cid)

    def snapshot(self) -> StateViews:
        """A copy that later events do not change (the cached results and records are
        immutable: the containers are copied, not them)."""
        return StateViews(
            trials_by_config={k: list(v) for k, v in self.trials_by_config.items()},
            keys=dict(self.keys),
            config_list=list(self.config_list),
            config_at=dict(self.config_at),
            config_dirty=set(self.config_dirty),
            unjudged=dict(self.unjudged),
            best=dict(self.best),
            counts={generation: dict(c) for generation, c in self.counts.items()},
            trial_changes=self.trial_changes,
            tallies=dict(self.tallies),
        )


@dataclass
class CampaignState:
    """Everything the journal says, folded by :meth:`apply` (one handler per event kind), and
    the queries on it. The derived indexes the queries read are :attr:`views`
    (:class:`StateViews`), kept current as events apply: the per-configuration view and the
    best trial are recomputed only for what an event changed."""

    name: str = ""
    spec: Mapping[str, Any] = field(default_factory=dict)
    spec_hash: str = ""
    identity_hash: str = ""
    generations: dict[int, GenerationRecord] = field(default_factory=dict)
    trials: dict[str, TrialRecord] = field(default_factory=dict)
    submissions: dict[str, SubmissionRecord] = field(default_factory=dict)
    runs: int = 0
    run_times: tuple[float, ...] = ()  # when each driver started (its "run" event)
    cancelled: bool = False  # a cancel came after the last run started
    last_run_end: str = ""
    started_at: float = 0.0
    events: int = 0
    verdicts: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # config -> its verdict
    champion_id: str | None = None  # the last configuration kept
    candidates: dict[str, None] = field(default_factory=dict)  # configs awaiting their replicate, plan order
    stopped: str = ""  # the stop rule that ended the search, as last journaled ("" none)
    stopped_detail: str = ""
    views: StateViews = field(default_factory=StateViews, repr=False)

    # ------------------------------------------------------------------ applying events
    def apply(self, event: Event) -> None:
        """Apply one event (unknown kinds were already dropped by :func:`events.parse`)."""
        self.events += 1
        handler = HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _set_trial(self, record: TrialRecord) -> None:
        prev = self.trials.get(record.trial_id)
        self.trials[record.trial_id] = record
        self.views.trial_changed(prev, record)

    @property
    def trial_changes(self) -> int:
        """How many times a trial's record changed (the driver's "anything to gather?")."""
        return self.views.trial_changes

    def snapshot(self) -> CampaignState:
        """A copy that later events do not change (its records are immutable: the containers
        are copied, not the records), for a reader on another thread; the views too."""
        return replace(
            self,
            generations=dict(self.generations),
            trials=dict(self.trials),
            submissions=dict(self.submissions),
            verdicts=dict(self.verdicts),
            candidates=dict(self.candidates),
            views=self.views.snapshot(),
        )

    # ------------------------------------------------------------------ queries
    def trials_of(self, generation: int) -> list[TrialRecord]:
        """The trials of one generation, in plan order."""
        record = self.generations.get(generation)
        return [self.trials[trial] for trial in record.trial_ids] if record else []

    def completed_generations(self) -> int:
        """How many generations are done."""
        return sum(1 for record in self.generations.values() if record.done)

    def next_generation(self) -> int:
        """The generation to work on: the first one not done."""
        for generation in sorted(self.generations):
            if not self.generations[generation].done:
                return generation
        return max(self.generations, default=-1) + 1

    def pending_submissions(self) -> list[SubmissionRecord]:
        """Submissions whose outcome the journal does not know (the driver died in sbatch)."""
        return [s for s in self.submissions.values() if s.state == "submitting"]

    def counts(self, generation: int | None = None) -> dict[str, int]:
        """Trials by state (of one generation, or all); kept up to date as events apply."""
        out = {s.value: 0 for s in STATE_ORDER}
        for gen, counts in self.views.counts.items():
            if generation is None or gen == generation:
                for state, n in counts.items():
                    out[state] += n
        return out

    def unfinished(self) -> int:
        """How many trials are not finished (planned, submitted), from the kept counts."""
        done = {s.value for s in _FINISHED}
        return sum(n for counts in self.views.counts.values() for s, n in counts.items() if s not in done)

    def best(self, mode: str) -> TrialRecord | None:
        """The best completed trial (single seed view)."""
        views = self.views
        if mode not in views.best:
            done = [
                trial
                for trial in self.trials.values()
                if trial.state is TrialState.COMPLETED and _finite(trial.objective)
            ]
            sign = 1.0 if mode == "min" else -1.0
            views.best[mode] = min(
                done, key=lambda trial: (sign * (trial.objective or 0.0), trial.trial_id), default=None
            )
        return views.best[mode]

    def configs(self) -> list[ConfigResult]:
        """Trials grouped by proposal, in the order they were planned: the unit the planners
        learn from (mean objective over seeds)."""
        for cid in list(self.views.config_dirty):  # only those that changed since the last call
            self._refresh(cid)
        return list(self.views.config_list)  # type: ignore[arg-type]  # none left: all refreshed

    def config(self, cid: str) -> ConfigResult | None:
        """One configuration's result (None: no such configuration)."""
        at = self.views.config_at.get(cid)
        if at is None:
            return None
        if cid in self.views.config_dirty:
            self._refresh(cid)
        return self.views.config_list[at]

    def settled_unjudged(self) -> list[ConfigResult]:
        """The configurations of the search without a verdict yet whose runs have all
        finished, in plan order: what :func:`hpc_agent.science.rigor.verdicts_due` judges, computed
        without the whole history or the pending ones."""
        tallies = self.views.tallies
        out = [self.config(cid) for cid in self.views.unjudged if tallies[cid][0] == 0]
        return [c for c in out if c is not None]

    def unjudged_ids(self) -> list[str]:
        """The configurations of the search without a verdict, finished or not, in plan order."""
        return list(self.views.unjudged)

    def configs_with_values(self, n: int) -> list[ConfigResult]:
        """The configurations with at least ``n`` completed values, in plan order (what the
        noise floor pools, :func:`hpc_agent.science.rigor.noise`), computing no other."""
        tallies = self.views.tallies
        out = [self.config(cid) for cid in self.views.config_at if tallies[cid][1] >= n]
        return [c for c in out if c is not None]

    def _refresh(self, cid: str) -> None:
        views = self.views
        trials = [self.trials[trial] for trial in views.trials_by_config[cid]]
        views.config_list[views.config_at[cid]] = _config_result(cid, trials, self.verdicts.get(cid))
        views.config_dirty.discard(cid)

    def config_keys(self) -> set[str]:
        """Every experiment planned so far, as :func:`hpc_agent.config.space.config_key` keys (each
        computed once, when first asked for)."""
        keys = self.views.keys
        for cid, trial_ids in self.views.trials_by_config.items():
            if cid not in keys:
                trial = self.trials[trial_ids[0]]
                keys[cid] = config_key(trial.params, trial.patch, trial.parent)
        return set(keys.values())

    def champion(self, mode: str) -> ConfigResult | None:
        """The champion: the last configuration the promotion rule kept (:mod:`hpc_agent.science.rigor`);
        in a journal without verdicts (release 0.1.0), the best mean so far."""
        if self.champion_id is not None:
            return self.config(self.champion_id)
        scored = [c for c in self.configs() if c.objective is not None and not c.pending]
        if not scored:
            return None
        sign = 1.0 if mode == "min" else -1.0
        return min(scored, key=lambda c: (sign * (c.objective or 0.0), c.config_id))


@dataclass(frozen=True)
class ConfigResult:
    """One proposal's result over its seeds: the unit the planners learn from."""

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
    pending: bool  # a run of the configuration itself is still to come (controls, replicates aside)
    failed_reasons: tuple[str, ...]
    values: tuple[float, ...] = ()  # every completed run's objective, controls included
    purpose: str = ""  # "" (the search), "confirm" or "rerun" (then ``of`` is the original)
    of: str | None = None
    budget_multiplier: float = 1.0
    controlled: bool = False  # it was run again as a control (its values estimate the noise)
    replicated: bool = False  # it was run again as a candidate's replicate (its values too)
    verdict: str = ""  # keep, discard, crash, candidate ("" before it finished, or not judged yet)
    verdict_reason: str = ""
    improvement: float | None = None  # over the champion of its moment (positive: better)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _better(a: TrialRecord, b: TrialRecord, mode: str) -> bool:
    """Is trial a better than trial b (ties: the earlier trial id wins, as in ``best``)?"""
    sign = 1.0 if mode == "min" else -1.0
    return (sign * (a.objective or 0.0), a.trial_id) < (sign * (b.objective or 0.0), b.trial_id)


def _config_result(cid: str, trials: list[TrialRecord], verdict: Mapping[str, Any] | None) -> ConfigResult:
    if len(trials) > 1:
        trials = sorted(trials, key=lambda trial: trial.trial_id)
    values: list[float] = []
    failed: list[str] = []
    pending = controlled = replicated = False
    for trial in trials:  # one pass: the driver computes this for every trial that ends
        done = trial.state in _FINISHED
        if trial.state is TrialState.COMPLETED:
            if trial.objective is not None and math.isfinite(trial.objective):
                values.append(float(trial.objective))
        elif done:
            failed.append(f"{trial.trial_id}: {trial.state.value}: {trial.reason}")
        if trial.purpose == "control":
            controlled = True
        elif trial.purpose == "replicate":
            replicated = True
        elif not done:
            pending = True
    first = trials[0]
    judged = verdict or {}
    return ConfigResult(
        config_id=cid,
        generation=first.generation,
        params=first.params,
        hypothesis=first.hypothesis,
        source=first.source,
        parent=first.parent,
        patch=first.patch,
        trial_ids=tuple(trial.trial_id for trial in trials),
        objective=sum(values) / len(values) if values else None,
        n_completed=len(values),
        pending=pending,
        failed_reasons=tuple(failed),
        values=tuple(values),
        purpose=first.purpose,
        of=first.of,
        budget_multiplier=first.budget_multiplier,
        controlled=controlled,
        replicated=replicated,
        verdict=str(judged.get("verdict", "")),
        verdict_reason=str(judged.get("reason", "")),
        improvement=judged.get("improvement"),
    )


# ------------------------------------------------------------------------------- the handlers


def _on_spec(state: CampaignState, event: ev.Campaign) -> None:
    state.spec, state.spec_hash, state.identity_hash = event.spec, event.spec_hash, event.identity_hash
    state.name = event.name or state.name
    if type(event) is ev.Campaign:
        state.started_at = event.t


def _on_run(state: CampaignState, event: ev.Run) -> None:
    state.runs += 1
    state.run_times = (*state.run_times, event.t)
    state.cancelled = False
    state.stopped = state.stopped_detail = ""  # each run judges the stop rules anew (a rule may have changed)


def _on_run_ended(state: CampaignState, event: ev.RunEnded) -> None:
    state.last_run_end = event.status


def _on_cancelled(state: CampaignState, event: ev.Cancelled) -> None:
    state.cancelled = True


def _on_stopped(state: CampaignState, event: ev.Stopped) -> None:
    state.stopped, state.stopped_detail = event.rule, event.detail


def _generation(state: CampaignState, generation: int) -> GenerationRecord:
    return state.generations.get(generation) or GenerationRecord(generation)


def _on_planning(state: CampaignState, event: ev.Planning) -> None:
    state.generations[event.generation] = replace(
        _generation(state, event.generation), planning=True, planner=event.planner, planning_at=event.t
    )
    state.generations = dict(sorted(state.generations.items()))


def _on_planned(state: CampaignState, event: ev.Planned) -> None:
    for p in event.trials:
        rec = TrialRecord(
            trial_id=p.trial_id,
            generation=event.generation,
            index=p.index,
            config_id=p.config,
            seed=p.seed,
            params=p.params,
            hypothesis=p.hypothesis,
            parent=p.parent,
            source=p.source,
            patch=p.patch,
            purpose=p.purpose,
            of=p.of,
            budget_multiplier=p.budget_multiplier,
        )
        state.views.planned(rec)
        state._set_trial(rec)
    state.generations[event.generation] = replace(
        _generation(state, event.generation),
        planned=True,
        planner=event.planner,
        note=event.note,
        trial_ids=tuple(p.trial_id for p in event.trials),
        planned_at=event.t,
    )
    state.generations = dict(sorted(state.generations.items()))


def _on_submitting(state: CampaignState, event: ev.Submitting) -> None:
    state.submissions[event.token] = SubmissionRecord(
        event.token, event.generation, tuple(event.trials), event.executor, at=event.t, width=event.width
    )
    for tid in event.trials:
        trial = state.trials.get(tid)
        if trial is not None:
            state._set_trial(
                copy_with(trial, state=TrialState.SUBMITTED, token=event.token, attempt=trial.attempt + 1)
            )


def _on_submitted(state: CampaignState, event: ev.Submitted) -> None:
    sub = state.submissions.get(event.token)
    if sub is None:
        return
    state.submissions[event.token] = replace(
        sub, state="submitted", job_ids=tuple(event.job_ids), trial_jobs=event.trial_jobs
    )
    for tid, jid in (event.trial_jobs or {}).items():
        trial = state.trials.get(tid)
        if trial is not None and trial.token == event.token:
            state._set_trial(copy_with(trial, job_id=jid))


def _on_widened(state: CampaignState, event: ev.Widened) -> None:
    sub = state.submissions.get(event.token)
    if sub is not None:
        state.submissions[event.token] = replace(sub, width=event.width)


def _on_submit_failed(state: CampaignState, event: ev.SubmitFailed) -> None:
    sub = state.submissions.get(event.token)
    if sub is None:
        return
    state.submissions[event.token] = replace(sub, state="failed", error=event.error)
    for tid in sub.trial_ids:
        trial = state.trials.get(tid)
        if trial is not None and trial.token == event.token and not trial.state.is_finished():
            state._set_trial(copy_with(trial, state=TrialState.PLANNED, attempt=trial.attempt - 1))


def _on_trial_ended(state: CampaignState, event: ev.TrialEnded) -> None:
    trial = state.trials.get(event.trial)
    if trial is None:
        return
    state._set_trial(
        copy_with(
            trial,
            state=TrialState(event.state),
            objective=event.objective,
            reason=event.reason,
            exit_code=event.exit_code,
            duration_s=event.duration_s,
            job_id=event.job_id or trial.job_id,
            ended_at=event.t,
            by_campaign_cancel=event.by_campaign_cancel,
        )
    )


def _on_requeued(state: CampaignState, event: ev.Requeued) -> None:
    trial = state.trials.get(event.trial)
    if trial is None:
        return
    state._set_trial(
        replace(
            trial,
            state=TrialState.PLANNED,
            retries=trial.retries + (1 if event.counted else 0),
            progress_requeues=trial.progress_requeues + (1 if event.progress else 0),
            earlier_duration_s=trial.earlier_duration_s + float(event.duration_s or 0.0),
            reason=event.reason,
            objective=None,
            exit_code=None,
            by_campaign_cancel=False,
        )
    )


def _on_verdict(state: CampaignState, event: ev.Verdict) -> None:
    state.verdicts[event.config] = {
        "verdict": event.verdict,
        "reason": event.reason,
        "improvement": event.improvement,
        "at": event.t,
    }
    state.views.judged(event)
    if event.verdict == "candidate":
        state.candidates[event.config] = None
    else:
        state.candidates.pop(event.config, None)
    if event.verdict == "keep":
        state.champion_id = event.config


def _on_analyzed(state: CampaignState, event: ev.Analyzed) -> None:
    state.generations[event.generation] = replace(_generation(state, event.generation), analyzed=True)


def _on_generation_done(state: CampaignState, event: ev.GenerationDone) -> None:
    state.generations[event.generation] = replace(
        _generation(state, event.generation), done=True, done_at=event.t
    )
    state.generations = dict(sorted(state.generations.items()))


HANDLERS: dict[type[Event], Callable[[CampaignState, Any], None]] = {
    ev.Campaign: _on_spec,
    ev.Spec: _on_spec,
    ev.Run: _on_run,
    ev.RunEnded: _on_run_ended,
    ev.Cancelled: _on_cancelled,
    ev.Stopped: _on_stopped,
    ev.Planning: _on_planning,
    ev.Planned: _on_planned,
    ev.Submitting: _on_submitting,
    ev.Submitted: _on_submitted,
    ev.Widened: _on_widened,
    ev.SubmitFailed: _on_submit_failed,
    ev.TrialEnded: _on_trial_ended,
    ev.Requeued: _on_requeued,
    ev.Verdict: _on_verdict,
    ev.Analyzed: _on_analyzed,
    ev.GenerationDone: _on_generation_done,
}


def replay(records: Iterable[Mapping[str, Any] | Event]) -> CampaignState:
    """The state a whole journal describes (its records, or parsed events). Pure; unknown
    kinds are skipped (a newer hpc-agent may write events an older one does not know)."""
    state = CampaignState()
    for r in records:
        event = r if isinstance(r, Event) else ev.parse(r)
        if event is None:
            state.events += 1
            continue
        state.apply(event)
    return state

"""Reconciling open trials with what really happened to them (the wait phase's work).

One entry point, :meth:`Reconciler.reconcile`: given the open trials, it returns the events
that follow from the world as it is now (``trial_ended``, ``requeued``), and nothing when
nothing changed. What it believes, in order:

1. a trial's own ``status.json`` (cheap, and the only source that knows the metric): read
   when its runner announced the end of an attempt in the generation's ``ended/`` folder
   (one listing a look, whatever the number of trials), and every STATUS_SWEEP_S for all
   open trials (again only when its modification time changed): the safety net for an end
   never announced, and what tells ``running`` from ``submitted``; a driver that starts
   again finds the notices the last one left, and sweeps STATUS_SWEEP_S later;
2. the scheduler, at most once per ``executor.poll_interval_s`` and in one batched call: a
   job it calls ``gone`` must be seen gone on two polls in a row (a status file may still be
   on its way through NFS) before its trial is concluded without a final status, and then
   the executor's translation of the scheduler's words (:attr:`JobStatus.ended_as`) decides
   the state;
3. the requeue rules (:func:`interrupted`): an interrupted attempt goes back to be submitted,
   counted against ``max_retries``, or against ``max_progress_requeues`` when it wrote a
   checkpoint, or not at all when a terminal stopped the driver.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from hpc_agent.config.defaults import STATUS_INTERVAL_S, STATUS_SWEEP_S
from hpc_agent.config.spec import CampaignSpec, ExperimentSection
from hpc_agent.executors.base import Executor, JobStatus
from hpc_agent.job.fileio import read_json
from hpc_agent.job.trial import (
    METRICS,
    RUNNING,
    STATUS,
    TIME_LIMIT,
    announced,
    attempt_duration,
    checkpoint_written_since,
    ends_attempt,
)
from hpc_agent.store.events import Event, Requeued, TrialEnded
from hpc_agent.store.metrics import MetricSummary, outcome, summarize
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.state import CampaignState, TrialRecord, TrialState

GONE_CONFIRMATIONS = 2  # polls that must see a job gone before its trial is concluded
TERMINAL_SIGNALS = ("SIGINT", "SIGHUP")  # from a terminal, not a scheduler: a free requeue
Gone = tuple[TrialRecord, str, str, "dict[str, Any] | None"]  # trial, state, reason, last status


class Reconciler:
    """The driver's memory of the trials' status files and of the scheduler's answers."""

    def __init__(self, paths: ResultsPaths, spec: CampaignSpec, executor: Executor) -> None:
        self.paths = paths
        self.spec = spec
        self.executor = executor
        self.job_info: dict[str, JobStatus] = {}
        self._status: dict[str, tuple[int, dict[str, Any] | None]] = {}  # trial -> (mtime_ns, status)
        self._paths: dict[str, str] = {}  # trial -> its status.json (the hot path: no pathlib)
        self._gone_seen: dict[str, int] = {}
        self._polled_at = -float("inf")
        # the first sweep STATUS_SWEEP_S after the start: what ended meanwhile was announced
        self._swept_at = time.monotonic()
        self._running: dict[str, str | None] = {}  # trial -> token, of the statuses last read running
        # metrics of trials that ended for good: their files no longer change (for the gather)
        self.summaries: dict[str, MetricSummary] = {}

    def submitted(self) -> None:
        """A submission was just made: the scheduler is not asked about it before an interval."""
        self._polled_at = time.monotonic()

    # ------------------------------------------------------------------ status files
    def status(self, trial: str, fresh: bool = False) -> dict[str, Any] | None:
        """The trial's status.json, read again only when it changed (or ``fresh``: read
        without looking at its time first, which the next sweep then reads once more)."""
        path = self._paths.get(trial)
        if path is None:
            path = self._paths[trial] = f"{self.paths.trial_dir(trial)}/{STATUS}"
        if fresh:
            mtime = -1
        else:
            try:
                mtime = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                return None
            cached = self._status.get(trial)
            if cached and cached[0] == mtime:
                return cached[1]
        raw = read_json(path)
        data: dict[str, Any] | None = raw if isinstance(raw, dict) else None
        self._status[trial] = (mtime, data)
        if data is not None and data.get("state") == RUNNING:
            self._running[trial] = data.get("token")
        else:
            self._running.pop(trial, None)
        return data

    def counts(self, state: CampaignState, generation: int) -> dict[str, int]:
        """Generation's trials by state, ``running`` told from ``submitted`` by the status
        files last read (this attempt's ``running``, not an earlier one's that died)."""
        counts = state.counts(generation)
        running = 0
        for trial, token in self._running.items():  # the trials last read running, only
            t = state.trials.get(trial)
            if t is not None and t.generation == generation and t.state is TrialState.SUBMITTED:
                running += token == t.token
        counts["submitted"] -= running
        counts["running"] = running
        return counts

    # ------------------------------------------------------------------ the entry point
    def reconcile(
        self, state: CampaignState, open_trials: Sequence[TrialRecord], poll: bool = True
    ) -> list[Event]:
        """The events that follow from what the open trials' files and the scheduler say now
        ([] when nothing changed); ``poll=False``: the status files only, every one read."""
        now = time.monotonic()
        sweep = not poll or now - self._swept_at >= STATUS_SWEEP_S
        if sweep:
            self._swept_at = now
        fresh = self._announced(open_trials)
        ended: list[tuple[TrialRecord, dict[str, Any]]] = []
        waiting: list[TrialRecord] = []
        for trial in open_trials:
            if trial.trial_id in fresh:
                status = self.status(trial.trial_id, fresh=True)
            elif sweep:
                status = self.status(trial.trial_id)
            else:
                waiting.append(trial)
                continue
            if status is not None and ends_attempt(status, trial.token):
                ended.append((trial, status))
            else:
                waiting.append(trial)
        gone: list[Gone] = []
        if poll and waiting and now - self._polled_at >= self.executor.poll_interval_s:
            self._polled_at = now
            gone = self._gone(state, waiting, ended)
        if not ended and not gone:
            return []
        return self._conclude(state, ended, gone)

    def _announced(self, open_trials: Sequence[TrialRecord]) -> set[str]:
        """The open trials whose runner announced an ended attempt since the last look: one
        listing of each of their generations' ``ended/`` folder. A notice is removed once
        read, so that a listing holds only the new ones (a driver killed before it recorded
        what the notice said reads every status file when it starts again)."""
        ids = {t.trial_id for t in open_trials}
        out: set[str] = set()
        for generation in {t.generation for t in open_trials}:
            folder = str(self.paths.ended(generation))
            for name in announced(folder):
                trial = name.split(".", 1)[0]
                if trial in ids:  # another's is left for the look that asks about it
                    out.add(trial)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{folder}/{name}")
        return out

    def _gone(
        self,
        state: CampaignState,
        waiting: Sequence[TrialRecord],
        ended: list[tuple[TrialRecord, dict[str, Any]]],
    ) -> list[Gone]:
        """One batched poll for the jobs of trials without a final status: the trials whose
        job is gone (seen twice), with what its ending means (one whose status, read again,
        did end the attempt after all joins ``ended``)."""
        by_job: dict[str, list[TrialRecord]] = {}
        for trial in waiting:
            sub = state.submissions.get(trial.token or "")
            if sub is None or sub.state != "submitted":
                continue
            for j in [trial.job_id] if trial.job_id else list(sub.job_ids):
                by_job.setdefault(j, []).append(trial)
        if not by_job:
            return []
        info = self.executor.poll(list(by_job))
        self.job_info.update(info)
        alive = {
            trial.trial_id
            for j, ts in by_job.items()
            if info.get(j, JobStatus(j, "gone")).alive
            for trial in ts
        }
        polled = {trial.trial_id for ts in by_job.values() for trial in ts}
        out: list[Gone] = []
        for trial in waiting:
            if trial.trial_id in alive or trial.trial_id not in polled:
                self._gone_seen.pop(trial.trial_id, None)
                continue
            seen = self._gone_seen[trial.trial_id] = self._gone_seen.get(trial.trial_id, 0) + 1
            if seen < GONE_CONFIRMATIONS:
                continue  # a status file may still be on its way (NFS attribute caches)
            status = self.status(trial.trial_id, fresh=True)
            if status is not None and ends_attempt(status, trial.token):
                ended.append((trial, status))  # it did finish, unannounced
                self._gone_seen.pop(trial.trial_id, None)
                continue
            job = info.get(trial.job_id or "") if trial.job_id else None
            out.append((trial, *gone_outcome(job, status), status))
            self._gone_seen.pop(trial.trial_id, None)
        return out

    def _conclude(
        self, state: CampaignState, ended: Sequence[tuple[TrialRecord, dict[str, Any]]], gone: Sequence[Gone]
    ) -> list[Event]:
        camp, exp = self.spec.campaign, self.spec.experiment
        files = {trial.trial_id: f"{self.paths.trial_dir(trial.trial_id)}/{METRICS}" for trial, _ in ended}
        summaries = (
            summarize(files, camp.metric, camp.mode, camp.objective, camp.gathered_metrics) if files else {}
        )
        events: list[Event] = []
        for trial, status in ended:
            raw = str(status["state"])
            st, objective, metric_reason = outcome(raw, summaries.get(trial.trial_id), camp.metric)
            reason = metric_reason or str(status.get("reason", ""))
            if state.cancelled and st in ("preempted", "cancelled"):  # `hpc-agent cancel` stopped it
                events.append(cancelled_by_campaign(trial.trial_id))
            elif st == "preempted":
                events.append(interrupted(trial, reason, status, st, exp))
            else:
                events.append(trial_ended(trial, st, objective, reason, status))
                if trial.trial_id in summaries:
                    self.summaries[trial.trial_id] = summaries[trial.trial_id]
        for trial, st, reason, last in gone:
            if TrialState(st).is_retryable():
                events.append(interrupted(trial, reason, self._progress_of(trial, last), st, exp))
            else:
                events.append(TrialEnded(trial=trial.trial_id, state=st, objective=None, reason=reason))
        return events

    def _progress_of(self, trial: TrialRecord, status: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A lost attempt's last status, with whether it wrote a checkpoint (nobody else could
        say: its runner died with it)."""
        if not status or status.get("token") != trial.token:
            return None
        started = status.get("started_at")
        if not isinstance(started, (int, float)):
            return dict(status)
        advanced = checkpoint_written_since(self.paths.trial(trial.trial_id).checkpoint, float(started))
        return {**status, "interrupted_by": None, "checkpoint_advanced": advanced}


def trial_ended(
    trial: TrialRecord, state: str, objective: float | None, reason: str, status: Mapping[str, Any]
) -> TrialEnded:
    """The end of a trial whose runner wrote its final word."""
    return TrialEnded(
        trial=trial.trial_id,
        state=state,
        objective=objective,
        reason=reason,
        exit_code=status.get("exit_code"),
        duration_s=status.get("duration_s"),
        job_id=status.get("job_id"),
        attempt=status.get("attempt"),
    )


def cancelled_by_campaign(trial: str) -> TrialEnded:
    """A trial stopped by ``hpc-agent cancel`` (``hpc-agent run`` resumes it)."""
    return TrialEnded(
        trial=trial,
        state="cancelled",
        objective=None,
        reason="campaign cancelled (hpc-agent cancel)",
        by_campaign_cancel=True,
    )


def resumed_after_cancel(state: CampaignState) -> list[Requeued]:
    """Trials stopped by ``hpc-agent cancel`` in an unfinished generation go back to be run."""
    return [
        Requeued(trial=trial.trial_id, reason="resumed after hpc-agent cancel", counted=False)
        for trial in state.trials.values()
        if trial.by_campaign_cancel
        and trial.state is TrialState.CANCELLED
        and not state.generations[trial.generation].done
    ]


def interrupted(
    trial: TrialRecord, reason: str, status: Mapping[str, Any] | None, state: str, exp: ExperimentSection
) -> Event:
    """The event for an interrupted attempt (preempted, stopped for the job's time limit,
    lost): ``requeued``, or ``trial_ended`` once its cap is spent.

    Three kinds of requeue, three rules: an attempt stopped from a terminal (Ctrl-C, a closed
    terminal) is free; one that wrote a checkpoint made progress and counts against
    ``max_progress_requeues``; any other counts against ``max_retries``."""
    status = dict(status or {})
    by = status.get("interrupted_by")
    progress = bool(status.get("checkpoint_advanced"))
    free = by in TERMINAL_SIGNALS
    duration = attempt_duration(status, trial.token)
    if (
        free
        or (progress and trial.progress_requeues < exp.max_progress_requeues)
        or (not progress and trial.retries < exp.max_retries)
    ):
        counted = not free and not progress
        return Requeued(
            trial=trial.trial_id,
            reason=reason,
            counted=counted,
            progress=progress,
            duration_s=duration,
            why=by or state,
        )
    if progress:
        why = (
            f"{reason} (gave up after {trial.progress_requeues} requeue(s) with progress: "
            "raise max_progress_requeues)"
        )
    elif by == TIME_LIMIT:
        state, why = (
            "timeout",
            (
                "the trial needs more than the job's time limit and wrote no checkpoint in "
                f"{trial.retries + 1} attempt(s): raise timeout_min, or save a checkpoint in "
                "hpc_agent.checkpoint_dir() and resume from it"
            ),
        )
    else:
        why = f"{reason} (gave up after {trial.retries} requeue(s))"
    return TrialEnded(trial=trial.trial_id, state=state, objective=None, reason=why, duration_s=duration)


def gone_outcome(job: JobStatus | None, status: Mapping[str, Any] | None) -> tuple[str, str]:
    """(state, reason) of a trial whose job vanished without a final status.json: what the
    executor says its ending means, and whether the trial had started."""
    where = (
        "while running" if status and status.get("state") in ("running", "cancelled") else "before it started"
    )
    if job is None or not job.ended_as:
        return "lost", f"its job ended {where}, without a final status (killed, or the node failed)"
    reason = f"{job.ended_why} {where}" + (f" ({job.reason})" if job.reason else "")
    return job.ended_as, reason + (f"; {job.ended_fix}" if job.ended_fix else "")


def next_delay(
    delay: float, changed: bool, n_open: int, executor: Executor, longest: float = STATUS_INTERVAL_S
) -> float:
    """How long the wait loop sleeps: from 50 ms right after a change, backing off to
    ``longest`` (STATUS_INTERVAL_S; the async schedule, which refills a slot the moment it
    frees, ASYNC_STATUS_INTERVAL_S) while nothing changes; with many trials open, a pass
    (over the open trials, and the status files of those that ended) costs more, so the
    shortest sleep grows with them (0.25 ms a trial: 250 ms at 1,000), keeping the driver's
    own CPU small however wide the generation."""
    shortest = min(longest, max(0.05, n_open * 0.00025))
    if changed:
        return shortest
    return max(shortest, min(delay * 1.5, longest, executor.poll_interval_s))

"""``hpc-agent status``: what a campaign is doing, read from its journal and its trials' files.

Read-only and cheap: it replays the journal, reads the status.json of unfinished trials, and
asks the executor of the jobs still queued what the scheduler says of them (one ``squeue`` on
SLURM). It loads neither Polars nor the planners: on a 1,000-trial campaign the whole command
takes a fraction of a second (docs/benchmarks.md).
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpc_agent.executors import EXECUTOR_KINDS, executor_class
from hpc_agent.journal import lock_holder, pid_alive
from hpc_agent.paths import ResultsPaths
from hpc_agent.results import load_state
from hpc_agent.state import CampaignState, TrialState
from hpc_agent.trial import is_running_for, read_status


@dataclass
class GenerationStatus:
    generation: int
    planner: str
    note: str
    trials: int
    counts: dict[str, int]
    best: float | None
    analyzed: bool
    done: bool
    job_ids: list[str] = field(default_factory=list)


@dataclass
class StatusReport:
    name: str
    results: str
    metric: str
    mode: str
    generations_planned: int
    generations_target: int
    generations_done: int
    counts: dict[str, int]
    driver: dict[str, Any] | None
    best: dict[str, Any] | None
    generations: list[GenerationStatus]
    failures: list[dict[str, Any]]
    queue: list[dict[str, str]] = field(default_factory=list)
    requeues: list[dict[str, Any]] = field(default_factory=list)  # trials that ran more than once
    cancelled: bool = False
    last_run_end: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def driver_info(paths: ResultsPaths) -> dict[str, Any] | None:
    """The driver holding the results folder's lock, if it is alive (on this host we know;
    on another host, ``alive`` is None and the lock's age tells how fresh it is)."""
    holder = lock_holder(paths.driver_lock)
    try:
        age = time.time() - paths.driver_lock.stat().st_mtime
    except OSError:
        return None
    if holder is None:
        return None
    host, pid = holder
    alive: bool | None = None
    if host == socket.gethostname():
        alive = pid_alive(pid)
        if not alive:
            return None
    return {"host": host, "pid": pid, "lock_age_s": round(age, 1), "alive": alive}


def live_counts(paths: ResultsPaths, state: CampaignState, generation: int) -> dict[str, int]:
    """Counts by state, with ``running`` read from the status files of submitted trials."""
    counts = state.counts(generation)
    for t in state.trials_of(generation):
        if t.state is TrialState.SUBMITTED and is_running_for(
            read_status(paths.trial(t.trial_id).root), t.token
        ):
            counts["submitted"] -= 1
            counts["running"] += 1
    return counts


def status_report(results: Path, queue: bool = True) -> StatusReport:
    state = load_state(results)
    paths = ResultsPaths(results)
    spec = state.spec
    camp = spec.get("campaign", {})
    mode = camp.get("mode", "min")
    gens = []
    total: dict[str, int] = {s.value: 0 for s in TrialState}
    for g, rec in state.generations.items():
        counts = live_counts(paths, state, g)
        for k, v in counts.items():
            total[k] += v
        done = [
            t.objective
            for t in state.trials_of(g)
            if t.state is TrialState.COMPLETED and t.objective is not None
        ]
        best = (min(done) if mode == "min" else max(done)) if done else None
        jobs = sorted(
            {
                j
                for s in state.submissions.values()
                if s.generation == g and s.state == "submitted"
                for j in s.job_ids
            }
        )
        gens.append(
            GenerationStatus(
                g, rec.planner, rec.note, len(rec.trial_ids), counts, best, rec.analyzed, rec.done, jobs
            )
        )
    best_t = state.best(mode)
    best_info: dict[str, Any] | None = None
    if best_t is not None:
        best_info = {
            "trial_id": best_t.trial_id,
            "objective": best_t.objective,
            "params": dict(best_t.params),
            "generation": best_t.generation,
        }
    failures = []
    for t in sorted(state.trials.values(), key=lambda t: t.trial_id):
        if t.state.is_finished() and t.state is not TrialState.COMPLETED:
            tp = paths.trial(t.trial_id)
            failures.append(
                {
                    "trial_id": t.trial_id,
                    "state": t.state.value,
                    "reason": t.reason,
                    "job_id": t.job_id,
                    "stderr": str(tp.stderr),
                    "job_log": _job_log(paths, t.generation, t.token, t.job_id),
                }
            )
    exp = spec.get("experiment", {})
    requeues = [
        {
            "trial_id": t.trial_id,
            "state": t.state.value,
            "attempts": t.attempt,
            "progress_requeues": t.progress_requeues,
            "max_progress_requeues": exp.get("max_progress_requeues", 50),
            "retries": t.retries,
            "max_retries": exp.get("max_retries", 2),
            "reason": t.reason,
        }
        for t in sorted(state.trials.values(), key=lambda t: t.trial_id)
        if t.progress_requeues or t.retries
    ]
    report = StatusReport(
        name=state.name,
        results=str(results),
        metric=camp.get("metric", ""),
        mode=mode,
        generations_planned=len(state.generations),
        generations_target=int(camp.get("generations", 0)),
        generations_done=state.completed_generations(),
        counts=total,
        driver=driver_info(paths),
        best=best_info,
        generations=gens,
        failures=failures,
        requeues=requeues,
        cancelled=state.cancelled,
        last_run_end=state.last_run_end,
    )
    if queue:
        report.queue = _queue_info(state)
    return report


def _job_log(paths: ResultsPaths, generation: int, token: str | None, job_id: str | None) -> str | None:
    """The SLURM job log of an array task (scheduler messages: OOM kills, cancels), if any."""
    if not token or not job_id or "_" not in job_id:
        return None
    log = paths.submitit / f"g{generation:04d}.{token}" / f"{job_id}_0_log.err"
    return str(log) if log.exists() else None


def _queue_info(state: CampaignState) -> list[dict[str, str]]:
    """Queued/running jobs of this campaign with the scheduler's reasons, asked of each
    executor kind that has open jobs (one call each)."""
    open_jobs: dict[str, set[str]] = {}
    for s in state.submissions.values():
        if s.state != "submitted" or s.executor not in EXECUTOR_KINDS:
            continue
        if any(not state.trials[t].state.is_finished() for t in s.trial_ids if t in state.trials):
            open_jobs.setdefault(s.executor, set()).update(s.job_ids)
    rows: list[dict[str, str]] = []
    for kind, jobs in sorted(open_jobs.items()):
        try:
            rows += executor_class(kind).create(overrides={}).queue(sorted(jobs))
        except Exception:  # a scheduler that does not answer: the journal's view is still shown
            continue
    return rows

"""``hpc-agent status``: what a campaign is doing, read from its journal and its trials' files.

Read-only and cheap: it replays the journal, reads the status.json of unfinished trials, and
asks the executor of the jobs still queued what the scheduler says of them (one ``squeue`` on
SLURM). It loads neither Polars nor the planners: on a 1,000-trial campaign the whole command
takes a fraction of a second (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpc_agent.config.defaults import DEFAULT_MAX_PROGRESS_REQUEUES, DEFAULT_MAX_RETRIES
from hpc_agent.config.spec import CampaignSpec
from hpc_agent.executors import EXECUTOR_KINDS, executor_class
from hpc_agent.executors.base import Executor
from hpc_agent.job.trial import is_running_for, read_status
from hpc_agent.science.rigor import VERDICTS, final_champion, noise, waiting
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import driver_info, load_state
from hpc_agent.store.state import CampaignState, ConfigResult, SubmissionRecord, TrialState


@dataclass
class GenerationStatus:
    """One generation's line in ``hpc-agent status``."""

    generation: int
    planner: str
    note: str
    trials: int
    counts: dict[str, int]
    best: float | None
    analyzed: bool
    done: bool
    job_ids: list[str] = field(default_factory=list)
    jobs: str = ""  # the jobs in words: "job 123, 124" on SLURM, "2 local lanes" locally


@dataclass
class StatusReport:
    """What ``hpc-agent status`` shows (``--json`` prints this, as a dict)."""

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
    noise: dict[str, Any] = field(default_factory=dict)  # sigma, n, from (hpc_agent.science.rigor)
    verdicts: dict[str, int] = field(default_factory=dict)  # keep/discard/crash/candidate/pending counts
    waiting: list[dict[str, str]] = field(default_factory=list)  # pending and candidate ones, and why
    champion: dict[str, Any] | None = None  # the last kept configuration
    champions: list[dict[str, Any]] = field(default_factory=list)  # every keep, oldest first
    confirmed: dict[str, Any] | None = None  # the final champion, on confirmed results
    cancelled: bool = False
    last_run_end: str = ""
    schedule: str = "sync"  # [campaign] schedule
    in_flight: list[int] = field(default_factory=list)  # generations with trials out now
    stopped: str = ""  # the stop rule that ended the search (hpc_agent.science.budget), "" none yet
    stopped_detail: str = ""
    budget: dict[str, Any] = field(default_factory=dict)  # used, limits, and in words ("text")

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data."""
        return asdict(self)


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
    """Everything ``hpc-agent status`` shows (``queue``: also ask the scheduler)."""
    state = load_state(results)
    paths = ResultsPaths(results)
    camp = state.spec.get("campaign", {})
    mode = camp.get("mode", "min")
    gens = _generations(paths, state, mode)
    total: dict[str, int] = {s.value: 0 for s in TrialState}
    for g in gens:
        for k, v in g.counts.items():
            total[k] += v
    best = state.best(mode)
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
        best=None
        if best is None
        else {
            "trial_id": best.trial_id,
            "objective": best.objective,
            "params": dict(best.params),
            "generation": best.generation,
        },
        generations=gens,
        failures=_failures(paths, state),
        requeues=_requeues(state),
        **_rigor(state, mode),
        cancelled=state.cancelled,
        last_run_end=state.last_run_end,
        schedule=str(camp.get("schedule", "sync")),
        in_flight=[g.generation for g in gens if g.counts["submitted"] + g.counts["running"]],
        stopped=state.stopped,
        stopped_detail=state.stopped_detail,
        budget=_budget(paths, state),
    )
    if queue:
        report.queue = _queue_info(state)
    return report


def _spec(state: CampaignState) -> CampaignSpec | None:
    """The campaign's spec as journaled, rebuilt without checks (a status never pays for
    validating, nor for pydantic); None: one this version cannot read."""
    from hpc_agent.config.spec import journaled_spec

    try:
        return journaled_spec(state.spec)
    except (KeyError, TypeError):
        return None


def _budget(paths: ResultsPaths, state: CampaignState) -> dict[str, Any]:
    """The budget used and its limits ({} for a spec this version cannot read)."""
    from hpc_agent.science.budget import GpuMeter, budget_summary

    spec = _spec(state)
    if spec is None:
        return {}
    return budget_summary(state, spec, GpuMeter(paths).hours(state) if spec.stop.max_gpu_hours else 0.0)


def _rigor(state: CampaignState, mode: str) -> dict[str, Any]:
    """The noise floor, the verdicts (pending and candidate ones with why), the champion and
    the confirmed one."""
    search = [c for c in state.configs() if not c.purpose]
    floor = noise(search)
    spec = _spec(state)
    waits = waiting(state, spec) if spec is not None else {}
    verdicts = [waits.get(c.config_id, (c.verdict, ""))[0] for c in search]
    champ = state.champion(mode)
    original, conf = final_champion(state, mode)
    return {
        "noise": {"sigma": floor.sigma, "n": floor.n, "from": floor.how, "text": floor.describe()},
        "verdicts": {v: verdicts.count(v) for v in VERDICTS},
        "waiting": [{"config": cid, "verdict": v, "why": why} for cid, (v, why) in waits.items()],
        "champion": None if champ is None else _config_info(champ),
        "champions": _champions(state),
        "confirmed": None
        if conf is None or original is None
        else {**_config_info(original), "confirmed": _config_info(conf)},
    }


def _champions(state: CampaignState) -> list[dict[str, Any]]:
    """The champion's history: every configuration kept, in the order it was kept, with its
    generation and its objective now."""
    kept = sorted(
        ((float(v.get("at") or 0.0), cid) for cid, v in state.verdicts.items() if v.get("verdict") == "keep"),
    )
    out = []
    for at, cid in kept:
        c = state.config(cid)
        if c is not None:
            out.append({**_config_info(c), "generation": c.generation, "at": at})
    return out


def _config_info(c: ConfigResult) -> dict[str, Any]:
    return {"config": c.config_id, "objective": c.objective, "runs": c.n_completed, "params": dict(c.params)}


def _generations(paths: ResultsPaths, state: CampaignState, mode: str) -> list[GenerationStatus]:
    out = []
    for g, rec in state.generations.items():
        done = [
            t.objective
            for t in state.trials_of(g)
            if t.state is TrialState.COMPLETED and t.objective is not None
        ]
        best = (min(done) if mode == "min" else max(done)) if done else None
        subs = [s for s in state.submissions.values() if s.generation == g and s.state == "submitted"]
        jobs = sorted({j for s in subs for j in s.job_ids})
        counts = live_counts(paths, state, g)
        out.append(
            GenerationStatus(
                g,
                rec.planner,
                rec.note,
                len(rec.trial_ids),
                counts,
                best,
                rec.analyzed,
                rec.done,
                jobs,
                _jobs_text(subs, narrowed=not rec.done),
            )
        )
    return out


def _jobs_text(subs: list[SubmissionRecord], narrowed: bool = False) -> str:
    """A generation's jobs in the words of each executor kind that ran them; ``narrowed``:
    with how many of a narrowed submission's trials may run at once (async)."""
    by_kind: dict[str, list[str]] = {}
    for s in subs:
        by_kind.setdefault(s.executor, []).extend(s.job_ids)
    parts = []
    for kind, ids in sorted(by_kind.items()):
        cls = executor_class(kind) if kind in EXECUTOR_KINDS else Executor
        parts.append(cls.describe_jobs(sorted(set(ids))))
    widths = [f"{s.width} of {len(s.trial_ids)} at once" for s in subs if s.width and narrowed]
    return "; ".join(parts + widths)


def _failures(paths: ResultsPaths, state: CampaignState) -> list[dict[str, Any]]:
    """Every trial that ended without completing, with the logs to read."""
    return [
        {
            "trial_id": t.trial_id,
            "state": t.state.value,
            "reason": t.reason,
            "job_id": t.job_id,
            "stderr": str(paths.trial(t.trial_id).stderr),
            "job_log": job_log(paths, t.generation, t.token, t.job_id),
        }
        for t in sorted(state.trials.values(), key=lambda t: t.trial_id)
        if t.state.is_finished() and t.state is not TrialState.COMPLETED
    ]


def _requeues(state: CampaignState) -> list[dict[str, Any]]:
    """Every trial that ran more than once, with both requeue counts and their caps."""
    exp = state.spec.get("experiment", {})
    return [
        {
            "trial_id": t.trial_id,
            "state": t.state.value,
            "attempts": t.attempt,
            "progress_requeues": t.progress_requeues,
            "max_progress_requeues": exp.get("max_progress_requeues", DEFAULT_MAX_PROGRESS_REQUEUES),
            "retries": t.retries,
            "max_retries": exp.get("max_retries", DEFAULT_MAX_RETRIES),
            "reason": t.reason,
        }
        for t in sorted(state.trials.values(), key=lambda t: t.trial_id)
        if t.progress_requeues or t.retries
    ]


def job_log(paths: ResultsPaths, generation: int, token: str | None, job_id: str | None) -> str | None:
    """The SLURM job log of an array task (scheduler messages: OOM kills, cancels), if any."""
    if not token or not job_id or "_" not in job_id:
        return None
    log = paths.array_folder(generation, token) / f"{job_id}_0_log.err"
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

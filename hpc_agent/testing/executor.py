"""A scripted in-process executor: the campaign loop's recovery paths, tested in milliseconds.

No process runs. Each submitted trial's attempt plays a *fate* the test chose (complete, fail,
be preempted, vanish with its node, hang until told) the next time the campaign polls,
writing exactly what a real runner would write into the trial's folder (``status.json`` with
the attempt's token, ``metrics.jsonl``) and answering ``poll``/``find`` as a scheduler would.
The executor instance is "the cluster": keep it across two :class:`~hpc_agent.loop.campaign.Campaign`
objects to restart a driver, and :class:`DriverKilled` (raised from inside ``submit``) stands
for a ``kill -9`` of the driver at that instant.

The real executors (local processes, the local SLURM) are tested against the same loop in
tests/test_campaign.py, tests/test_slurm_cluster.py and tests/test_survive_slurm.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_agent.executors.base import Executor, JobStatus, SubmitError, SubmitRequest, Submitted
from hpc_agent.job.trial import Launch, assigned_to, read_status, write_status

FATES = ("complete", "fail", "preempt", "time_limit", "vanish", "hang", "diverge")


class DriverKilled(BaseException):
    """Stands for SIGKILL of the driver: nothing in the campaign catches it."""


@dataclass
class Fate:
    """What one attempt of a trial does: ``kind`` (one of :data:`FATES`), the objective it
    logs, whether it writes a checkpoint, for ``vanish`` the scheduler's word (``ended_as``:
    lost, cancelled, timeout, failed, preempted), and how long it runs first (``duration_s``)."""

    kind: str = "complete"
    objective: float | None = None
    checkpoint: bool = False
    ended_as: str = "lost"
    duration_s: float = 0.0  # how long the attempt runs (wall clock) before it plays its fate


@dataclass
class _Job:
    job_id: str
    trial_id: str
    trial_dir: Path
    token: str
    state: str = "pending"  # pending -> running -> gone
    ended_as: str = ""
    played: bool = False
    fate: Fate | None = None  # while it runs out its duration
    ends_at: float = 0.0
    started: float = 0.0


@dataclass
class ScriptedExecutor(Executor):
    """See the module docstring. ``fates[trial_id]`` lists the fates of its attempts in order
    (then ``complete``); ``objective(params)`` is what a completed attempt logs by default."""

    objective: Callable[[Mapping[str, Any]], float] = lambda params: 1.0
    duration: Callable[[Mapping[str, Any]], float] = lambda params: 0.0  # a default fate's duration_s
    metric: str = "loss"
    fates: dict[str, list[Fate]] = field(default_factory=dict)
    refuse_next: str = ""  # the next submit raises SubmitError with this message
    kill_in_submit: str = ""  # "before": killed before the scheduler got it; "after": once it had
    jobs: dict[str, _Job] = field(default_factory=dict)
    submissions: list[SubmitRequest] = field(default_factory=list)
    executions: dict[str, int] = field(default_factory=dict)  # trial id -> attempts played
    widths: dict[str, int] = field(default_factory=dict)  # token -> width (0: all at once)
    most_at_once: int = 0  # the most attempts that ever ran at once, over all submissions
    name: str = "scripted"
    poll_interval_s: float = 0.0
    can_widen: bool = True

    # ------------------------------------------------------------------ the seam
    def submit(self, request: SubmitRequest) -> Submitted:
        """Records the submission and makes one job per trial; plays ``refuse_next`` and
        ``kill_in_submit``."""
        if self.refuse_next:
            message, self.refuse_next = self.refuse_next, ""
            raise SubmitError(message=message, fix="scripted refusal")
        kill, self.kill_in_submit = self.kill_in_submit, ""
        if kill == "before":
            raise DriverKilled("killed inside submit, before the scheduler had the jobs")
        self.submissions.append(request)
        self.widths[request.token] = request.width
        n = len(self.submissions)
        trial_jobs = {}
        for i, (tid, folder) in enumerate(zip(request.trial_ids, request.trial_dirs)):
            job = _Job(f"{n}_{i}", tid, Path(folder), request.token)
            self.jobs[job.job_id] = job
            trial_jobs[tid] = job.job_id
        if kill == "after":
            raise DriverKilled("killed inside submit, after the scheduler took the jobs")
        return Submitted(tuple(trial_jobs.values()), trial_jobs)

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Every pending job plays its fate now; then each job's state, as a scheduler says."""
        for jid in job_ids:
            job = self.jobs.get(jid)
            if job is not None and not job.played and self._may_start(job):
                self._play(job)
            elif job is not None and job.fate and job.state == "running" and time.time() >= job.ends_at:
                fate, job.fate = job.fate, None  # it ran out its duration: now its fate
                self._act(job, fate)
        out = {}
        for jid in job_ids:
            job = self.jobs.get(jid)
            if job is None or job.state == "gone":
                ended = job.ended_as if job else ""
                if ended in ("", "lost"):  # no word from the scheduler: the loop says "lost"
                    out[jid] = JobStatus(jid, "gone")
                else:
                    out[jid] = JobStatus(
                        jid, "gone", ended.upper(), "", "", ended, f"job ended as {ended}", ""
                    )
            else:
                out[jid] = JobStatus(jid, job.state)
        return out

    def widen(self, request: SubmitRequest, job_ids: Sequence[str], width: int) -> None:
        """Up to ``width`` of the submission's jobs may run at once from now on."""
        self.widths[request.token] = width

    def _may_start(self, job: _Job) -> bool:
        """Within its submission's width (a throttled array task waits, as in SLURM)."""
        running = [j for j in self.jobs.values() if j.state == "running"]
        width = self.widths.get(job.token, 0)
        if width and sum(j.token == job.token for j in running) >= width:
            return False
        self.most_at_once = max(self.most_at_once, len(running) + 1)
        return True

    def find(self, request: SubmitRequest) -> list[str]:
        """The jobs of this submission's token."""
        return sorted(j.job_id for j in self.jobs.values() if j.token == request.token)

    def cancel(self, job_ids: Sequence[str], tokens: Sequence[str] = ()) -> None:
        """Ends these jobs (and those of these tokens); a running attempt writes ``cancelled``."""
        for job in self.jobs.values():
            if (job.job_id in job_ids or job.token in tokens) and job.state != "gone":
                if job.state == "running":
                    self._write_status(job, "cancelled", reason="job cancelled (scancel) while running")
                job.state, job.ended_as, job.fate = "gone", "cancelled", None

    # ------------------------------------------------------------------ the test's hand
    def finish(self, trial_id: str, objective: float | None = None) -> None:
        """A hanging attempt of ``trial_id`` completes now."""
        for job in self.jobs.values():
            if job.trial_id == trial_id and job.state == "running":
                self._complete(job, objective)

    # ------------------------------------------------------------------ what a runner writes
    def _play(self, job: _Job) -> None:
        job.played = True
        launch = Launch.read(job.trial_dir)
        status = read_status(job.trial_dir)
        if launch is None or not assigned_to(job.trial_dir, job.token):
            job.state, job.ended_as = "gone", "lost"  # the runner would refuse: nothing written
            return
        if status is not None and status.get("state") in ("completed", "failed", "timeout"):
            job.state = "gone"
            return
        attempt = self.executions.get(job.trial_id, 0)
        self.executions[job.trial_id] = attempt + 1
        queue = self.fates.get(job.trial_id, [])
        params = json.loads((job.trial_dir / "params.json").read_text())
        fate = queue[attempt] if attempt < len(queue) else Fate(duration_s=self.duration(params))
        self._write_status(job, "running")
        job.state, job.started = "running", time.time()
        if fate.duration_s > 0:
            job.fate, job.ends_at = fate, time.time() + fate.duration_s
            return
        self._act(job, fate)

    def _act(self, job: _Job, fate: Fate) -> None:
        if fate.checkpoint:
            (job.trial_dir / "checkpoint").mkdir(exist_ok=True)
            (job.trial_dir / "checkpoint" / "step").write_text(str(time.time()))
        if fate.kind == "complete":
            self._complete(job, fate.objective)
        elif fate.kind == "diverge":
            self._log(job, float("nan"))
            self._end(job, "completed", exit_code=0)
        elif fate.kind == "fail":
            self._end(job, "failed", reason="exit code 1: scripted failure", exit_code=1)
        elif fate.kind in ("preempt", "time_limit"):
            by = "time_limit" if fate.kind == "time_limit" else "SIGTERM"
            reason = f"interrupted by {by} (scripted)"
            self._end(job, "preempted", reason=reason, interrupted_by=by, checkpoint_advanced=fate.checkpoint)
        elif fate.kind == "vanish":
            job.state, job.ended_as = "gone", fate.ended_as
        # "hang": stays running until finish() or cancel()

    def _complete(self, job: _Job, objective: float | None) -> None:
        params = json.loads((job.trial_dir / "params.json").read_text())
        self._log(job, self.objective(params) if objective is None else objective)
        self._end(job, "completed", exit_code=0)

    def _log(self, job: _Job, value: float) -> None:
        with open(job.trial_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": 0, self.metric: value}) + "\n")

    def _end(self, job: _Job, state: str, **fields: Any) -> None:
        duration = max(0.01, round(time.time() - job.started, 3)) if job.started else 0.01
        self._write_status(job, state, duration_s=duration, **fields)
        job.state = "gone"

    def _write_status(self, job: _Job, state: str, **fields: Any) -> None:
        now = time.time()
        data = {
            "trial": job.trial_id,
            "state": state,
            "attempt": self.executions.get(job.trial_id, 1),
            "token": job.token,
            "job_id": job.job_id,
            "started_at": now,
            "updated_at": now,
            **fields,
        }
        write_status(job.trial_dir, data)  # as the runner does: the end announced in ended/

"""SLURM: one ``sbatch --array`` per generation, one task per trial.

**Submit.** A generation's trials become ONE job array (more only when the cluster's
``MaxArraySize`` or the profile's ``max_array_size`` forces chunks). The sbatch script is
submitit's (``_make_sbatch_string``: the same options, names and log layout,
``<array>_<task>_0_log.out``); each task runs ``python -m hpc_agent.slurm_task <tasks.json>``,
which picks its trial folder by ``SLURM_ARRAY_TASK_ID`` and runs it
(:func:`hpc_agent.slurm_task.run_array_task`).
Why not submitit's pickled call and ``srun``: every task paid ~0.1 s of CPU importing submitit
(and numpy) plus a job step launch, for features the runner already provides (signals, status);
on the 2-core test cluster that halved the throughput of short trials (bench/bench_slurm.py).
hpc-agent runs ``sbatch`` itself, so sbatch has a time limit, its own error message reaches the
user with the script it refused, and no job handle or class-level watcher is kept. The job name
is the submission's (``hpca.<campaign>.g0003.<token>``): a restarted driver finds its jobs by name.

**Poll.** Never one call per task: ONE ``squeue -r -t all`` for every array at once (array
tasks expanded; finished jobs are still listed for ``MinJobAge``), then ONE ``sacct`` for the
tasks squeue no longer knows. Without accounting (no ``sacct``, or ``accounting_storage/none``)
a task squeue has forgotten is ``gone`` with no scheduler state, and the campaign calls its
trial lost once it has seen it gone twice. A failing ``squeue`` (a busy controller) says
nothing about the jobs: they keep their last known state.

Everything that turns text into text (sbatch options and script, squeue/sacct/scontrol/sinfo
output, state mapping, the fix for a refusal) is a small pure function in
:mod:`hpc_agent.executors.slurm.text`, tested without a cluster; the commands are run by
:mod:`hpc_agent.executors.slurm.commands`; profiles are :mod:`hpc_agent.config.profiles`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpc_agent.config.defaults import DEFAULT_POLL_SLURM_S
from hpc_agent.config.profiles import Profile, load_profile
from hpc_agent.errors import CampaignError
from hpc_agent.executors.base import Executor, JobStatus, SubmitError, SubmitRequest, Submitted
from hpc_agent.executors.slurm.commands import query, scancel, set_throttles, squeue_rows, squeue_text
from hpc_agent.executors.slurm.text import (
    DEFAULT_MESSAGE_TIMEOUT_S,
    Partition,
    QueueRow,
    SlurmQueryError,
    accounting_enabled,
    chunk_bounds,
    expand_job_id,
    job_status,
    job_time_min,
    max_array_size,
    narrowed,
    parse_queue_rows,
    parse_sbatch_job_id,
    parse_scontrol_config,
    parse_sinfo_partitions,
    refusal_fix,
    sbatch_text,
    slurm_env_to_clear,
    split_parallelism,
    stop_before_s,
)
from hpc_agent.job.fileio import atomic_write_json
from hpc_agent.job.runner import die_with_parent
from hpc_agent.store.paths import array_folder_name

log = logging.getLogger(__name__)

SBATCH_TIMEOUT_S = 120.0  # sbatch waits for a busy controller; past this, give up (and look)
VISIBLE_GRACE_S = 60.0  # a task submitted this recently is never "gone" unless sacct says how it ended
SACCT_LOOKBACK = "now-30days"  # how far back `find` looks for a submission's jobs in sacct
SETTLE_MARGIN_S = 5.0


class SlurmExecutor(Executor):
    """Trials as SLURM array tasks: one array per generation, polled in two calls."""

    name = "slurm"
    can_widen = True

    def __init__(self, profile: Profile, *, parallelism: int = 0, poll_interval_s: float = 0.0) -> None:
        self.profile = profile
        self.parallelism = parallelism or profile.array_parallelism
        self.poll_interval_s = poll_interval_s or profile.poll_interval_s or DEFAULT_POLL_SLURM_S
        self._config: dict[str, str] | None = None
        self._submitted_at: dict[str, float] = {}  # array id -> when this process submitted it
        self._last: dict[str, JobStatus] = {}
        self._last_query_at = -float("inf")  # time.monotonic() of the last squeue

    @classmethod
    def from_profile(
        cls,
        profile: str,
        overrides: Mapping[str, Any],
        *,
        parallelism: int = 0,
        poll_interval_s: float = 0.0,
    ) -> SlurmExecutor:
        """The executor of a named (or path) profile with ``[executor]`` overrides applied."""
        return cls(load_profile(profile, overrides), parallelism=parallelism, poll_interval_s=poll_interval_s)

    @classmethod
    def create(
        cls,
        *,
        parallelism: int = 0,
        poll_interval_s: float = 0.0,
        profile: str = "",
        overrides: Mapping[str, Any],
    ) -> SlurmExecutor:
        """The registry's constructor (see :func:`hpc_agent.executors.make_executor`)."""
        return cls.from_profile(profile, overrides, parallelism=parallelism, poll_interval_s=poll_interval_s)

    def describe(self) -> str:
        """``slurm (profile NAME, partition P, at most N at a time, polls every S s)``."""
        p = self.profile
        where = f"profile {p.name}" if p.name else "no profile: the cluster's defaults"
        bits = [where]
        if p.partition:
            bits.append(f"partition {p.partition}")
        if self.parallelism:
            bits.append(f"at most {self.parallelism} at a time")
        bits.append(f"polls every {self.poll_interval_s:g} s")
        return f"slurm ({', '.join(bits)})"

    # ------------------------------------------------------------------ cluster facts
    def cluster_config(self) -> dict[str, str]:
        """``scontrol show config``, read once ({} when it cannot be read)."""
        if self._config is None:
            try:
                self._config = parse_scontrol_config(query(["scontrol", "show", "config"]))
            except SlurmQueryError as e:
                log.warning("cannot read the cluster's configuration (%s); assuming defaults", e)
                self._config = {}
        return self._config

    def max_array_size(self) -> int:
        """The most tasks one array may have: the cluster's ``MaxArraySize``, lowered by the
        profile's ``max_array_size``."""
        limit = max_array_size(self.cluster_config())
        if self.profile.max_array_size:
            limit = min(limit, self.profile.max_array_size)
        return limit

    @property
    def settle_s(self) -> float:
        """An sbatch killed with its driver may have sent its request: the controller acts on
        it within ``MessageTimeout`` (plus a margin), after which a job that is not listed
        was never submitted."""
        value = self.cluster_config().get("MessageTimeout", "").split()
        seconds = float(value[0]) if value and value[0].isdigit() else DEFAULT_MESSAGE_TIMEOUT_S
        return seconds + SETTLE_MARGIN_S

    def _partitions(self) -> list[Partition]:
        try:
            return parse_sinfo_partitions(query(["sinfo", "--noheader", "-o", "%P|%l|%G"]))
        except SlurmQueryError:
            return []

    # ------------------------------------------------------------------ submit
    def submit(self, request: SubmitRequest) -> Submitted:
        """The request's trials as ONE array (chunks only under ``MaxArraySize``), one task a
        trial; SubmitError with sbatch's own message and the script it refused."""
        n = len(request.trial_dirs)
        if n == 0:
            return Submitted((), {})
        folder = Path(request.submitit_dir) / array_folder_name(request.generation, request.token)
        folder.mkdir(parents=True, exist_ok=True)  # before sbatch: SLURM opens the logs there
        time_min = job_time_min(self.profile, request.timeout_min)
        bounds = chunk_bounds(n, self.max_array_size())
        sizes = [hi - lo for lo, hi in bounds]
        throttles = split_parallelism(narrowed(self.parallelism, request.width), sizes)
        env = dict(os.environ)
        for name in (*request.scrub_env, *slurm_env_to_clear(env)):
            env.pop(name, None)
        job_ids: list[str] = []
        trial_jobs: dict[str, str] = {}
        for k, ((lo, hi), throttle) in enumerate(zip(bounds, throttles)):
            stem = f"array-{k}" if len(bounds) > 1 else "array"
            script = self._write_array(request, folder / stem, lo, hi, time_min, throttle)
            array_id = self._sbatch(request, script, env, time_min, job_ids)
            for i in range(hi - lo):
                task = f"{array_id}_{i}"
                job_ids.append(task)
                trial_jobs[request.trial_ids[lo + i]] = task
        return Submitted(tuple(job_ids), trial_jobs)

    def widen(self, request: SubmitRequest, job_ids: Sequence[str], width: int) -> None:
        """``scontrol update ArrayTaskThrottle`` of each array (``%N`` shared as at submit)."""
        try:
            set_throttles(job_ids, narrowed(self.parallelism, width))
        except SlurmQueryError as e:
            raise SubmitError(message=f"could not widen {self.describe_jobs(job_ids)}: {e}") from None

    def _write_array(
        self, request: SubmitRequest, stem: Path, lo: int, hi: int, time_min: int, throttle: int
    ) -> Path:
        """``<stem>.tasks.json`` (trials lo..hi, the token, the job's time limit) and the sbatch
        script ``<stem>.sh`` that runs them; returns the script."""
        tasks_file = stem.with_name(stem.name + ".tasks.json")
        tasks = {
            "token": request.token,
            "trials": list(request.trial_dirs[lo:hi]),
            "time_limit_s": time_min * 60,
            "stop_before_s": stop_before_s(self.profile, time_min),
        }
        atomic_write_json(tasks_file, tasks)
        script = stem.with_name(stem.name + ".sh")
        text = sbatch_text(
            self.profile,
            folder=stem.parent,
            python=self.profile.python or shlex.quote(sys.executable),
            job_name=request.job_name,
            time_min=time_min,
            n_tasks=hi - lo,
            array_parallelism=throttle,
            tasks_file=str(tasks_file),
        )
        script.write_text(text, encoding="utf-8")
        return script

    def _sbatch(
        self, request: SubmitRequest, script: Path, env: dict[str, str], time_min: int, accepted: list[str]
    ) -> str:
        """Submit one array script; its array id, or SubmitError with sbatch's own message."""
        try:
            proc = subprocess.run(
                ["sbatch", "--parsable", str(script)],
                capture_output=True,
                text=True,
                timeout=SBATCH_TIMEOUT_S,
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
                # sbatch dies with the driver: a killed driver leaves no sbatch that could
                # still submit after the next driver has looked for its jobs
                preexec_fn=die_with_parent,
            )
            message = (
                proc.stderr.strip() or proc.stdout.strip() or f"sbatch exited with code {proc.returncode}"
            )
            array_id = parse_sbatch_job_id(proc.stdout) if proc.returncode == 0 else ""
        except FileNotFoundError:
            message, array_id = "sbatch is not on PATH", ""
        except subprocess.TimeoutExpired:
            message, array_id = f"sbatch did not answer within {SBATCH_TIMEOUT_S:g} s", ""
            # it may have been accepted all the same: report what exists, so that it is cancelled
            with contextlib.suppress(SlurmQueryError):
                accepted = accepted + [j for j in self.find(request) if j not in accepted]
        except SlurmQueryError as e:
            message, array_id = str(e), ""
        if not array_id:
            raise SubmitError(
                message=message,
                script=str(script),
                fix=refusal_fix(message, self.profile, time_min, self._partitions()),
                job_ids=list(accepted),
            )
        self._submitted_at[array_id] = time.time()
        return array_id

    # ------------------------------------------------------------------ poll
    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """At most one squeue (+ one sacct) per ``poll_interval_s``, however often it is called:
        the campaign re-checks right after every change, and a shared controller must not see
        that. In between, the last answer is served, except that a job last seen gone is
        reported alive: "gone" must come from a fresh look each time, so that the campaign's
        confirmations (gone twice) stay a poll interval apart."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        now = time.monotonic()
        if now - self._last_query_at < self.poll_interval_s and all(j in self._last for j in ids):
            return {j: _served_from_cache(self._last[j]) for j in ids}
        self._last_query_at = now
        arrays = sorted({j.split("_")[0] for j in ids})
        try:
            listed = parse_queue_rows(squeue_text(arrays, "%i|%T|%r|%N", expand=True, all_states=True))
        except SlurmQueryError as e:
            # the controller is busy or down: that says nothing about the jobs, keep waiting
            log.warning("squeue failed (%s); keeping the last known job states", e)
            return {
                j: self._last.get(j) or JobStatus(j, "pending", reason=f"squeue failed: {e}") for j in ids
            }
        out = {j: job_status(listed[j]) for j in ids if j in listed}
        missing = [j for j in ids if j not in listed]
        if missing:
            out.update(self._forgotten(missing))
        self._last.update(out)
        return out

    def _forgotten(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        """Tasks squeue no longer lists: how they ended, from sacct when there is accounting."""
        accounted = self.sacct_states(ids)
        now = time.time()
        out = {}
        for j in ids:
            row = accounted.get(j) if accounted is not None else None
            status = job_status(row) if row is not None else None
            if status is not None and status.state == "gone":
                out[j] = status
            elif now - self._submitted_at.get(j.split("_")[0], 0.0) < VISIBLE_GRACE_S:
                out[j] = JobStatus(j, "pending", reason="just submitted; squeue does not list it yet")
            elif status is not None:
                out[j] = JobStatus(
                    j, "gone", "", f"squeue no longer lists it, sacct still says {status.scheduler_state}"
                )
            else:
                why = (
                    "nor sacct" if accounted is not None else "(no accounting: sacct cannot say how it ended)"
                )
                out[j] = JobStatus(j, "gone", "", f"unknown to squeue {why}")
        return out

    def sacct_states(self, ids: Sequence[str]) -> dict[str, QueueRow] | None:
        """What sacct says of these tasks (array ranges expanded), in ONE call; None when the
        cluster has no usable accounting."""
        if not accounting_enabled(self.cluster_config()):
            return None
        arrays = sorted({j.split("_")[0] for j in ids})
        args = ["sacct", "-X", "--parsable2", "--noheader", "-j", ",".join(arrays)]
        args += ["-o", "JobID,State,ExitCode,Reason,NodeList"]
        try:
            return parse_queue_rows(query(args), sacct=True)
        except SlurmQueryError as e:
            log.warning("sacct failed (%s); jobs squeue forgot are gone without a known state", e)
            return None

    # ------------------------------------------------------------------ find, cancel
    def find(self, request: SubmitRequest) -> list[str]:
        """Task ids of the jobs named after this submission (squeue, then sacct)."""
        name = request.job_name
        found: set[str] = set()
        try:
            text = query(["squeue", "--noheader", "-r", "-t", "all", f"--name={name}", "-o", "%i"])
        except SlurmQueryError as e:
            # never answer "none" when we could not look: the trials would be submitted twice
            raise CampaignError(
                f"cannot look up the jobs of an interrupted submission ({name}): {e}",
                fix="run the same command again when the SLURM controller answers (nothing was lost)",
            ) from None
        found.update(t for line in text.splitlines() if line.strip() for t in expand_job_id(line))
        if accounting_enabled(self.cluster_config()):
            args = [
                "sacct",
                "-X",
                "--parsable2",
                "--noheader",
                f"--name={name}",
                "-S",
                SACCT_LOOKBACK,
                "-o",
                "JobID",
            ]
            with contextlib.suppress(SlurmQueryError):
                text = query(args)
                found.update(t for line in text.splitlines() if line.strip() for t in expand_job_id(line))
        return sorted(found, key=_job_sort_key)

    def cancel(self, job_ids: Sequence[str], tokens: Sequence[str] = ()) -> None:
        """ONE scancel for these jobs and every job named after one of the tokens."""
        scancel(job_ids, tokens)

    def queue(self, job_ids: Sequence[str]) -> list[dict[str, str]]:
        """Pending/running tasks with squeue's reasons, in one call ([] if squeue fails)."""
        try:
            return squeue_rows(job_ids)
        except SlurmQueryError:
            return []

    def close(self) -> None:
        """Forget the last squeue answer (the jobs go on)."""
        self._last.clear()


def _served_from_cache(status: JobStatus) -> JobStatus:
    if status.alive:
        return status
    return JobStatus(
        status.job_id, "running", status.scheduler_state, "ended; to be confirmed by the next squeue"
    )


def _job_sort_key(job_id: str) -> tuple[int, int]:
    main, _, task = job_id.partition("_")
    return (int(main) if main.isdigit() else 0, int(task) if task.isdigit() else -1)

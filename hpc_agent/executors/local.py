"""The local executor: trials as real subprocesses on this machine, through submitit.

submitit's local executor starts every array element at once, so hpc-agent submits one
element per *lane* (``parallelism`` of them, default: the cores), and each lane pulls the
next trial from the submission's ``queue.json`` (:func:`hpc_agent.executors.lane.run_lane`),
claiming it with an ``O_EXCL`` file. A local job id is the lane's submitit controller pid;
liveness is read from ``/proc`` (pid reuse and zombies guarded). Lanes get their share of the
GPUs the driver sees (submitit's local executor itself hides every GPU from its jobs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpc_agent.config.defaults import DEFAULT_POLL_LOCAL_S
from hpc_agent.executors.base import Executor, JobStatus, SubmitRequest, Submitted, scrubbed_environ
from hpc_agent.executors.lane import WIDTH_FILE, run_lane
from hpc_agent.job.fileio import atomic_write_json, atomic_write_text, read_json


def default_parallelism() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LocalExecutor(Executor):
    """Trials as real subprocesses on this machine, at most ``parallelism`` at a time."""

    name = "local"
    can_widen = True

    def __init__(self, parallelism: int = 0, poll_interval_s: float = DEFAULT_POLL_LOCAL_S) -> None:
        self.parallelism = parallelism or default_parallelism()
        self.max_running = self.parallelism  # each submission has its own lanes: async caps the sum
        self.poll_interval_s = poll_interval_s
        self._jobs: dict[str, Any] = {}  # job id -> submitit LocalJob, to reap what we started

    @classmethod
    def create(
        cls, *, parallelism: int = 0, poll_interval_s: float = 0.0, profile: str = "", overrides: Any = None
    ) -> LocalExecutor:
        """The registry's constructor (a profile means nothing to local lanes)."""
        return cls(parallelism, poll_interval_s or DEFAULT_POLL_LOCAL_S)

    def describe(self) -> str:
        """``local (N at a time)``."""
        return f"local ({self.parallelism} at a time)"

    @classmethod
    def describe_jobs(cls, job_ids: Sequence[str]) -> str:
        """``2 local lanes``: a lane's id is a process id, not a scheduler's job."""
        return f"{len(job_ids)} local lane{'s' if len(job_ids) != 1 else ''}"

    def submit(self, request: SubmitRequest) -> Submitted:
        """One submitit local job per lane (at most ``parallelism``), each pulling trials from the
        submission's queue; job ids are the lanes' controller pids."""
        import submitit  # loaded when a local submission is made, not to plan or report

        queue_dir = Path(request.queue_dir)
        queue_dir.mkdir(parents=True, exist_ok=True)
        queue_file = queue_dir / "queue.json"
        lanes = max(1, min(self.parallelism, len(request.trial_dirs)))
        per_lane = -(-len(request.trial_dirs) // lanes)
        if request.width:  # lanes from this index on wait to be widened
            write_width(queue_dir, request.width)
            per_lane = 3 * len(request.trial_dirs)  # a waiting lane may also wait for other submissions
        gpus = split_gpus(visible_gpus(), lanes)
        atomic_write_json(
            queue_file, {"token": request.token, "trials": list(request.trial_dirs), "lane_gpus": gpus}
        )
        executor = submitit.LocalExecutor(folder=str(Path(request.submitit_dir) / "%j"))
        executor._throttling = 0.0  # submitit waits 0.2 s between local jobs; lanes need no pause
        # the lane's limit is a safety net: each trial's budget is enforced by the runner
        executor.update_parameters(timeout_min=request.timeout_min * per_lane + 5, signal_delay_s=15)
        with scrubbed_environ(request.scrub_env):
            jobs = executor.map_array(run_lane, [str(queue_file)] * lanes, list(range(lanes)))
        for job in jobs:
            self._jobs[str(job.job_id)] = job
        return Submitted(tuple(str(j.job_id) for j in jobs), None)

    def widen(self, request: SubmitRequest, job_ids: Sequence[str], width: int) -> None:
        """Lanes below ``width`` may take trials: the submission's ``width`` file."""
        write_width(Path(request.queue_dir), width)

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """A lane is alive while its controller process is (read from ``/proc``; our own children
        are reaped)."""
        out = {}
        for jid in job_ids:
            job = self._jobs.get(jid)
            if job is not None and job._process is not None:
                alive = job._process.poll() is None  # also reaps our own finished children
                if not alive:
                    del self._jobs[jid]
            else:
                alive = _local_job_alive(jid)
            out[jid] = JobStatus(jid, "running" if alive else "gone")
        return out

    def close(self) -> None:
        """Forget the lanes' handles (the lanes go on)."""
        self._jobs.clear()

    def find(self, request: SubmitRequest) -> list[str]:
        """The lanes a dead driver started for this submission (from their ``lane-*.json``)."""
        found = []
        for lane_file in sorted(Path(request.queue_dir).glob("lane-*.json")):
            info = read_json(lane_file)
            if isinstance(info, dict) and info.get("ppid"):
                found.append(str(info["ppid"]))
        return found

    def cancel(self, job_ids: Sequence[str], tokens: Sequence[str] = ()) -> None:
        """SIGTERM to each live lane's controller (it passes it on to its trial: ``preempted``)."""
        for jid in job_ids:
            if jid.isdigit() and _local_job_alive(jid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(jid), signal.SIGTERM)  # the controller forwards it to its lane


def write_width(queue_dir: Path, width: int) -> None:
    """How many lanes of a submission may take trials (:func:`hpc_agent.executors.lane.width`)."""
    atomic_write_text(queue_dir / WIDTH_FILE, f"{int(width)}\n")


def visible_gpus() -> list[str]:
    """The GPUs this machine offers the driver: $CUDA_VISIBLE_DEVICES if set, else
    ``nvidia-smi``'s list (without importing torch), else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return (
        [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]
        if out.returncode == 0
        else []
    )


def split_gpus(gpus: Sequence[str], lanes: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each lane: the GPUs shared out evenly (4 GPUs, 2 lanes: "0,2"
    and "1,3"); with more lanes than GPUs, lanes share them in turn. "" with no GPU."""
    if not gpus:
        return [""] * lanes
    if lanes <= len(gpus):
        return [",".join(gpus[i::lanes]) for i in range(lanes)]
    return [gpus[i % len(gpus)] for i in range(lanes)]


def _local_job_alive(job_id: str) -> bool:
    """A local job is its submitit controller process; guard against pid reuse and zombies."""
    if not job_id.isdigit():
        return False
    proc = Path("/proc") / job_id
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and b"submitit" in cmdline

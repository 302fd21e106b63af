"""Executors: how a generation's trials reach processes, through submitit.

One small seam (:class:`Executor`), as in submitit: an executor *submits* a whole
submission in one call, *polls* the jobs it knows with one batched query, *finds* the jobs of
a submission whose outcome the journal missed (the driver died inside ``sbatch``), and
*cancels*. It never decides what a trial's outcome is: that comes from the trial's own
``status.json`` first, and from the scheduler only when the trial could not say.

``local`` runs on this machine. submitit's local executor starts every array element at
once, so hpc-agent submits one element per *lane* (``parallelism`` of them), and each lane
pulls the next trial from the submission's queue (:func:`hpc_agent.runner.run_lane`).
``slurm`` submits one ``sbatch --array`` per generation (chunked under ``MaxArraySize``), one
array task per trial (:mod:`hpc_agent.slurm`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_agent._io import atomic_write_json, read_json
from hpc_agent.errors import UserError

# the API key is never written anywhere: not in job scripts, nor in the jobs' environment
SECRET_ENV_VARS = ("OPENAI_API_KEY", "HPC_AGENT_API_KEY")


@dataclass(frozen=True)
class SubmitRequest:
    """Everything an executor needs to submit one submission (one array) of trials."""

    token: str  # unique; part of the job name so a restarted driver can find its jobs
    generation: int
    campaign: str
    trial_ids: tuple[str, ...]
    trial_dirs: tuple[str, ...]
    queue_dir: str  # gen-XXXX/submissions/<token>/
    submitit_dir: str  # results/<name>/submitit/
    timeout_min: int  # one trial's job limit
    scrub_env: tuple[str, ...] = SECRET_ENV_VARS

    @property
    def job_name(self) -> str:
        return job_name(self.campaign, self.generation, self.token)


def job_name(campaign: str, generation: int, token: str) -> str:
    """``hpca.<campaign>.g0003.<token>``: greppable in squeue, unique per submission."""
    return f"hpca.{campaign}.g{generation:04d}.{token}"


@dataclass(frozen=True)
class Submitted:
    job_ids: tuple[str, ...]
    trial_jobs: dict[str, str] | None = None  # trial id -> job id, where one task runs one trial


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says of one job (or array task)."""

    job_id: str
    state: str  # "pending" | "running" | "gone"
    scheduler_state: str = ""  # PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, TIMEOUT, ...
    reason: str = ""  # why it is pending, or how it ended
    node: str = ""

    @property
    def alive(self) -> bool:
        return self.state in ("pending", "running")


@dataclass
class SubmitError(Exception):
    """The scheduler refused a submission: its message, and the script it refused."""

    message: str
    script: str = ""
    fix: str = ""
    job_ids: list[str] = field(default_factory=list)  # chunks that did go through before the error

    def __str__(self) -> str:
        return self.message


class Executor(ABC):
    """The seam between the campaign loop and the machines that run trials.

    Call order per submission: ``submit`` once; ``poll`` as often as ``poll_interval_s``
    allows; ``find`` only for a submission the journal recorded as *submitting* but not
    *submitted*; ``cancel`` on request. Every method takes the whole set of jobs at once and
    makes O(1) scheduler calls for it, never one per trial.
    """

    name: str = ""
    poll_interval_s: float = 1.0

    @abstractmethod
    def submit(self, request: SubmitRequest) -> Submitted:
        """Submit every trial of the request in one call; raise SubmitError if refused."""

    @abstractmethod
    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The state of each job; a job the scheduler no longer knows is ``gone``."""

    @abstractmethod
    def find(self, request: SubmitRequest) -> list[str]:
        """Job ids of a submission whose outcome was never journaled (may be empty)."""

    @abstractmethod
    def cancel(self, job_ids: Sequence[str], tokens: Sequence[str] = ()) -> None:
        """Stop these jobs (and any job whose name carries one of the tokens)."""

    @property
    def settle_s(self) -> float:
        """How long after a driver died inside ``submit`` its submission may still appear to
        ``find`` (a request already sent to the scheduler); 0 where submitting is no remote
        call."""
        return 0.0

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Forget the job handles this process holds (the jobs themselves go on)."""


@contextlib.contextmanager
def scrubbed_environ(names: Sequence[str]) -> Iterator[None]:
    """Submit with secrets removed from the environment the jobs inherit."""
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# ------------------------------------------------------------------------------- local


def default_parallelism() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LocalExecutor(Executor):
    """Trials as real subprocesses on this machine, at most ``parallelism`` at a time."""

    name = "local"

    def __init__(self, parallelism: int = 0, poll_interval_s: float = 0.5) -> None:
        self.parallelism = parallelism or default_parallelism()
        self.poll_interval_s = poll_interval_s
        self._jobs: dict[str, Any] = {}  # job id -> submitit LocalJob, to reap what we started

    def describe(self) -> str:
        return f"local ({self.parallelism} at a time)"

    def submit(self, request: SubmitRequest) -> Submitted:
        import submitit

        from hpc_agent.runner import run_lane

        queue_dir = Path(request.queue_dir)
        queue_dir.mkdir(parents=True, exist_ok=True)
        queue_file = queue_dir / "queue.json"
        lanes = max(1, min(self.parallelism, len(request.trial_dirs)))
        per_lane = -(-len(request.trial_dirs) // lanes)
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

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
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
        self._jobs.clear()

    def find(self, request: SubmitRequest) -> list[str]:
        found = []
        for lane_file in sorted(Path(request.queue_dir).glob("lane-*.json")):
            info = read_json(lane_file)
            if isinstance(info, dict) and info.get("ppid"):
                found.append(str(info["ppid"]))
        return found

    def cancel(self, job_ids: Sequence[str], tokens: Sequence[str] = ()) -> None:
        for jid in job_ids:
            if jid.isdigit() and _local_job_alive(jid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(jid), signal.SIGTERM)  # the controller forwards it to its lane


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


# ------------------------------------------------------------------------------- choosing


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None


def _check_controller() -> None:
    """``auto`` found sbatch: make sure a controller answers before choosing SLURM. Quietly
    falling back to local processes could run a campaign on a shared login node."""
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        answer = (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        answer = str(e)
    if " is UP" not in answer:
        raise UserError(
            f"--executor auto: sbatch is on PATH but no SLURM controller answers ({answer or 'no answer'})",
            fix="start the cluster (sudo bash scripts/local-slurm.sh start), or run the trials on this "
            "machine with --executor local",
        )


def make_executor(
    kind: str,
    *,
    parallelism: int = 0,
    poll_interval_s: float = 0.0,
    profile: str = "",
    overrides: dict[str, Any] | None = None,
) -> Executor:
    """``auto`` is SLURM where ``sbatch`` is on PATH, else local processes."""
    if kind == "auto":
        kind = "slurm" if slurm_available() else "local"
        if kind == "slurm":
            _check_controller()
    if kind == "local":
        return LocalExecutor(parallelism, poll_interval_s or 0.5)
    if kind == "slurm":
        if not slurm_available():
            raise UserError(
                "--executor slurm: sbatch is not on PATH on this machine",
                fix="run on a cluster login node, or use --executor local",
            )
        from hpc_agent.slurm import SlurmExecutor

        slurm: Executor = SlurmExecutor.from_profile(
            profile, overrides or {}, parallelism=parallelism, poll_interval_s=poll_interval_s
        )
        return slurm
    raise UserError(f"--executor {kind!r}: expected one of auto, local, slurm")

"""The executor seam: how a generation's trials reach processes.

One small seam (:class:`Executor`), as in submitit: an executor *submits* a whole
submission in one call, *polls* the jobs it knows with one batched query, *finds* the jobs of
a submission whose outcome the journal missed (the driver died inside ``sbatch``), *cancels*,
and says what is *queued* (for ``hpc-agent status``). It never decides what a trial's outcome
is: that comes from the trial's own ``status.json`` first, and from the scheduler only when
the trial could not say; then the executor translates the scheduler's own words
(OUT_OF_MEMORY, NODE_FAIL, ...) into a trial state (:attr:`JobStatus.ended_as`), so that the
campaign loop never reads them.

The kinds (``local``, ``slurm``) are in the registry, :mod:`hpc_agent.executors`; a scripted
in-process executor for tests is :class:`hpc_agent.testing.executor.ScriptedExecutor`.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

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
    width: int = 0  # at most this many of its trials at once, until widened (0: as many as allowed)

    @property
    def job_name(self) -> str:
        """The jobs' name: ``hpca.<campaign>.g0003.<token>`` (how a restarted driver finds them)."""
        return job_name(self.campaign, self.generation, self.token)


def job_name(campaign: str, generation: int, token: str) -> str:
    """``hpca.<campaign>.g0003.<token>``: greppable in squeue, unique per submission."""
    return f"hpca.{campaign}.g{generation:04d}.{token}"


@dataclass(frozen=True)
class Submitted:
    """What ``submit`` returns: every job id, and each trial's job where one task runs one trial."""

    job_ids: tuple[str, ...]
    trial_jobs: dict[str, str] | None = None  # trial id -> job id, where one task runs one trial


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says of one job (or array task).

    For a job that is ``gone``, ``ended_as`` is the trial state its ending means when the
    trial itself could not say (no final status.json): ``cancelled``, ``timeout``, ``failed``,
    ``preempted`` or ``lost`` ("" = unknown: lost); ``ended_why`` says so in words and
    ``ended_fix`` what to change, if anything."""

    job_id: str
    state: str  # "pending" | "running" | "gone"
    scheduler_state: str = ""  # the scheduler's own word (SLURM: PENDING, OUT_OF_MEMORY, ...)
    reason: str = ""  # why it is pending, or details of how it ended
    node: str = ""
    ended_as: str = ""
    ended_why: str = ""
    ended_fix: str = ""

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

    Call order per submission: ``submit`` once; ``widen`` as slots free (where
    ``can_widen``); ``poll`` as often as ``poll_interval_s`` allows; ``find`` only for a
    submission the journal recorded as *submitting* but not *submitted*; ``cancel`` on
    request. Every method takes the whole set of jobs at once and
    makes O(1) scheduler calls for it, never one per trial.

    Invariants the loop relies on: ``submit`` either returns every trial's job or raises
    :class:`SubmitError` (with the ids of any chunk that did go through, to be cancelled); a
    job ``poll`` calls ``gone`` never comes back; ``find`` never answers "none" when it could
    not look (it raises instead); the jobs run :func:`hpc_agent.job.runner.run_trial` on the
    request's trial folders with the request's token.
    """

    name: str = ""
    poll_interval_s: float = 1.0
    max_running: int = 0  # the most trials it runs at once, over all submissions (0: the scheduler's say)
    # a submission may hold more trials than may run at once (``SubmitRequest.width``): the rest
    # wait in the scheduler's queue until ``widen`` lets them start (SLURM's array throttle)
    can_widen: bool = False

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

    def widen(self, request: SubmitRequest, job_ids: Sequence[str], width: int) -> None:
        """Let up to ``width`` trials of a submission made with ``request.width`` run at once
        (an absolute value: widening twice to 5 is widening once). Only where ``can_widen``;
        SubmitError when the scheduler refuses (the submission keeps its width)."""
        raise NotImplementedError(f"the {self.name} executor cannot widen a submission")

    @property
    def settle_s(self) -> float:
        """How long after a driver died inside ``submit`` its submission may still appear to
        ``find`` (a request already sent to the scheduler); 0 where submitting is no remote
        call."""
        return 0.0

    def queue(self, job_ids: Sequence[str]) -> list[dict[str, str]]:
        """What is still queued or running among these jobs, with the scheduler's reasons
        (``job_id``, ``state``, ``reason``, ``node``, ``time``), for ``hpc-agent status``;
        [] where there is no queue to show."""
        return []

    def describe(self) -> str:
        """One line for the user: the kind and its settings."""
        return self.name

    @classmethod
    def describe_jobs(cls, job_ids: Sequence[str]) -> str:
        """A submission's jobs for the user: ``job 123`` / ``job 123, 124`` (array tasks
        by their array), ``5 jobs`` past three."""
        arrays = sorted({j.split("_")[0] for j in job_ids})
        return "job " + ", ".join(arrays) if len(arrays) <= 3 else f"{len(arrays)} jobs"

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

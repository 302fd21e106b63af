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
output, state mapping, the fix for a refusal) is a small pure function, tested without a
cluster.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_agent._io import atomic_write_json
from hpc_agent.errors import CampaignError
from hpc_agent.executors import Executor, JobStatus, SubmitError, SubmitRequest, Submitted
from hpc_agent.profiles import DEFAULT_POLL_INTERVAL_S, Profile, load_profile
from hpc_agent.runner import SLURM_SIGNAL_RESOLUTION_S, die_with_parent

log = logging.getLogger(__name__)

SBATCH_TIMEOUT_S = 120.0  # sbatch waits for a busy controller; past this, give up (and look)
QUERY_TIMEOUT_S = 60.0  # squeue, sacct, scontrol, scancel
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize, when scontrol cannot say
VISIBLE_GRACE_S = 60.0  # a task submitted this recently is never "gone" unless sacct says how it ended
SACCT_LOOKBACK = "now-30days"  # how far back `find` looks for a submission's jobs in sacct
DEFAULT_MESSAGE_TIMEOUT_S = 10.0  # slurm.conf MessageTimeout, when scontrol cannot say
SETTLE_MARGIN_S = 5.0
EARLY_SIGNAL_MARGIN_S = 60.0  # an early USR2 must still come this long after a job's start

# squeue/sacct states (first word; "CANCELLED by 0" -> CANCELLED)
PENDING_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
)
ENDED_STATES = frozenset(
    {
        "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "PREEMPTED", "NODE_FAIL",
        "BOOT_FAIL", "DEADLINE", "REVOKED",
    }
)  # fmt: skip
# anything else (RUNNING, COMPLETING, SUSPENDED, STOPPED, SIGNALING, STAGE_OUT, an unknown word)
# counts as alive: calling a live job gone would run its trial twice


class SlurmQueryError(RuntimeError):
    """A SLURM command failed or did not answer in time."""


# ------------------------------------------------------------------------------- pure functions


def chunk_bounds(n: int, max_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in arrays of at most ``max_size`` tasks."""
    size = max(1, max_size)
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


def split_parallelism(total: int, sizes: Sequence[int]) -> list[int]:
    """The ``%N`` throttle of each chunk, so that all chunks together run at most ``total``
    tasks at once (at least one each); ``total`` 0 = no throttle (each chunk's own size)."""
    if total <= 0:
        return list(sizes)
    share, extra = divmod(total, len(sizes))
    return [max(1, min(size, share + (1 if i < extra else 0))) for i, size in enumerate(sizes)]


def mem_flag(mem_gb: float) -> str:
    """``--mem`` value: whole gigabytes as ``16G``, else megabytes (``1536M``)."""
    return f"{int(mem_gb)}G" if mem_gb == int(mem_gb) else f"{round(mem_gb * 1024)}M"


JOB_PREAMBLE = "trap '' USR2; export HPC_AGENT_JOB_START=$(date +%s)  # hpc-agent: see slurm_task"


def stop_before_s(profile: Profile, time_min: int) -> int:
    """How long before the job's time limit the runner stops a trial so that it checkpoints:
    the profile's ``signal_delay_s``, but never more than half the job's time (a short job
    must get to work)."""
    return min(profile.signal_delay_s, time_min * 30)


def job_time_min(profile: Profile, request_timeout_min: int) -> int:
    """The job's limit: the profile's ``timeout_min`` when set, else what the experiment needs."""
    return profile.timeout_min or max(1, request_timeout_min)


def sbatch_parameters(
    profile: Profile, *, job_name: str, time_min: int, array_parallelism: int
) -> dict[str, Any]:
    """submitit ``_make_sbatch_string`` keyword arguments for one array of this profile."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": time_min,
        "array_parallelism": max(1, array_parallelism),
        "wckey": None,  # submitit's default wckey ("submitit") is refused by sites that enforce wckeys
        "use_srun": False,  # one task per job: no job step to launch (measured: srun costs throughput)
    }
    for key in ("partition", "account", "qos", "gres", "constraint", "exclude"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.cpus_per_task:
        params["cpus_per_task"] = profile.cpus_per_task
    if profile.mem_gb:
        params["mem"] = mem_flag(profile.mem_gb)
    # first line: SLURM's time-limit warning may come up to 60 s early (sbatch(1)), before the
    # runner's handler is in place: ignore it until then (the ignore is inherited across exec)
    params["setup"] = [JOB_PREAMBLE, *profile.setup]
    # USR2 to the batch shell (our exec'd Python) before the limit: a cross-check of the
    # runner's own clock, which stops the trial stop_before_s() before the limit. SLURM may send
    # it up to 60 s early: a job too short for that to fall well after its start gets none
    extra: dict[str, Any] = {}
    stop = stop_before_s(profile, time_min)
    if time_min * 60 >= stop + SLURM_SIGNAL_RESOLUTION_S + EARLY_SIGNAL_MARGIN_S:
        extra["signal"] = f"B:USR2@{stop}"
    if profile.reservation:
        extra["reservation"] = profile.reservation
    # hpc-agent requeues preempted and lost trials itself; SLURM's own requeue is opt-in
    extra["requeue" if profile.requeue else "no_requeue"] = True
    extra.update(profile.extra)
    params["additional_parameters"] = extra
    return params


def job_command(python: str, tasks_file: str | os.PathLike[str]) -> str:
    """What each task runs: :mod:`hpc_agent.slurm_task`, which picks its trial by
    ``SLURM_ARRAY_TASK_ID``.
    ``exec``: Python *is* the batch shell, so it gets the batch shell's signals (``B:USR2``)."""
    return f"exec {python} -u -m hpc_agent.slurm_task {shlex.quote(str(tasks_file))}"


def sbatch_text(
    profile: Profile,
    *,
    folder: str | os.PathLike[str],
    python: str,
    job_name: str,
    time_min: int,
    n_tasks: int,
    array_parallelism: int = 0,
    tasks_file: str = "",
) -> str:
    """The sbatch script of one array of ``n_tasks`` tasks, written by submitit's
    ``_make_sbatch_string`` (checked against a golden file per profile)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = sbatch_parameters(
        profile, job_name=job_name, time_min=time_min, array_parallelism=array_parallelism or n_tasks
    )
    command = job_command(python, tasks_file or Path(folder) / "tasks.json")
    text = _make_sbatch_string(command=command, folder=Path(folder), map_count=n_tasks, **params)
    return str(text)


def sbatch_preview(profile: Profile) -> list[str]:
    """The ``#SBATCH`` and setup lines of a 50-task generation of this profile (for
    ``hpc-agent profiles --show``)."""
    text = sbatch_text(
        profile,
        folder="/RESULTS/submitit/g0003.TOKEN",
        python=profile.python or "PYTHON",
        job_name="hpca.CAMPAIGN.g0003.TOKEN",
        time_min=job_time_min(profile, 30),
        n_tasks=50,
        array_parallelism=profile.array_parallelism,
    )
    lines = text.splitlines()
    keep = [line for line in lines if line.startswith("#SBATCH")]
    if "# setup" in lines:
        start = lines.index("# setup") + 1
        keep += ["# setup", *lines[start : lines.index("# command")]]
    return [line for line in keep if line]


def parse_sbatch_job_id(stdout: str) -> str:
    """``sbatch --parsable`` prints ``<job id>[;<cluster>]``."""
    text = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = text.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SlurmQueryError(f"cannot read a job id in sbatch's output {stdout.strip()!r}")
    return job_id


def parse_scontrol_config(text: str) -> dict[str, str]:
    """``scontrol show config`` -> {key: value}."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def max_array_size(config: Mapping[str, str]) -> int:
    """The most tasks one array may have (``MaxArraySize``: indices 0 .. MaxArraySize-1)."""
    value = config.get("MaxArraySize", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_ARRAY_SIZE


def accounting_enabled(config: Mapping[str, str]) -> bool:
    storage = config.get("AccountingStorageType", "")
    return bool(storage) and not storage.endswith("/none")


def expand_job_id(job_id: str) -> list[str]:
    """``123_[0-2,5%2]`` -> ``123_0 123_1 123_2 123_5``; other forms unchanged (``123_4``, ``123``)."""
    m = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(?:%\d+)?\]", job_id.strip())
    if not m:
        return [job_id.strip()]
    main, spec = m.groups()
    out: list[str] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out.extend(f"{main}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


@dataclass(frozen=True)
class QueueRow:
    """One job (or array task) as squeue or sacct reports it."""

    job_id: str
    state: str  # the full state text, e.g. "CANCELLED by 0"
    reason: str = ""
    node: str = ""
    exit_code: str = ""  # sacct: "3:0" (code:signal)


def parse_queue_rows(text: str, *, sacct: bool = False) -> dict[str, QueueRow]:
    """``squeue -o %i|%T|%r|%N`` or ``sacct -o JobID,State,ExitCode,Reason,NodeList --parsable2``
    output -> {task id: row}, with array ranges expanded and job steps skipped."""
    out: dict[str, QueueRow] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0] or "." in parts[0] or "+" in parts[0]:
            continue
        if sacct:
            jid, state, exit_code, reason, node = [*parts, "", "", ""][:5]
        else:
            jid, state, reason, node = [*parts, "", ""][:4]
            exit_code = ""
        for task in expand_job_id(jid):
            out[task] = QueueRow(task, state.strip(), reason.strip(), node.strip(), exit_code.strip())
    return out


def state_word(state: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; ``CANCELLED+`` (sacct, narrow columns) -> ``CANCELLED``."""
    return state.split()[0].rstrip("+").upper() if state.strip() else ""


def job_status(row: QueueRow) -> JobStatus:
    """A squeue/sacct row -> the executor's JobStatus (pending / running / gone)."""
    word = state_word(row.state)
    kind = "pending" if word in PENDING_STATES else "gone" if word in ENDED_STATES else "running"
    reasons = []
    if row.reason and row.reason not in ("None", "(null)"):
        reasons.append(row.reason)
    if " by " in row.state:
        reasons.append(f"by uid {row.state.split(' by ', 1)[1].strip()}")
    code, _, sig = row.exit_code.partition(":")
    if word in ENDED_STATES and word != "COMPLETED":
        if sig not in ("", "0"):
            reasons.append(f"signal {sig}")
        elif code not in ("", "0"):
            reasons.append(f"exit code {code}")
    node = "" if row.node in ("", "None assigned", "(null)", "n/a") else row.node
    return JobStatus(row.job_id, kind, word, "; ".join(reasons), node)


@dataclass(frozen=True)
class Partition:
    name: str
    time_limit: str  # as sinfo prints it: "infinite", "5:00", "2-00:00:00"
    gres: str  # "(null)" when the nodes have none
    default: bool


def parse_sinfo_partitions(text: str) -> list[Partition]:
    """``sinfo -h -o %P|%l|%G`` -> partitions (deduplicated; ``*`` marks the default)."""
    seen: dict[str, Partition] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        name = parts[0].rstrip("*")
        if name not in seen:
            seen[name] = Partition(name, parts[1], parts[2], parts[0].endswith("*"))
    return list(seen.values())


def describe_partitions(partitions: Sequence[Partition]) -> str:
    if not partitions:
        return "(sinfo listed none)"
    return ", ".join(
        f"{p.name}{' (default)' if p.default else ''} [max time {p.time_limit}"
        + (f", gres {p.gres}" if p.gres not in ("", "(null)") else ", no GRES")
        + "]"
        for p in partitions
    )


def refusal_fix(stderr: str, profile: Profile, time_min: int, partitions: Sequence[Partition]) -> str:
    """What to change when sbatch refused a submission, from sbatch's own message."""
    msg = stderr.lower()
    where = f"the profile ({profile.path})" if profile.path else "[executor] in campaign.toml (or --profile)"
    listed = describe_partitions(partitions)
    part = profile.partition or "the default partition"
    if "invalid partition" in msg:
        return (
            f"partition {profile.partition!r} does not exist on this cluster; "
            f"set partition in {where} to one of: {listed}"
        )
    if "invalid account" in msg:
        return (
            f"account {profile.account or '(default)'!r} is not one you may use (on {part}); list yours with "
            f"`sacctmgr show assoc user={_user()} format=account,partition,qos` and set account in {where}"
        )
    if "invalid qos" in msg:
        return (
            f"qos {profile.qos!r} is not allowed for your account; list yours with `sacctmgr show assoc "
            f"user={_user()} format=account,qos` and set qos in {where} (or remove it)"
        )
    if any(k in msg for k in ("generic resource", "gres", "trackable resource", "tres specification")):
        asked = f"gres={profile.gres!r}" if profile.gres else f"gpus_per_node={profile.gpus_per_node}"
        return (
            f"{part} has no such GPU/GRES ({asked}): choose a partition that has them "
            f"(partitions: {listed}), "
            f"or remove gres/gpus_per_node from {where} to run on CPUs"
        )
    if "submit limit" in msg or "maxsubmit" in msg or "qosmaxsubmit" in msg:
        return (
            "your account may not queue that many jobs at once (MaxSubmitJobs: each array task "
            "counts); lower "
            "[campaign] batch_size (or seeds), wait for your other jobs, or use another account "
            f"(`sacctmgr show assoc user={_user()} format=account,maxsubmit`)"
        )
    if "time limit" in msg:
        return (
            f"the job asks for {time_min} min, more than {part} allows (partitions: {listed}); lower "
            f"[experiment] time_budget_s or timeout_min, set a shorter timeout_min in {where} (trials are "
            "then interrupted and requeued: they must checkpoint), or choose a partition with a longer limit"
        )
    if "invalid feature" in msg or "constraint" in msg:
        return (
            f"constraint {profile.constraint!r} names no node feature here "
            f"(see `sinfo -o '%P %f'`); fix it in {where}"
        )
    if "node configuration is not available" in msg or "memory" in msg or "cpu count" in msg:
        return (
            f"no node of {part} offers what one task asks (cpus_per_task={profile.cpus_per_task or 1}, "
            f"mem_gb={profile.mem_gb or 'default'}, gres/gpus); lower them in {where} "
            "(see `sinfo -o '%P %c %m %G'`)"
        )
    if "array" in msg:
        return f"the array is too large for this cluster: set a smaller max_array_size in {where}"
    if "reservation" in msg:
        return f"reservation {profile.reservation!r} is not usable now; fix or remove it in {where}"
    if "did not answer" in msg or "unable to contact" in msg or "socket timed out" in msg:
        return (
            "the SLURM controller did not answer; run the same command again in a minute (nothing was lost)"
        )
    return f"change the value sbatch names above in {where}, then run again (nothing was lost)"


def slurm_env_to_clear(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Variables a driver running *inside* a SLURM job must not pass to sbatch (they describe
    that job, and would leak into the new one); ``SLURM_CONF`` says which cluster: kept."""
    return tuple(k for k in environ if k.startswith("SLURM_") and k != "SLURM_CONF")


# ------------------------------------------------------------------------------- commands


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry
        return "$USER"


def _command(args: Sequence[str], timeout_s: float = QUERY_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise SlurmQueryError(f"{args[0]} is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise SlurmQueryError(f"{args[0]} did not answer within {timeout_s:g} s") from None


def _query(args: Sequence[str], timeout_s: float = QUERY_TIMEOUT_S) -> str:
    proc = _command(args, timeout_s)
    if proc.returncode != 0:
        err = proc.stderr.strip() or f"exit code {proc.returncode}"
        raise SlurmQueryError(f"{' '.join(args[:1])}: {err}")
    return proc.stdout


def _squeue_text(arrays: Sequence[str], fmt: str, *, expand: bool, all_states: bool) -> str:
    args = ["squeue", "--noheader", "-j", ",".join(arrays), "-o", fmt]
    if expand:
        args.append("-r")
    if all_states:
        args += ["-t", "all"]
    try:
        return _query(args)
    except SlurmQueryError as e:
        if "invalid job id" in str(e).lower():  # squeue -j <one id it forgot>: not an error for us
            return ""
        raise


def squeue_rows(job_ids: Sequence[str]) -> list[dict[str, str]]:
    """Pending/running jobs among ``job_ids`` (array ids or task ids), one squeue call, pending
    array ranges collapsed (``123_[5-49]``): for ``hpc-agent status``."""
    arrays = sorted({j.split("_")[0] for j in job_ids if j})
    if not arrays:
        return []
    text = _squeue_text(arrays, "%i|%T|%r|%N|%M", expand=False, all_states=False)
    rows = []
    for line in text.splitlines():
        parts = (line.strip().split("|") + [""] * 5)[:5]
        if parts[0]:
            reason = "" if parts[2] in ("None", "(null)") else parts[2]
            rows.append(
                {"job_id": parts[0], "state": parts[1], "reason": reason, "node": parts[3], "time": parts[4]}
            )
    return rows


def jobs_named(tokens: Iterable[str]) -> list[str]:
    """Queued/running jobs of this user whose hpc-agent job name ends in one of ``tokens``."""
    wanted = {t for t in tokens if t}
    if not wanted:
        return []
    text = _query(["squeue", "--noheader", "-u", _user(), "-o", "%F|%j"])
    found = set()
    for line in text.splitlines():
        jid, _, name = line.strip().partition("|")
        if name.startswith("hpca.") and name.rsplit(".", 1)[-1] in wanted:
            found.add(jid)
    return sorted(found)


def scancel(job_ids: Sequence[str], tokens: Sequence[str] = ()) -> None:
    """Cancel these jobs (array or task ids) and every job named after one of the submission
    ``tokens``, in ONE scancel call. Jobs that already ended are not an error."""
    ids = list(dict.fromkeys(j for j in job_ids if j))
    if tokens:
        try:
            ids += [j for j in jobs_named(tokens) if j not in ids]
        except SlurmQueryError as e:
            log.warning("could not list jobs by name (%s); cancelling the recorded ids only", e)
    if not ids:
        return
    proc = _command(["scancel", *ids])
    if proc.returncode != 0:
        errors = [
            line
            for line in proc.stderr.splitlines()
            if line.strip()
            and "already completing or completed" not in line
            and "invalid job id" not in line.lower()
        ]
        if errors:
            log.warning("scancel: %s", "; ".join(errors[:5]))


# ------------------------------------------------------------------------------- the executor


class SlurmExecutor(Executor):
    """Trials as SLURM array tasks: one array per generation, polled in two calls."""

    name = "slurm"

    def __init__(self, profile: Profile, *, parallelism: int = 0, poll_interval_s: float = 0.0) -> None:
        self.profile = profile
        self.parallelism = parallelism or profile.array_parallelism
        self.poll_interval_s = poll_interval_s or profile.poll_interval_s or DEFAULT_POLL_INTERVAL_S
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

    def describe(self) -> str:
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
                self._config = parse_scontrol_config(_query(["scontrol", "show", "config"]))
            except SlurmQueryError as e:
                log.warning("cannot read the cluster's configuration (%s); assuming defaults", e)
                self._config = {}
        return self._config

    def max_array_size(self) -> int:
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
            return parse_sinfo_partitions(_query(["sinfo", "--noheader", "-o", "%P|%l|%G"]))
        except SlurmQueryError:
            return []

    # ------------------------------------------------------------------ submit
    def submit(self, request: SubmitRequest) -> Submitted:
        n = len(request.trial_dirs)
        if n == 0:
            return Submitted((), {})
        folder = Path(request.submitit_dir) / f"g{request.generation:04d}.{request.token}"
        folder.mkdir(parents=True, exist_ok=True)  # before sbatch: SLURM opens the logs there
        time_min = job_time_min(self.profile, request.timeout_min)
        python = self.profile.python or shlex.quote(sys.executable)
        bounds = chunk_bounds(n, self.max_array_size())
        throttles = split_parallelism(self.parallelism, [hi - lo for lo, hi in bounds])
        env = dict(os.environ)
        for name in (*request.scrub_env, *slurm_env_to_clear(env)):
            env.pop(name, None)
        job_ids: list[str] = []
        trial_jobs: dict[str, str] = {}
        for k, ((lo, hi), throttle) in enumerate(zip(bounds, throttles)):
            stem = f"array-{k}" if len(bounds) > 1 else "array"
            tasks_file = folder / f"{stem}.tasks.json"
            atomic_write_json(
                tasks_file,
                {
                    "token": request.token,
                    "trials": list(request.trial_dirs[lo:hi]),
                    "time_limit_s": time_min * 60,
                    "stop_before_s": stop_before_s(self.profile, time_min),
                },
            )
            script = folder / f"{stem}.sh"
            text = sbatch_text(
                self.profile,
                folder=folder,
                python=python,
                job_name=request.job_name,
                time_min=time_min,
                n_tasks=hi - lo,
                array_parallelism=throttle,
                tasks_file=str(tasks_file),
            )
            script.write_text(text, encoding="utf-8")
            array_id = self._sbatch(request, script, env, time_min, job_ids)
            for i in range(hi - lo):
                task = f"{array_id}_{i}"
                job_ids.append(task)
                trial_jobs[request.trial_ids[lo + i]] = task
        return Submitted(tuple(job_ids), trial_jobs)

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
            listed = parse_queue_rows(_squeue_text(arrays, "%i|%T|%r|%N", expand=True, all_states=True))
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
            return parse_queue_rows(_query(args), sacct=True)
        except SlurmQueryError as e:
            log.warning("sacct failed (%s); jobs squeue forgot are gone without a known state", e)
            return None

    # ------------------------------------------------------------------ find, cancel
    def find(self, request: SubmitRequest) -> list[str]:
        """Task ids of the jobs named after this submission (squeue, then sacct)."""
        name = request.job_name
        found: set[str] = set()
        try:
            text = _query(["squeue", "--noheader", "-r", "-t", "all", f"--name={name}", "-o", "%i"])
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
                text = _query(args)
                found.update(t for line in text.splitlines() if line.strip() for t in expand_job_id(line))
        return sorted(found, key=_job_sort_key)

    def cancel(self, job_ids: Sequence[str], tokens: Sequence[str] = ()) -> None:
        scancel(job_ids, tokens)

    def close(self) -> None:
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

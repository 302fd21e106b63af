"""SLURM as text: every function that turns text into text, pure and tested without a cluster.

The sbatch options and script of one array (submitit's ``_make_sbatch_string``, checked
against a golden file per profile), the parsing of ``sbatch``/``squeue``/``sacct``/``scontrol``/
``sinfo`` output, the translation of SLURM's states into the executor's :class:`JobStatus`
(and of a vanished job's ending into a trial state, :data:`ENDINGS`), and the fix for a
refused submission.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_agent.config.profiles import Profile, load_profile
from hpc_agent.config.toml import toml_value
from hpc_agent.executors.base import JobStatus
from hpc_agent.job.runner import SLURM_SIGNAL_RESOLUTION_S


class SlurmQueryError(RuntimeError):
    """A SLURM command failed, did not answer in time, or said something unreadable."""


DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize, when scontrol cannot say
DEFAULT_MESSAGE_TIMEOUT_S = 10.0  # slurm.conf MessageTimeout, when scontrol cannot say
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


# what a task SLURM ended without a final status.json means for its trial: (state, why, fix)
ENDINGS: dict[str, tuple[str, str, str]] = {
    "CANCELLED": ("cancelled", "job cancelled (scancel)", ""),
    "TIMEOUT": ("timeout", "SLURM's time limit ended the job", "raise [experiment] timeout_min"),
    "OUT_OF_MEMORY": ("failed", "out of memory (SLURM OUT_OF_MEMORY)", "raise mem_gb in the profile"),
    "PREEMPTED": ("preempted", "job preempted", ""),
    "REQUEUED": ("preempted", "job preempted", ""),
    "NODE_FAIL": ("lost", "node failure (NODE_FAIL)", ""),
    "BOOT_FAIL": ("lost", "node failure (BOOT_FAIL)", ""),
}


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


def narrowed(parallelism: int, width: int) -> int:
    """A submission's whole ``%N``: the profile's ``parallelism`` (0: none), narrowed to the
    submission's ``width`` (0: not narrowed)."""
    if width > 0 and parallelism > 0:
        return min(width, parallelism)
    return width or parallelism


def array_sizes(job_ids: Sequence[str]) -> dict[str, int]:
    """``["12_0", "12_1", "13_0"]`` -> ``{"12": 2, "13": 1}``: each array's tasks, in order."""
    sizes: dict[str, int] = {}
    for jid in job_ids:
        array = jid.split("_")[0]
        sizes[array] = sizes.get(array, 0) + 1
    return sizes


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


def show_profile(name: str) -> str:
    """The text of ``hpc-agent profiles --show NAME``: the file, its resolved keys, and the
    sbatch options a generation would be submitted with."""
    profile = load_profile(name)
    lines = [f"# profile {profile.name}: {profile.path}"]
    if profile.description:
        lines += [f"# {line}" for line in profile.description.strip().splitlines()]
    lines.append("")
    for key, value in profile.to_dict().items():
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # as a profile file writes it: mem_gb = 64
        if key != "description":
            lines.append(f"{key} = {toml_value(value)}")
    lines += ["", "# sbatch options of a generation of 50 trials (job limit: timeout_min, else 30 min here):"]
    lines += sbatch_preview(profile)
    return "\n".join(lines) + "\n"


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
    """Does the cluster keep accounting (so that ``sacct`` can say how a job ended)?"""
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
    """A squeue/sacct row -> the executor's JobStatus (pending / running / gone), with what a
    vanished job's ending means for its trial (:data:`ENDINGS`)."""
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
    ended_as, why, fix = ENDINGS.get(word, ("lost", f"job ended as {word} without a final status", ""))
    if kind != "gone":
        ended_as = why = fix = ""
    return JobStatus(row.job_id, kind, word, "; ".join(reasons), node, ended_as, why, fix)


@dataclass(frozen=True)
class Partition:
    """One partition as ``sinfo`` lists it."""

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
    """The partitions for an error message: name, default, time limit, GRES."""
    if not partitions:
        return "(sinfo listed none)"
    return ", ".join(
        f"{p.name}{' (default)' if p.default else ''} [max time {p.time_limit}"
        + (f", gres {p.gres}" if p.gres not in ("", "(null)") else ", no GRES")
        + "]"
        for p in partitions
    )


def current_user() -> str:
    """This user's name (for the ``sacctmgr`` commands a fix suggests)."""
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry
        return "$USER"


def refusal_fix(stderr: str, profile: Profile, time_min: int, partitions: Sequence[Partition]) -> str:
    """What to change when sbatch refused a submission, from sbatch's own message."""
    msg = stderr.lower()
    where = f"the profile ({profile.path})" if profile.path else "[executor] in campaign.toml (or --profile)"
    listed = describe_partitions(partitions)
    return _access_fix(msg, profile, where, listed) or _resource_fix(msg, profile, time_min, where, listed)


def _access_fix(msg: str, profile: Profile, where: str, listed: str) -> str:
    """The fix for a partition, account, QOS, GRES or submit-limit refusal ("" otherwise)."""
    part = profile.partition or "the default partition"
    if "invalid partition" in msg:
        return (
            f"partition {profile.partition!r} does not exist on this cluster; "
            f"set partition in {where} to one of: {listed}"
        )
    if "invalid account" in msg:
        return (
            f"account {profile.account or '(default)'!r} is not one you may use (on {part}); list yours with "
            f"`sacctmgr show assoc user={current_user()} format=account,partition,qos` "
            f"and set account in {where}"
        )
    if "invalid qos" in msg:
        return (
            f"qos {profile.qos!r} is not allowed for your account; list yours with `sacctmgr show assoc "
            f"user={current_user()} format=account,qos` and set qos in {where} (or remove it)"
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
            f"(`sacctmgr show assoc user={current_user()} format=account,maxsubmit`)"
        )
    return ""


def _resource_fix(msg: str, profile: Profile, time_min: int, where: str, listed: str) -> str:
    """The fix for a time, feature, node, array, reservation or controller refusal."""
    part = profile.partition or "the default partition"
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

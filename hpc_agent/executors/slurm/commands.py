"""SLURM's commands, run with a time limit: one place that calls ``squeue``, ``sacct``,
``scontrol``, ``sinfo`` and ``scancel`` (``sbatch`` is the executor's), and turns a failure
into :class:`SlurmQueryError`.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable, Sequence

from hpc_agent.executors.slurm.text import SlurmQueryError, array_sizes, current_user, split_parallelism

log = logging.getLogger(__name__)

QUERY_TIMEOUT_S = 60.0  # squeue, sacct, scontrol, scancel


def run_command(args: Sequence[str], timeout_s: float = QUERY_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a SLURM command with a time limit (SlurmQueryError when it is missing or hangs)."""
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


def query(args: Sequence[str], timeout_s: float = QUERY_TIMEOUT_S) -> str:
    """A SLURM command's stdout (SlurmQueryError with its stderr when it fails)."""
    proc = run_command(args, timeout_s)
    if proc.returncode != 0:
        err = proc.stderr.strip() or f"exit code {proc.returncode}"
        raise SlurmQueryError(f"{' '.join(args[:1])}: {err}")
    return proc.stdout


def squeue_text(arrays: Sequence[str], fmt: str, *, expand: bool, all_states: bool) -> str:
    """``squeue`` of these arrays in format ``fmt`` (``expand``: one line per array task;
    ``all_states``: recently ended jobs too); "" for job ids squeue no longer knows."""
    args = ["squeue", "--noheader", "-j", ",".join(arrays), "-o", fmt]
    if expand:
        args.append("-r")
    if all_states:
        args += ["-t", "all"]
    try:
        return query(args)
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
    text = squeue_text(arrays, "%i|%T|%r|%N|%M", expand=False, all_states=False)
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
    text = query(["squeue", "--noheader", "-u", current_user(), "-o", "%F|%j"])
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
    proc = run_command(["scancel", *ids])
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


def set_throttles(job_ids: Sequence[str], total: int) -> None:
    """``scontrol update JobId=<array> ArrayTaskThrottle=<N>`` for each array of these tasks,
    ``total`` shared among them as at submission (an array that already ended has nothing left
    to throttle: skipped)."""
    sizes = array_sizes(job_ids)
    for array, throttle in zip(sizes, split_parallelism(total, list(sizes.values()))):
        proc = run_command(["scontrol", "update", f"JobId={array}", f"ArrayTaskThrottle={throttle}"])
        # an array some of whose tasks ended answers 1, "<array>_0: Job has already finished",
        # "<array>_1-4: No error": the update holds for the tasks still queued
        lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        if proc.returncode != 0 and not all(_throttle_ok(line) for line in lines):
            raise SlurmQueryError(f"scontrol update: {'; '.join(lines) or f'exit code {proc.returncode}'}")


def _throttle_ok(line: str) -> bool:
    low = line.lower()
    return low.endswith("no error") or "already finished" in low or "invalid job id" in low

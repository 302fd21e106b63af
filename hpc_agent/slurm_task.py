"""What a SLURM array task runs: ``python -m hpc_agent.slurm_task <folder>/array.tasks.json``.

The task picks its trial folder by ``SLURM_ARRAY_TASK_ID`` in the submission's task list and
runs it with :func:`hpc_agent.job.runner.run_trial`. Like the runner, it imports nothing but the
standard library and the runner: on a cluster it starts once per trial, and on the 2-core
test cluster every 10 ms of import time cost ~5 % of the throughput of short trials
(bench/bench_slurm.py). The driver's side of SLURM is :mod:`hpc_agent.slurm`.
"""

from __future__ import annotations

import os
import signal
import sys
import time

_STARTED = time.time()
_WARNED_AT: list[float] = []


def _early_warning(signum: int, frame: object) -> None:
    _WARNED_AT.append(time.time())


# SLURM's time-limit warning (USR2) may come before the runner is ready (sbatch(1): up to 60 s
# early); the job script ignores it until here, and from here it is only recorded
signal.signal(signal.SIGUSR2, _early_warning)

from collections.abc import Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from hpc_agent.job.fileio import read_json  # noqa: E402
from hpc_agent.job.runner import run_trial  # noqa: E402
from hpc_agent.job.trial import FINAL_STATES  # noqa: E402

JOB_START_ENV = "HPC_AGENT_JOB_START"  # set by the job script's first line: `date +%s`


def job_deadline(tasks: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> float | None:
    """When this job's time limit falls (unix time), from the submission's ``time_limit_s``
    and the job's start (the job script records it; else this process's start)."""
    limit = tasks.get("time_limit_s")
    if not isinstance(limit, (int, float)) or limit <= 0:
        return None
    env = os.environ if environ is None else environ
    try:
        start = float(env.get(JOB_START_ENV, ""))
    except ValueError:
        start = _STARTED
    return min(start, _STARTED) + float(limit)


def run_array_task(
    trial_dir: str, token: str = "", *, deadline: float | None = None, stop_before_s: float = 0.0
) -> str:
    """Run one trial as this array task, plus two things only SLURM can tell:

    * A job SLURM requeued by itself (profile ``requeue = true``; ``SLURM_RESTART_COUNT`` > 0)
      runs its trial again only when the trial's last word is this submission's ``running`` (a
      node failure): a trial this job already reported ``preempted`` is requeued by the
      campaign, and running it here as well would run it twice.
    * (A task stopped by ``scancel`` is told from a preempted one by the runner itself:
      :func:`hpc_agent.job.runner.cancelled_by_scancel`.)

    Returns the trial's state ("skipped" when a SLURM requeue had nothing left to run,
    "superseded" when the trial belongs to another submission).
    """
    status_path = Path(trial_dir) / "status.json"
    if _restart_count() > 0:
        prev = read_json(status_path)
        if isinstance(prev, dict) and prev.get("state") not in FINAL_STATES:
            ours_running = prev.get("token") == token and prev.get("state") == "running"
            if not ours_running:
                return "skipped"
    return run_trial(
        trial_dir,
        token,
        deadline=deadline,
        stop_before_s=stop_before_s,
        warned_at=_WARNED_AT[0] if _WARNED_AT else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hpc_agent.slurm_task TASKS.json``: run this array task's trial (exit 0, whatever
    the trial did: its status.json says)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m hpc_agent.slurm_task TASKS.json (run by SLURM array tasks)", file=sys.stderr)
        return 2
    tasks = read_json(args[0])
    index = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    trials = tasks.get("trials", []) if isinstance(tasks, dict) else []
    if not index.isdigit() or int(index) >= len(trials):
        print(f"hpc-agent: no task {index!r} in {args[0]} (SLURM_ARRAY_TASK_ID)", file=sys.stderr)
        return 1
    trial_dir = str(trials[int(index)])
    state = run_array_task(
        trial_dir,
        str(tasks.get("token", "")),
        deadline=job_deadline(tasks),
        stop_before_s=float(tasks.get("stop_before_s") or 0.0),
    )
    print(f"hpc-agent: trial {trial_dir}: {state}")
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # a late warning must not fail a finished job
    return 0


def _restart_count() -> int:
    value = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0


if __name__ == "__main__":
    sys.exit(main())

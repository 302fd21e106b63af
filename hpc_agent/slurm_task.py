"""What a SLURM array task runs: ``python -m hpc_agent.slurm_task <folder>/array.tasks.json``.

The task picks its trial folder by ``SLURM_ARRAY_TASK_ID`` in the submission's task list and
runs it with :func:`hpc_agent.runner.run_trial`. Like the runner, it imports nothing but the
standard library and the runner: on a cluster it starts once per trial, and on the 2-core
test cluster every 10 ms of import time cost ~5 % of the throughput of short trials
(bench/bench_slurm.py). The driver's side of SLURM is :mod:`hpc_agent.slurm`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hpc_agent._io import read_json
from hpc_agent.runner import FINAL_STATES, run_trial


def run_array_task(trial_dir: str, token: str = "") -> str:
    """Run one trial as this array task, plus two things only SLURM can tell:

    * A job SLURM requeued by itself (profile ``requeue = true``; ``SLURM_RESTART_COUNT`` > 0)
      runs its trial again only when the trial's last word is this submission's ``running`` (a
      node failure): a trial this job already reported ``preempted`` is requeued by the
      campaign, and running it here as well would run it twice.
    * (A task stopped by ``scancel`` is told from a preempted one by the runner itself:
      :func:`hpc_agent.runner.cancelled_by_scancel`.)

    Returns the trial's state ("skipped" when a SLURM requeue had nothing left to run).
    """
    status_path = Path(trial_dir) / "status.json"
    if _restart_count() > 0:
        prev = read_json(status_path)
        if isinstance(prev, dict) and prev.get("state") not in FINAL_STATES:
            ours_running = prev.get("token") == token and prev.get("state") == "running"
            if not ours_running:
                return "skipped"
    return run_trial(trial_dir, token)


def main(argv: Sequence[str] | None = None) -> int:
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
    state = run_array_task(trial_dir, str(tasks.get("token", "")))
    print(f"hpc-agent: trial {trial_dir}: {state}")
    return 0


def _restart_count() -> int:
    value = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0


if __name__ == "__main__":
    sys.exit(main())

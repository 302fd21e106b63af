"""What runs inside a local lane: a worker that takes trials from a submission's queue.

Standard library only (it is what submitit unpickles in each local lane). The local executor
(:mod:`hpc_agent.executors.local`) starts one lane per slot; each lane claims the next trial of
``queue.json`` by creating ``claims/<trial id>`` with ``O_EXCL`` and runs it with
:func:`hpc_agent.job.runner.run_trial`. A submission made narrower than its lanes (``width``,
the file the driver rewrites to widen it) keeps lanes ``width`` and above waiting: they take
trials only once widened, as SLURM's array throttle holds tasks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from types import FrameType

from hpc_agent.job.fileio import atomic_write_json
from hpc_agent.job.runner import FORWARDED_SIGNALS, run_trial

WIDTH_FILE = "width"
WIDTH_POLL_S = 0.1


def width(queue_dir: Path) -> int | None:
    """How many lanes may take trials (None: every lane)."""
    try:
        return int((queue_dir / WIDTH_FILE).read_text())
    except (OSError, ValueError):
        return None


def _wait_for_width(queue_dir: Path, lane: int, trials: list[str], stop: list[str]) -> bool:
    """Wait until this lane may take trials; False when there is nothing left for it (every
    trial claimed) or it was told to stop."""
    claims = queue_dir / "claims"
    while not stop:
        w = width(queue_dir)
        if w is None or lane < w:
            return True
        if len(os.listdir(claims)) >= len(trials):
            return False
        time.sleep(WIDTH_POLL_S)
    return False


def run_lane(queue_file: str, lane: int) -> int:
    """A local worker: take trials from a submission's queue, one at a time, until none is left.

    submitit's local executor starts every array element at once; hpc-agent submits one
    element per lane instead (as many lanes as the parallelism allows), and each lane claims
    the next trial by creating ``claims/<trial id>`` with ``O_EXCL``. Returns how many trials
    this lane ran.
    """
    queue_path = Path(queue_file)
    queue = json.loads(queue_path.read_text())
    gpus = queue.get("lane_gpus") or []
    if lane < len(gpus):  # submitit's local executor hides every GPU; give this lane its share
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[lane]
    claims = queue_path.parent / "claims"
    claims.mkdir(exist_ok=True)
    # the submitit job id of a local lane is its controller's pid (our parent)
    job_id = os.environ.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getppid())
    atomic_write_json(
        queue_path.parent / f"lane-{lane}.json",
        {
            "lane": lane,
            "pid": os.getpid(),
            "ppid": job_id,
            "host": socket.gethostname(),
            "started_at": time.time(),
        },
    )
    stop: list[str] = []

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.append(signal.Signals(signum).name)

    for s in FORWARDED_SIGNALS:
        signal.signal(s, _stop)
    ran = 0
    for trial_dir in queue["trials"]:
        if stop or not _wait_for_width(queue_path.parent, lane, queue["trials"], stop):
            break
        name = Path(trial_dir).name
        try:
            fd = os.open(claims / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.write(fd, f"{lane} {os.getpid()}\n".encode())
        os.close(fd)
        state = run_trial(trial_dir, token=str(queue.get("token", "")), job_id=job_id)
        ran += 1
        if state == "preempted":  # the lane was told to stop: leave the rest to a requeue
            break
    return ran

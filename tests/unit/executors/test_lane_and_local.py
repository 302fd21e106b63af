"""hpc_agent.executors.lane and hpc_agent.executors.local: a lane takes trials from its
submission's queue and runs them (real processes); the local executor submits, polls and
widens lanes of real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from hpc_agent.executors.base import SubmitRequest
from hpc_agent.executors.lane import width
from hpc_agent.executors.local import LocalExecutor, default_parallelism, split_gpus, write_width
from hpc_agent.job.trial import read_status
from unit.conftest import BareDriver, planned_and_prepared


def test_width_is_read_from_its_file(tmp_path: Path) -> None:
    assert width(tmp_path) is None
    write_width(tmp_path, 2)
    assert width(tmp_path) == 2
    (tmp_path / "width").write_text("garbage")
    assert width(tmp_path) is None


def test_a_lane_runs_every_unclaimed_trial_of_its_queue(bare_driver: BareDriver, tmp_path: Path) -> None:
    dirs = planned_and_prepared(bare_driver)
    queue = tmp_path / "q" / "queue.json"
    queue.parent.mkdir()
    (queue.parent / "claims").mkdir()
    (queue.parent / "claims" / Path(dirs[1]).name).write_text("another lane\n")  # claimed already
    queue.write_text(json.dumps({"trials": dirs, "token": "", "lane_gpus": ["3"]}))
    code = f"from hpc_agent.executors.lane import run_lane; print(run_lane({str(queue)!r}, 0))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "2"
    states = [(read_status(d) or {}).get("state") for d in dirs]
    assert states == ["completed", None, "completed"]
    lane = json.loads((queue.parent / "lane-0.json").read_text())
    assert lane["lane"] == 0 and isinstance(lane["pid"], int)


def test_the_local_executor_runs_a_submission(bare_driver: BareDriver) -> None:
    dirs = planned_and_prepared(bare_driver)
    ex = LocalExecutor.create(parallelism=2, poll_interval_s=0.1)
    assert ex.describe() == "local (2 at a time)" and default_parallelism() >= 1
    paths = bare_driver.paths
    req = SubmitRequest(
        token="tok1",
        generation=0,
        campaign="tiny",
        trial_ids=tuple(Path(d).name for d in dirs),
        trial_dirs=tuple(dirs),
        queue_dir=str(paths.submission(0, "tok1")),
        submitit_dir=str(paths.submitit),
        timeout_min=5,
        width=1,
    )
    try:
        sub = ex.submit(req)
        assert len(sub.job_ids) == 2  # one lane a slot
        ex.widen(req, sub.job_ids, 2)
        assert width(Path(req.queue_dir)) == 2
        deadline = time.time() + 60
        while time.time() < deadline and any(s.alive for s in ex.poll(sub.job_ids).values()):
            time.sleep(0.2)
        assert [(read_status(d) or {}).get("state") for d in dirs] == ["completed"] * 3
        assert sorted(ex.find(req)) == sorted(sub.job_ids)  # what a restarted driver finds
    finally:
        ex.close()


def test_split_gpus_shares_them_out() -> None:
    assert split_gpus(["0", "1", "2", "3"], 2) == ["0,2", "1,3"]
    assert split_gpus(["0", "1"], 3) == ["0", "1", "0"]
    assert split_gpus([], 2) == ["", ""]

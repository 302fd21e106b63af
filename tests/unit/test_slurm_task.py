"""hpc_agent.slurm_task: what an array task runs: its trial picked by SLURM_ARRAY_TASK_ID,
the job's deadline from the task list (run as a real process, as SLURM runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hpc_agent.job.trial import Launch, read_status
from hpc_agent.slurm_task import JOB_START_ENV, job_deadline


def test_job_deadline() -> None:
    assert job_deadline({}) is None and job_deadline({"time_limit_s": 0}) is None
    assert job_deadline({"time_limit_s": 60}, {JOB_START_ENV: "1000"}) == 1060.0


def test_the_task_runs_its_trial_and_refuses_a_missing_index(tmp_path: Path) -> None:
    folders = []
    for i in range(2):
        folder = tmp_path / f"0000-000{i}"
        (folder / "code").mkdir(parents=True)
        (folder / "params.json").write_text("{}")
        Launch(trial=folder.name, command=(sys.executable, "-c", f"print({i})"), time_budget_s=30).write(
            folder
        )
        folders.append(str(folder))
    tasks = tmp_path / "array.tasks.json"
    tasks.write_text(json.dumps({"trials": folders, "token": "", "time_limit_s": 300}))

    def task(index: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": index}
        return subprocess.run(
            [sys.executable, "-m", "hpc_agent.slurm_task", str(tasks)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = task("1")
    assert done.returncode == 0 and done.stdout.strip() == f"hpc-agent: trial {folders[1]}: completed"
    assert read_status(folders[1])["state"] == "completed" and read_status(folders[0]) is None  # type: ignore[index]
    missing = task("7")
    assert missing.returncode == 1 and "no task '7'" in missing.stderr

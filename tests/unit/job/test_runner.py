"""hpc_agent.job.runner: one trial's command run in its own process (a real subprocess, as in a
job), held to its budget, its end written to status.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_agent.job.runner import run_trial
from hpc_agent.job.trial import Launch, assign, read_status


def trial(tmp_path: Path, script: str, budget: float = 30.0) -> Path:
    folder = tmp_path / "0000-0000"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "train.py").write_text(script)
    (folder / "params.json").write_text(json.dumps({"x": 0.5, "seed": 0}))
    Launch(
        trial="0000-0000", command=(sys.executable, "train.py"), time_budget_s=budget, kill_grace_s=0.5
    ).write(folder)
    return folder


def run(folder: Path, token: str = "") -> str:
    code = (
        f"from hpc_agent.job.runner import run_trial; print(run_trial({str(folder)!r}, {token!r}, 'job-1'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip().splitlines()[-1]


LOGS = """
import json, os
p = json.load(open(os.environ["HPC_AGENT_PARAMS"]))
with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
    f.write(json.dumps({"step": 0, "loss": p["x"]}) + "\\n")
print("hello")
"""


def test_a_command_that_exits_0_completes(tmp_path: Path) -> None:
    folder = trial(tmp_path, LOGS)
    assert run(folder) == "completed"
    status = read_status(folder)
    assert status is not None and (status["state"], status["exit_code"], status["attempt"]) == (
        "completed",
        0,
        1,
    )
    assert status["job_id"] == "job-1"
    assert (folder / "metrics.jsonl").read_text() == '{"step": 0, "loss": 0.5}\n'
    assert (folder / "stdout.log").read_text() == "hello\n"
    assert json.loads((folder / "provenance.json").read_text())["attempts"][0]["attempt"] == 1
    assert run_trial(str(folder)) == "completed"  # a final state: never run again


def test_a_failing_command_fails_with_its_exit_code(tmp_path: Path) -> None:
    folder = trial(tmp_path, "import sys; sys.stderr.write('boom\\n'); sys.exit(3)")
    assert run(folder) == "failed"
    status = read_status(folder)
    assert status is not None and status["exit_code"] == 3 and "exit code 3" in status["reason"]


def test_the_budget_is_enforced(tmp_path: Path) -> None:
    folder = trial(tmp_path, "import time\nwhile True: time.sleep(0.05)\n", budget=0.5)
    assert run(folder) == "timeout"
    status = read_status(folder)
    assert status is not None and "exceeded time_budget_s=0.5" in status["reason"]


def test_a_trial_of_another_submission_is_not_run(tmp_path: Path) -> None:
    folder = trial(tmp_path, LOGS)
    assign(folder, "other")
    assert run(folder, "mine") == "superseded" and read_status(folder) is None


def test_an_unprepared_trial_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"launch\.json is missing"):
        run_trial(str(tmp_path))

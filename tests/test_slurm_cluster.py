"""SLURM for real: the local cluster of scripts/local-slurm.sh (slurmctld, slurmd, slurmdbd).

Every test runs in its own tmp folder with the ``local`` profile (1 s polls). With
HPC_AGENT_REQUIRE_SLURM=1 (CI) a missing cluster fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_TRAIN

from hpc_agent.executors.base import SubmitRequest
from hpc_agent.executors.slurm.commands import squeue_rows
from hpc_agent.executors.slurm.executor import SlurmExecutor

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

SLURM_RUN = ("--executor", "slurm", "--profile", "local", "--planner", "random", "-q")


def events(results: Path, name: str | None = None) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in (results / "journal.jsonl").read_text().splitlines() if line.strip()]
    return [e for e in out if name is None or e["event"] == name]


def ended(results: Path) -> dict[str, dict[str, Any]]:
    return {e["trial"]: e for e in events(results, "trial_ended")}


def arrays_of(job_ids: list[str]) -> list[str]:
    return sorted({j.split("_")[0] for j in job_ids})


def sacct(array: str, expect: int, fields: str = "JobID,JobName,State") -> list[list[str]]:
    """sacct rows of an array's tasks, once the database has all ``expect`` of them ended
    (slurmdbd records them a moment after squeue shows them done)."""
    deadline = time.time() + 30
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", array, "-o", fields], capture_output=True, text=True, timeout=30
        ).stdout
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        done = [r for r in rows if "[" not in r[0] and r[-1].split()[0] not in ("PENDING", "RUNNING")]
        if len(done) == expect or time.time() > deadline:
            return rows
        time.sleep(0.5)


def start_driver(camp: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    return subprocess.Popen(
        [sys.executable, "-m", "hpc_agent", "run", str(camp), *SLURM_RUN],
        cwd=cwd,
        env={**base, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_running(status_file: Path, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    status: dict[str, Any] = {}
    while time.time() < deadline and status.get("state") != "running":
        time.sleep(0.2)
        try:
            status = json.loads(status_file.read_text())
        except (FileNotFoundError, ValueError):
            pass
    assert status.get("state") == "running", f"{status_file.parent.name} never started"
    return status


def test_two_generations_end_to_end(make_campaign: Callable[..., Path], cli_run: Callable[..., Any]) -> None:
    camp = make_campaign(generations=2, batch_size=3)
    cli_run("run", str(camp), *SLURM_RUN)
    results = camp.parent / "results" / "tiny"
    subs = events(results, "submitted")
    assert len(subs) == 2
    for sub in subs:
        assert len(arrays_of(sub["job_ids"])) == 1  # one array per generation
        assert sorted(sub["trial_jobs"].values()) == sorted(sub["job_ids"])
    outcomes = ended(results)
    assert len(outcomes) == 6 and {e["state"] for e in outcomes.values()} == {"completed"}
    for sub in subs:
        for trial, job in sub["trial_jobs"].items():
            status = json.loads((results / f"gen-{trial[:4]}" / "trials" / trial / "status.json").read_text())
            assert status["job_id"] == job and status["token"] == sub["token"]
    token = subs[0]["token"]
    script = (results / "submitit" / f"g0000.{token}" / "array.sh").read_text()
    assert f"#SBATCH --job-name=hpca.tiny.g0000.{token}" in script and "#SBATCH --array=0-2%3" in script
    assert [e["event"] for e in events(results)][-1] == "run_ended"
    cli_run("status", str(results))


def test_a_generation_of_fifty_trials_is_one_array_job(
    make_campaign: Callable[..., Path], cli_run: Callable[..., Any]
) -> None:
    camp = make_campaign(batch_size=50)
    cli_run("run", str(camp), *SLURM_RUN)
    results = camp.parent / "results" / "tiny"
    (sub,) = events(results, "submitted")
    (array,) = arrays_of(sub["job_ids"])
    assert len(sub["job_ids"]) == 50
    rows = sacct(array, 50)
    assert len(rows) == 50, rows
    assert {r[1] for r in rows} == {f"hpca.tiny.g0000.{sub['token']}"}
    assert {r[2] for r in rows} == {"COMPLETED"}
    assert {e["state"] for e in ended(results).values()} == {"completed"}


def test_max_array_size_splits_a_generation_into_chunks(
    make_campaign: Callable[..., Path], cli_run: Callable[..., Any]
) -> None:
    camp = make_campaign(batch_size=50, extra="\n[executor]\nmax_array_size = 10\n")
    cli_run("run", str(camp), *SLURM_RUN)
    results = camp.parent / "results" / "tiny"
    (sub,) = events(results, "submitted")  # still one submission: five arrays of ten
    arrays = arrays_of(sub["job_ids"])
    assert len(arrays) == 5
    assert sorted(len(sacct(a, 10)) for a in arrays) == [10] * 5
    folder = results / "submitit" / f"g0000.{sub['token']}"
    assert sorted(p.name for p in folder.glob("array-*.sh")) == [f"array-{k}.sh" for k in range(5)]
    assert "#SBATCH --array=0-9%10" in (folder / "array-3.sh").read_text()
    outcomes = ended(results)
    assert len(outcomes) == 50 and {e["state"] for e in outcomes.values()} == {"completed"}


def test_a_failing_task_is_recorded_failed_with_its_stderr(
    make_campaign: Callable[..., Path], cli_run: Callable[..., Any]
) -> None:
    script = (
        "import os, sys\n"
        "if os.environ['HPC_AGENT_TRIAL_ID'].endswith('-0001'):\n"
        "    print('loading data...', file=sys.stderr)\n"
        "    sys.exit('boom: the data loader crashed')\n" + TINY_TRAIN
    )
    camp = make_campaign(batch_size=3, script=script)
    cli_run("run", str(camp), *SLURM_RUN)
    results = camp.parent / "results" / "tiny"
    outcomes = ended(results)
    assert outcomes["0000-0001"]["state"] == "failed"
    assert "boom: the data loader crashed" in outcomes["0000-0001"]["reason"]
    status = json.loads((results / "gen-0000" / "trials" / "0000-0001" / "status.json").read_text())
    assert "loading data..." in status["stderr_tail"] and status["exit_code"] == 1
    assert outcomes["0000-0000"]["state"] == outcomes["0000-0002"]["state"] == "completed"
    # `hpc-agent status` names the trial's stderr and the SLURM job's own log
    report = json.loads(cli_run("status", str(results), "--json").output)
    (failure,) = report["failures"]
    assert failure["trial_id"] == "0000-0001" and failure["stderr"].endswith("0000-0001/stderr.log")
    assert (
        failure["job_log"]
        and Path(failure["job_log"]).is_file()
        and failure["job_log"].endswith("_1_0_log.err")
    )
    assert failure["job_log"] in cli_run("status", str(results)).output.replace("\n", "")


def test_a_task_killed_with_scancel_is_cancelled_and_the_campaign_goes_on(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    script = (
        "import os, time\n"
        "if os.environ['HPC_AGENT_TRIAL_ID'] == '0000-0001' and os.environ['HPC_AGENT_ATTEMPT'] == '1':\n"
        "    time.sleep(120)\n" + TINY_TRAIN
    )
    camp = make_campaign(generations=2, batch_size=3, script=script)
    driver = start_driver(camp, tmp_path)
    try:
        status_file = tmp_path / "results" / "tiny" / "gen-0000" / "trials" / "0000-0001" / "status.json"
        status = wait_running(status_file)
        subprocess.run(["scancel", status["job_id"]], check=True, timeout=30)
        out, _ = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, out
    results = tmp_path / "results" / "tiny"
    outcomes = ended(results)
    assert outcomes["0000-0001"]["state"] == "cancelled", outcomes["0000-0001"]
    assert not [e for e in events(results, "requeued") if e["trial"] == "0000-0001"]
    others = {t: e["state"] for t, e in outcomes.items() if t != "0000-0001"}
    assert len(others) == 5 and set(others.values()) == {"completed"}  # the campaign went on
    assert len(events(results, "generation_done")) == 2


def test_a_refused_sbatch_exits_2_with_its_message_and_loses_nothing(
    make_campaign: Callable[..., Path], cli_run: Callable[..., Any], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'description = "a partition that does not exist"\npartition = "nope"\npoll_interval_s = 1.0\n'
    )
    camp = make_campaign(batch_size=3)
    args = ["run", str(camp), "--executor", "slurm", "--planner", "random", "-q"]
    out = cli_run(*args, "--profile", str(bad), code=2).output
    results = camp.parent / "results" / "tiny"
    (failed,) = events(results, "submit_failed")
    assert "Invalid partition name specified" in out  # sbatch's own words
    script = results / "submitit" / f"g0000.{failed['token']}" / "array.sh"
    assert f"log: {script}" in out and script.exists()
    assert "partition 'nope' does not exist" in out and "debug (default)" in out and str(bad) in out
    assert not events(results, "trial_ended") and not events(results, "submitted")
    cli_run(*args, "--profile", "local")  # same folder, a good profile: the planned trials run
    outcomes = ended(results)
    assert sorted(outcomes) == ["0000-0000", "0000-0001", "0000-0002"]
    assert {e["state"] for e in outcomes.values()} == {"completed"}
    assert {e["attempt"] for e in outcomes.values()} == {1}
    assert len(events(results, "planned")) == 1  # nothing planned twice


@pytest.mark.parametrize(
    ("extra", "experiment", "batch", "said", "fix"),
    [
        ('gres = "gpu:1"', "", 2, "Invalid generic resource (gres) specification", "no such GPU/GRES"),
        ("gpus_per_node = 1", "", 2, "Invalid generic resource (gres) specification", "gpus_per_node=1"),
        ('partition = "small"', "timeout_min = 10", 2, "Requested time limit is invalid", "asks for 10 min"),
        ('account = "nope"', "", 2, "Invalid account", "sacctmgr show assoc"),
        ('qos = "nope"', "", 2, "Invalid qos specification", "qos 'nope'"),
        ('constraint = "a100"', "", 2, "Invalid feature specification", "constraint 'a100'"),
        ('account = "limited"', "", 25, "job submit limit", "MaxSubmitJobs"),
    ],
    ids=["gres", "gpus-per-node", "time-limit", "account", "qos", "constraint", "max-submit-jobs"],
)
def test_refusals_name_sbatchs_reason_and_the_fix(
    make_campaign: Callable[..., Path],
    cli_run: Callable[..., Any],
    extra: str,
    experiment: str,
    batch: int,
    said: str,
    fix: str,
) -> None:
    camp = make_campaign(batch_size=batch, experiment=experiment, extra=f"\n[executor]\n{extra}\n")
    out = cli_run("run", str(camp), *SLURM_RUN, code=2).output
    assert "the scheduler refused generation 0's jobs" in out
    assert said in out and fix in out, out
    assert not subprocess.run(
        [
            "squeue",
            "-h",
            "--name",
            f"hpca.tiny.g0000.{events(camp.parent / 'results' / 'tiny', 'submit_failed')[0]['token']}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()


def test_a_driver_inside_a_slurm_job_submits_clean_jobs_without_secrets(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    # the trial looks at its runner's environment (the job's): no inherited SLURM_* of the
    # driver's own job, and no API key
    script = (
        "import os\n"
        "job_env = open(f'/proc/{os.getppid()}/environ', 'rb').read().split(b'\\0')\n"
        "leaks = [v for v in job_env if v.startswith((b'SLURM_HPCA_PARENT', b'HPC_AGENT_API_KEY'))]\n"
        "assert not leaks, leaks\n"
        "assert os.environ['SLURM_CONF'] == '/etc/slurm/slurm.conf'\n" + TINY_TRAIN
    )
    camp = make_campaign(batch_size=1, script=script)
    parent_job = {
        "SLURM_HPCA_PARENT_JOB": "1",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "HPC_AGENT_API_KEY": "sk-x",
    }
    driver = start_driver(camp, tmp_path, parent_job)
    out, _ = driver.communicate(timeout=90)
    assert driver.returncode == 0, out
    outcomes = ended(tmp_path / "results" / "tiny")
    assert outcomes["0000-0000"]["state"] == "completed", outcomes


def test_hpc_agent_cancel_stops_the_campaigns_jobs(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    script = "import time\ntime.sleep(120)\n"
    camp = make_campaign(batch_size=2, script=script)
    driver = start_driver(camp, tmp_path)
    results = tmp_path / "results" / "tiny"
    try:
        wait_running(results / "gen-0000" / "trials" / "0000-0000" / "status.json")
        proc = subprocess.run(
            [sys.executable, "-m", "hpc_agent", "cancel", str(results)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 1, out  # cancelled
    (sub,) = events(results, "submitted")
    left = subprocess.run(
        ["squeue", "-h", "-j", arrays_of(sub["job_ids"])[0]], capture_output=True, text=True, timeout=30
    )
    assert not left.stdout.strip()
    assert {e["state"] for e in ended(results).values()} == {"cancelled"}


# ------------------------------------------------------------------------------- the executor alone


def trial(root: Path, name: str, code: str) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text("{}")
    launch = {
        "trial": name,
        "command": ["python", "-c", textwrap.dedent(code)],
        "cwd": ".",
        "time_budget_s": 60,
    }
    (folder / "launch.json").write_text(json.dumps(launch))
    return str(folder)


def wait_gone(ex: SlurmExecutor, ids: list[str], timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.time() + timeout_s
    while True:
        states = ex.poll(ids)
        if all(s.state == "gone" for s in states.values()) or time.time() > deadline:
            return states
        time.sleep(0.3)


def test_executor_submit_poll_find_cancel_and_sacct(tmp_path: Path) -> None:
    ex = SlurmExecutor.from_profile("local", {}, parallelism=0, poll_interval_s=0.0)
    dirs = (trial(tmp_path, "quick", "print('hi')"), trial(tmp_path, "slow", "import time; time.sleep(120)"))
    req = SubmitRequest(
        token=secrets.token_hex(4),  # job names are how find() works: unique per test run
        generation=2,
        campaign="unit",
        trial_ids=("quick", "slow"),
        trial_dirs=dirs,
        queue_dir=str(tmp_path / "queue"),
        submitit_dir=str(tmp_path / "submitit"),
        timeout_min=3,
    )
    sub = ex.submit(req)
    (array,) = arrays_of(list(sub.job_ids))
    assert sub.trial_jobs == {"quick": f"{array}_0", "slow": f"{array}_1"}
    assert all(s.alive for s in ex.poll(list(sub.job_ids)).values())  # never gone right after submit
    assert ex.find(req) == list(sub.job_ids)
    assert {r["job_id"].split("_")[0] for r in squeue_rows([array])} == {array}
    wait_running(Path(dirs[1], "status.json"))
    deadline = time.time() + 30  # the whole array is cancelled below: let the quick task end first
    while ex.poll([f"{array}_0"])[f"{array}_0"].alive and time.time() < deadline:
        time.sleep(0.2)
    ex.cancel([], tokens=[req.token])  # by name, as `hpc-agent cancel` after a lost journal entry
    states = wait_gone(ex, list(sub.job_ids))
    assert states[f"{array}_0"].scheduler_state == "COMPLETED"
    assert states[f"{array}_1"].scheduler_state == "CANCELLED", states
    slow = json.loads(Path(dirs[1], "status.json").read_text())
    assert slow["state"] == "cancelled" and slow["token"] == req.token
    deadline = time.time() + 30  # slurmdbd records the end a moment after squeue shows it
    while True:
        accounted = ex.sacct_states(list(sub.job_ids))
        assert accounted is not None  # the local cluster has accounting
        row = accounted.get(f"{array}_1")
        if (row and row.state.startswith("CANCELLED")) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert row is not None and row.state.startswith("CANCELLED"), accounted
    unknown = ex.poll(["1_0"])["1_0"]  # a job neither squeue nor sacct knows
    assert unknown.state == "gone" and unknown.scheduler_state == "" and "sacct" in unknown.reason
    # degraded mode, as on a cluster without accounting: gone, with no state to tell how it ended
    blind = SlurmExecutor.from_profile("local", {})
    blind._config = {"AccountingStorageType": "accounting_storage/none"}
    assert blind.sacct_states(["1_0"]) is None
    assert "no accounting" in blind.poll(["1_0"])["1_0"].reason

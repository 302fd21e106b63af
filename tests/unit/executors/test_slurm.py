"""hpc_agent.executors.slurm: the pure sbatch/squeue/sacct text functions (text.py), and the
commands and the executor against the local SLURM cluster (skipped without one, failed with
HPC_AGENT_REQUIRE_SLURM=1)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from hpc_agent.config.profiles import Profile
from hpc_agent.executors.base import SubmitRequest
from hpc_agent.executors.slurm.commands import query, squeue_rows
from hpc_agent.executors.slurm.executor import SlurmExecutor
from hpc_agent.executors.slurm.text import (
    QueueRow,
    SlurmQueryError,
    array_sizes,
    chunk_bounds,
    expand_job_id,
    job_status,
    job_time_min,
    max_array_size,
    mem_flag,
    narrowed,
    parse_queue_rows,
    parse_sbatch_job_id,
    parse_scontrol_config,
    sbatch_text,
    slurm_env_to_clear,
    split_parallelism,
    state_word,
)
from hpc_agent.job.trial import read_status
from unit.conftest import BareDriver, planned_and_prepared


def test_arrays_are_cut_and_throttled() -> None:
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert split_parallelism(5, [4, 4]) == [3, 2] and split_parallelism(0, [4, 1]) == [4, 1]
    assert split_parallelism(1, [3, 3]) == [1, 1]  # at least one each
    assert narrowed(8, 2) == 2 and narrowed(0, 3) == 3 and narrowed(4, 0) == 4
    assert array_sizes(["12_0", "12_1", "13_0"]) == {"12": 2, "13": 1}
    assert mem_flag(16) == "16G" and mem_flag(1.5) == "1536M"
    assert job_time_min(Profile(), 7) == 7 and job_time_min(Profile(timeout_min=30), 7) == 30


def test_slurm_output_is_read() -> None:
    assert parse_sbatch_job_id("Submitted\n4242;cluster\n") == "4242"
    with pytest.raises(SlurmQueryError, match="cannot read a job id"):
        parse_sbatch_job_id("sbatch: error: nope")
    config = parse_scontrol_config("MaxArraySize = 1001\nAccountingStorageType = accounting_storage/none\n")
    assert max_array_size(config) == 1001 and max_array_size({}) > 0
    assert expand_job_id("123_[0-2,5%2]") == ["123_0", "123_1", "123_2", "123_5"] and expand_job_id("9") == [
        "9"
    ]
    rows = parse_queue_rows("7_[0-1]|PENDING|Priority|\n8_0|RUNNING|None|vm\n8_0.batch|RUNNING||\n")
    assert set(rows) == {"7_0", "7_1", "8_0"} and rows["8_0"].node == "vm"
    assert state_word("CANCELLED by 0") == "CANCELLED" and state_word("CANCELLED+") == "CANCELLED"
    assert job_status(rows["7_0"]).state == "pending" and job_status(rows["8_0"]).state == "running"
    oom = job_status(QueueRow("9_0", "OUT_OF_MEMORY", "", "vm", "0:125"))
    assert oom.state == "gone" and oom.ended_as == "failed" and oom.ended_why
    assert slurm_env_to_clear({"SLURM_JOB_ID": "1", "SLURM_CONF": "/etc", "HOME": "/"}) == ("SLURM_JOB_ID",)


def test_the_sbatch_script_runs_the_task_list(tmp_path: Path) -> None:
    text = sbatch_text(
        Profile(partition="gpu", mem_gb=2),
        folder=tmp_path,
        python="/usr/bin/python3",
        job_name="hpca.x.g0000.ab",
        time_min=5,
        n_tasks=3,
        array_parallelism=2,
        tasks_file="t.json",
    )
    assert (
        "#SBATCH --array=0-2%2" in text and "#SBATCH --partition=gpu" in text and "#SBATCH --mem=2G" in text
    )
    assert "hpc_agent.slurm_task" in text and "t.json" in text and "#SBATCH --time=5" in text


@pytest.mark.slurm
def test_the_executor_runs_a_submission_on_the_cluster(slurm: None, bare_driver: BareDriver) -> None:
    assert "PARTITION" in query(["sinfo"])
    dirs = planned_and_prepared(bare_driver)[:1]
    paths = bare_driver.paths
    ex = SlurmExecutor.create(parallelism=2, poll_interval_s=0.5, profile="local", overrides={})
    token = secrets.token_hex(4)  # the cluster remembers ended jobs: find must see only these
    req = SubmitRequest(
        token=token,
        generation=0,
        campaign="tiny",
        trial_ids=tuple(Path(d).name for d in dirs),
        trial_dirs=tuple(dirs),
        queue_dir=str(paths.submission(0, token)),
        submitit_dir=str(paths.submitit),
        timeout_min=2,
    )
    sub = ex.submit(req)
    try:
        assert sorted(ex.find(req)) == sorted(sub.job_ids)
        arrays = {j.split("_")[0] for j in sub.job_ids}
        assert all(r["job_id"].split("_")[0] in arrays for r in squeue_rows(list(sub.job_ids)))
        assert squeue_rows([]) == []
        deadline = time.time() + 120
        while time.time() < deadline and any(s.alive for s in ex.poll(sub.job_ids).values()):
            time.sleep(0.5)
        assert [(read_status(d) or {}).get("state") for d in dirs] == ["completed"]
    finally:
        ex.cancel(sub.job_ids, [req.token])
        ex.close()

"""SLURM without a cluster: profiles, the sbatch text of every profile (golden files), the
parsers of squeue/sacct/scontrol/sinfo output, the state mapping, the fixes for refusals, and
the job side (``python -m hpc_agent.slurm_task``) run as a real process.

Regenerate the golden sbatch files after an intended change:

    HPC_AGENT_UPDATE_GOLDEN=1 python -m pytest tests/test_slurm_unit.py -k golden
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpc_agent.config.profiles import (
    PROFILE_KEYS,
    Profile,
    available_profiles,
    describe_profiles,
    load_profile,
)
from hpc_agent.errors import UserError
from hpc_agent.executors.base import JobStatus
from hpc_agent.executors.slurm.executor import SlurmExecutor
from hpc_agent.executors.slurm.text import (
    DEFAULT_MAX_ARRAY_SIZE,
    Partition,
    QueueRow,
    SlurmQueryError,
    accounting_enabled,
    chunk_bounds,
    describe_partitions,
    expand_job_id,
    job_status,
    job_time_min,
    max_array_size,
    mem_flag,
    parse_queue_rows,
    parse_sbatch_job_id,
    parse_scontrol_config,
    parse_sinfo_partitions,
    refusal_fix,
    sbatch_parameters,
    sbatch_text,
    show_profile,
    slurm_env_to_clear,
    split_parallelism,
    state_word,
    stop_before_s,
)
from hpc_agent.slurm_task import run_array_task

GOLDEN = Path(__file__).parent / "golden" / "sbatch"
UPDATE = os.environ.get("HPC_AGENT_UPDATE_GOLDEN") == "1"
TEMPLATES = sorted(available_profiles())


# ------------------------------------------------------------------------------- profiles


def test_templates_ship_the_expected_profiles() -> None:
    assert {"local", "generic-gpu", "gpu-gres", "gpu-tres", "cpu", "preemptible"} <= set(TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_loads_and_describes_itself(name: str) -> None:
    p = load_profile(name)
    assert p.name == name and p.path.endswith(f"{name}.toml")
    assert p.description, f"{name}.toml needs a description line for `hpc-agent profiles`"


def test_local_profile_polls_fast_and_real_ones_gently() -> None:
    local = SlurmExecutor.from_profile("local", {}, parallelism=0, poll_interval_s=0.0)
    assert local.poll_interval_s == 1.0
    assert SlurmExecutor.from_profile("generic-gpu", {}).poll_interval_s >= 30
    assert SlurmExecutor.from_profile("", {}).poll_interval_s >= 30  # no profile: cluster defaults
    assert SlurmExecutor.from_profile("local", {}, poll_interval_s=5).poll_interval_s == 5  # --poll-interval


def test_overrides_apply_one_key_and_parallelism_wins_over_the_profile() -> None:
    ex = SlurmExecutor.from_profile("cpu", {"partition": "small", "mem_gb": 2}, parallelism=3)
    assert ex.profile.partition == "small" and ex.profile.mem_gb == 2.0 and ex.profile.cpus_per_task == 4
    assert ex.parallelism == 3
    assert SlurmExecutor.from_profile("cpu", {}).parallelism == 64  # the profile's array_parallelism


def test_unknown_profile_lists_the_available_ones() -> None:
    with pytest.raises(UserError) as e:
        load_profile("nope")
    assert (
        "nope" in e.value.message and "local" in (e.value.fix or "") and "generic-gpu" in (e.value.fix or "")
    )


def test_missing_profile_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        load_profile(str(tmp_path / "mine.toml"))
    assert "mine.toml" in e.value.message


def test_unknown_key_in_a_profile_names_the_file_and_the_valid_keys(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text('partition = "gpu"\ngpus = 2\n')
    with pytest.raises(UserError) as e:
        load_profile(str(f))
    assert str(f) in e.value.message and "gpus" in e.value.message
    assert "gpus_per_node" in (e.value.fix or "") and "partition" in (e.value.fix or "")


def test_unknown_override_names_the_executor_section() -> None:
    with pytest.raises(UserError) as e:
        load_profile("local", {"partitoin": "x"})
    assert "[executor]" in e.value.message and "partitoin" in e.value.message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("cpus_per_task", "4", "integer"),
        ("cpus_per_task", -1, "integer"),
        ("mem_gb", True, "number"),
        ("partition", "two words", "without spaces"),
        ("setup", [1, 2], "shell lines"),
        ("requeue", "yes", "true or false"),
        ("additional_parameters", {"time": 5}, "set by hpc-agent"),
        ("additional_parameters", {"array": "0-3"}, "set by hpc-agent"),
        ("additional_parameters", {"partition": "gpu"}, "profile key partition"),
        ("additional_parameters", {"mail-type": ["END"]}, "a string, a number or true"),
    ],
)
def test_bad_values_say_what_was_expected(key: str, value: object, expected: str) -> None:
    with pytest.raises(UserError) as e:
        load_profile("local", {key: value})
    assert key in e.value.message and expected in e.value.message


def test_profile_by_path_and_setup_as_one_string(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_text(
        'description = "my site"\nsetup = "module load cuda"\nadditional_parameters = { hint = "x" }\n'
    )
    p = load_profile(str(f))
    assert p.name == "site" and p.setup == ("module load cuda",) and p.extra == {"hint": "x"}


def test_profile_keys_are_the_public_list_spec_validates_against() -> None:
    from hpc_agent.config.spec import spec_from_dict

    assert "partition" in PROFILE_KEYS and "name" not in PROFILE_KEYS and "path" not in PROFILE_KEYS
    data = {
        "campaign": {"name": "x", "metric": "loss"},
        "experiment": {"command": "true"},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "executor": {"kind": "slurm", "profile": "local", "max_array_size": 10},
    }
    assert spec_from_dict(data).executor.overrides_dict() == {"max_array_size": 10}


def test_describe_and_show(cli_run: Callable[..., Any]) -> None:
    text = describe_profiles()
    for name in TEMPLATES:
        assert f"  {name} " in text
    shown = show_profile("gpu-gres")
    assert "#SBATCH --gres=gpu:a100:1" in shown and "module load cuda/12.1 cudnn/8.9" in shown
    out = cli_run("profiles", "--show", "local")
    assert "#SBATCH --partition=debug" in out.output


# ------------------------------------------------------------------------------- sbatch text


def golden_text(name: str) -> str:
    profile = load_profile(name)
    folder = "/RESULTS/submitit/g0003.abcd1234"
    return sbatch_text(
        profile,
        folder=folder,
        python=profile.python or "/VENV/bin/python",
        job_name="hpca.demo.g0003.abcd1234",
        time_min=job_time_min(profile, 12),
        n_tasks=50,
        array_parallelism=profile.array_parallelism,
        tasks_file=f"{folder}/array.tasks.json",
    )


@pytest.mark.parametrize("name", TEMPLATES)
def test_golden_sbatch_text_of_every_profile(name: str) -> None:
    text = golden_text(name)
    path = GOLDEN / f"{name}.sh"
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"wrote the missing golden file {path}: check it, then rerun")
    assert text == path.read_text(), f"sbatch text of {name} changed; if intended: HPC_AGENT_UPDATE_GOLDEN=1"


def test_sbatch_text_contract() -> None:
    text = golden_text("local")
    assert "#SBATCH --array=0-49%50" in text
    assert "#SBATCH --job-name=hpca.demo.g0003.abcd1234" in text
    assert "#SBATCH --time=12" in text  # no timeout_min in the profile: the experiment's limit
    assert "#SBATCH --no-requeue" in text and "--wckey" not in text and "srun" not in text
    assert (
        "exec /VENV/bin/python -u -m hpc_agent.slurm_task /RESULTS/submitit/g0003.abcd1234/array.tasks.json"
        in text
    )
    assert "#SBATCH --output=/RESULTS/submitit/g0003.abcd1234/%A_%a_0_log.out" in text


def test_parameters_requeue_throttle_signal_and_extras() -> None:
    p = Profile(
        requeue=True, reservation="r1", gpus_per_node=2, mem_gb=1.5, additional_parameters=(("hint", "x"),)
    )
    params = sbatch_parameters(p, job_name="j", time_min=1, array_parallelism=0)
    extra = params["additional_parameters"]
    assert extra["requeue"] is True and "no_requeue" not in extra
    assert extra["reservation"] == "r1" and extra["hint"] == "x"
    # a 1-minute job: SLURM's USR2 may come up to 60 s early, i.e. at its start: none is asked
    # for, the runner stops the trial on its own clock (half the job's time before the limit)
    assert "signal" not in extra
    assert stop_before_s(p, 1) == 30 and stop_before_s(p, 60) == 60
    assert (
        "signal"
        not in sbatch_parameters(p, job_name="j", time_min=2, array_parallelism=0)["additional_parameters"]
    )  # 60 s before a 2-minute limit, up to 60 s early: at the start
    assert (
        sbatch_parameters(p, job_name="j", time_min=3, array_parallelism=0)["additional_parameters"]["signal"]
        == "B:USR2@60"
    )
    assert params["gpus_per_node"] == 2 and params["mem"] == "1536M" and params["array_parallelism"] == 1
    assert sbatch_parameters(Profile(), job_name="j", time_min=60, array_parallelism=5)[
        "additional_parameters"
    ] == {
        "signal": "B:USR2@60",
        "no_requeue": True,
    }


def test_job_time_comes_from_the_experiment_unless_the_profile_sets_it() -> None:
    assert job_time_min(Profile(), 7) == 7
    assert job_time_min(Profile(timeout_min=240), 7) == 240
    assert job_time_min(Profile(), 0) == 1


def test_mem_flag() -> None:
    assert mem_flag(32) == "32G" and mem_flag(0.5) == "512M"


# ------------------------------------------------------------------------------- chunks


def test_chunks_cover_every_trial_under_the_limit() -> None:
    assert chunk_bounds(50, 10) == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]
    assert chunk_bounds(50, 1001) == [(0, 50)]
    assert chunk_bounds(0, 10) == []
    assert chunk_bounds(3, 0) == [(0, 1), (1, 2), (2, 3)]


def test_parallelism_is_shared_between_chunks() -> None:
    assert split_parallelism(0, [10, 10]) == [10, 10]
    assert split_parallelism(7, [10, 10, 10]) == [3, 2, 2]
    assert split_parallelism(100, [10, 4]) == [10, 4]
    assert split_parallelism(2, [5, 5, 5]) == [1, 1, 1]  # at least one each


# ------------------------------------------------------------------------------- parsers

SCONTROL_CONFIG = """Configuration data as of 2026-11-27T01:20:00
AccountingStorageType   = accounting_storage/slurmdbd
MaxArraySize            = 10001
MinJobAge               = 300 sec
SLURM_VERSION           = 22.05.8
"""

SQUEUE = """8456008_2|CANCELLED|None|vm
8456008_1|FAILED|NonZeroExitCode|vm
8456008_5|PENDING|JobArrayTaskLimit|
8456008_4|RUNNING|None|vm
8456009|COMPLETING|None|vm
"""

SACCT = """8456008_0|COMPLETED|0:0|None|vm
8456008_1|FAILED|3:0|None|vm
8456008_2|CANCELLED by 0|0:0|None|vm
8456008_3|OUT_OF_MEMORY|0:125|None|vm
8456008_[4-9%3]|PENDING|0:0|JobArrayTaskLimit|None assigned
8456010.batch|COMPLETED|0:0||vm
8456011_7|TIMEOUT|0:0|None|vm
"""


def test_scontrol_config() -> None:
    cfg = parse_scontrol_config(SCONTROL_CONFIG)
    assert cfg["MaxArraySize"] == "10001" and max_array_size(cfg) == 10001
    assert accounting_enabled(cfg)
    assert max_array_size({}) == DEFAULT_MAX_ARRAY_SIZE == 1001
    assert not accounting_enabled({"AccountingStorageType": "accounting_storage/none"})
    assert not accounting_enabled({})


def test_sbatch_job_id() -> None:
    assert parse_sbatch_job_id("123\n") == "123"
    assert parse_sbatch_job_id("456;cluster2\n") == "456"
    with pytest.raises(SlurmQueryError):
        parse_sbatch_job_id("Submitted batch job\n")


def test_expand_job_ids() -> None:
    assert expand_job_id("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert expand_job_id("12_[7]") == ["12_7"]
    assert expand_job_id("12_4") == ["12_4"] and expand_job_id("12") == ["12"]


def test_squeue_rows_and_states() -> None:
    rows = parse_queue_rows(SQUEUE)
    st = {j: job_status(r) for j, r in rows.items()}
    assert st["8456008_5"] == JobStatus("8456008_5", "pending", "PENDING", "JobArrayTaskLimit", "")
    assert st["8456008_4"].state == "running" and st["8456008_4"].node == "vm"
    assert st["8456009"].state == "running"  # COMPLETING: not gone until the epilog is done
    assert st["8456008_2"].state == "gone" and st["8456008_2"].scheduler_state == "CANCELLED"
    assert st["8456008_1"].reason == "NonZeroExitCode"


def test_sacct_rows_expand_ranges_and_skip_steps() -> None:
    rows = parse_queue_rows(SACCT, sacct=True)
    assert "8456010.batch" not in rows and "8456010" not in rows
    assert [j for j in rows if j.startswith("8456008_")] == [f"8456008_{i}" for i in range(10)]
    st = {j: job_status(r) for j, r in rows.items()}
    one = st["8456008_1"]
    assert (one.job_id, one.state, one.scheduler_state, one.reason, one.node) == (
        "8456008_1", "gone", "FAILED", "exit code 3", "vm"
    )  # fmt: skip
    # SLURM's words are translated here, in the executor: the loop only reads ended_as
    assert one.ended_as == "lost" and "FAILED without a final status" in one.ended_why
    assert st["8456008_2"].scheduler_state == "CANCELLED" and st["8456008_2"].reason == "by uid 0"
    assert st["8456008_2"].ended_as == "cancelled"
    assert st["8456008_3"].scheduler_state == "OUT_OF_MEMORY" and st["8456008_3"].ended_as == "failed"
    assert "mem_gb" in st["8456008_3"].ended_fix
    assert st["8456008_9"].state == "pending" and st["8456008_9"].node == "" and not st["8456008_9"].ended_as
    assert st["8456011_7"].scheduler_state == "TIMEOUT" and st["8456011_7"].ended_as == "timeout"
    assert st["8456008_0"].reason == ""


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ("PENDING", "pending"),
        ("REQUEUED", "pending"),
        ("CONFIGURING", "pending"),
        ("RUNNING", "running"),
        ("SUSPENDED", "running"),
        ("SOMETHING_NEW", "running"),  # unknown: never call a live job gone
        ("COMPLETED", "gone"),
        ("PREEMPTED", "gone"),
        ("NODE_FAIL", "gone"),
        ("CANCELLED+", "gone"),
    ],
)
def test_state_mapping(state: str, kind: str) -> None:
    assert job_status(QueueRow("1_0", state)).state == kind
    assert state_word(state) == state.rstrip("+")


def test_sinfo_partitions() -> None:
    parts = parse_sinfo_partitions(
        "debug*|infinite|(null)\nsmall|5:00|(null)\ndebug*|infinite|(null)\ngpu|2-00:00:00|gpu:a100:4\n"
    )
    assert [p.name for p in parts] == ["debug", "small", "gpu"] and parts[0].default
    text = describe_partitions(parts)
    assert (
        "debug (default) [max time infinite, no GRES]" in text
        and "gpu [max time 2-00:00:00, gres gpu:a100:4]" in text
    )


# ------------------------------------------------------------------------------- refusals

PARTS = [Partition("debug", "infinite", "(null)", True), Partition("small", "5:00", "(null)", False)]


@pytest.mark.parametrize(
    ("stderr", "profile", "needles"),
    [
        (
            "sbatch: error: invalid partition specified: nope\n"
            "sbatch: error: Batch job submission failed: Invalid partition name specified",
            Profile(partition="nope", path="/p/x.toml"),
            ["'nope'", "debug (default)", "small", "/p/x.toml"],
        ),
        (
            "sbatch: error: Invalid generic resource (gres) specification",
            Profile(gres="gpu:1"),
            ["gres='gpu:1'", "CPUs"],
        ),
        (
            "sbatch: error: Batch job submission failed: Requested time limit is invalid "
            "(missing or exceeds some limit)",
            Profile(partition="small"),
            ["asks for 12 min", "small", "time_budget_s"],
        ),
        (
            "sbatch: error: Batch job submission failed: "
            "Invalid account or account/partition combination specified",
            Profile(account="nope"),
            ["'nope'", "sacctmgr"],
        ),
        (
            "sbatch: error: Batch job submission failed: Invalid qos specification",
            Profile(qos="nope"),
            ["'nope'", "qos"],
        ),
        (
            "sbatch: error: Batch job submission failed: Invalid feature specification",
            Profile(constraint="v100"),
            ["v100"],
        ),
        (
            "sbatch: error: AssocMaxSubmitJobLimit\nsbatch: error: Batch job submission failed: Job violates "
            "accounting/QOS policy (job submit limit, user's size and/or time limits)",
            Profile(account="limited"),
            ["MaxSubmitJobs", "batch_size"],
        ),
        (
            "sbatch: error: Batch job submission failed: Invalid job array specification",
            Profile(),
            ["max_array_size"],
        ),
        ("sbatch did not answer within 120 s", Profile(), ["again"]),
        ("sbatch: error: something new", Profile(), ["nothing was lost"]),
    ],
)
def test_refusal_fixes_name_the_value_and_the_change(
    stderr: str, profile: Profile, needles: list[str]
) -> None:
    fix = refusal_fix(stderr, profile, 12, PARTS)
    for needle in needles:
        assert needle in fix, (needle, fix)


def test_inherited_slurm_variables_are_cleared_but_slurm_conf_kept() -> None:
    env = {
        "SLURM_JOB_ID": "1",
        "SLURM_CPUS_PER_TASK": "4",
        "SLURM_CONF": "/etc/x",
        "PATH": "/bin",
        "SBATCH_X": "1",
    }
    assert set(slurm_env_to_clear(env)) == {"SLURM_JOB_ID", "SLURM_CPUS_PER_TASK"}


# ------------------------------------------------------------------------------- the job side


def prepared_trial(root: Path, name: str, code: str) -> Path:
    trial = root / name
    trial.mkdir(parents=True)
    (trial / "params.json").write_text("{}")
    (trial / "launch.json").write_text(
        json.dumps(
            {
                "trial": name,
                "command": ["python", "-c", textwrap.dedent(code)],
                "cwd": ".",
                "time_budget_s": 30,
            }
        )
    )
    return trial


def test_task_runs_the_trial_of_its_array_index(tmp_path: Path) -> None:
    trials = [prepared_trial(tmp_path, f"t{i}", f"print('trial {i}')") for i in range(3)]
    tasks = tmp_path / "array.tasks.json"
    tasks.write_text(json.dumps({"token": "tok1", "trials": [str(t) for t in trials]}))
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "77"}
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_agent.slurm_task", str(tasks)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "completed" in proc.stdout
    status = json.loads((trials[1] / "status.json").read_text())
    assert status["state"] == "completed" and status["token"] == "tok1" and status["job_id"] == "77_1"
    assert not (trials[0] / "status.json").exists() and not (trials[2] / "status.json").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "hpc_agent.slurm_task", str(tasks)],
        env={**env, "SLURM_ARRAY_TASK_ID": "9"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "no task '9'" in bad.stderr


def test_a_slurm_requeue_does_not_rerun_a_trial_the_campaign_requeues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = tmp_path / "t"
    trial.mkdir()  # no launch.json: running it would raise
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    (trial / "status.json").write_text(json.dumps({"state": "preempted", "token": "tok"}))
    assert run_array_task(str(trial), "tok") == "skipped"
    (trial / "status.json").write_text(json.dumps({"state": "running", "token": "other"}))
    assert run_array_task(str(trial), "tok") == "skipped"
    (trial / "launch.json").write_text("{}")
    (trial / "status.json").write_text(json.dumps({"state": "completed", "token": "tok"}))
    assert run_array_task(str(trial), "tok") == "completed"  # the runner's own answer for a finished trial


@pytest.mark.parametrize(
    ("log", "cancelled"),
    [
        ("slurmstepd-vm: error: *** JOB 8577638 ON vm CANCELLED AT 2026-11-27T01:37:53 ***\n", True),
        (
            "slurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2026-11-27T01:37:53 DUE TO PREEMPTION ***\n",
            False,
        ),
        (
            "slurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2026-11-27T01:37:53 DUE TO TIME LIMIT ***\n",
            False,
        ),
        ("Traceback (most recent call last):\n", False),
    ],
)
def test_scancel_is_told_from_preemption_by_slurmstepd_message(
    tmp_path: Path, log: str, cancelled: bool
) -> None:
    err = tmp_path / "task.err"
    err.write_text(log)
    with open(err, "a") as f:
        proc = subprocess.run(
            [sys.executable, "-c", "from hpc_agent.job.runner import cancelled_by_scancel as c; print(c())"],
            stderr=f,
            stdout=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert proc.stdout.strip() == str(cancelled)


def test_poll_asks_the_controller_at_most_once_per_interval() -> None:
    ex = SlurmExecutor.from_profile("local", {}, poll_interval_s=60)
    ex._last = {"5_0": JobStatus("5_0", "gone", "COMPLETED"), "5_1": JobStatus("5_1", "running", "RUNNING")}
    ex._last_query_at = time.monotonic()
    served = ex.poll(["5_0", "5_1"])  # no squeue: both from the last answer
    assert served["5_1"] == JobStatus("5_1", "running", "RUNNING")
    # a job last seen gone is "alive" until a fresh look sees it gone again (confirmations)
    assert served["5_0"].alive and served["5_0"].scheduler_state == "COMPLETED"

"""The runner: what runs inside a job. Real subprocesses, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpc_agent.job.runner import run_trial


def prepare(
    tmp_path: Path, script: str, budget: float = 20, grace: float = 1, command: list[str] | None = None
) -> Path:
    trial = tmp_path / "trial"
    (trial / "code").mkdir(parents=True)
    (trial / "code" / "train.py").write_text(textwrap.dedent(script))
    (trial / "params.json").write_text(json.dumps({"x": 0.5, "seed": 3}))
    (trial / "launch.json").write_text(
        json.dumps(
            {
                "trial": "0000-0000",
                "command": command or ["python", "train.py"],
                "cwd": "code",
                "env": {"MY_VAR": "hello"},
                "time_budget_s": budget,
                "kill_grace_s": grace,
                "seed": 3,
                "unset_env": ["SECRET_TOKEN_FOR_TEST"],
            }
        )
    )
    return trial


def status(trial: Path) -> dict:
    return json.loads((trial / "status.json").read_text())


def test_completed_with_env_contract_and_no_hpc_agent_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_TOKEN_FOR_TEST", "sk-do-not-leak")
    trial = prepare(
        tmp_path,
        """
        import json, os
        keys = ["HPC_AGENT_TRIAL_DIR", "HPC_AGENT_PARAMS", "HPC_AGENT_METRICS", "HPC_AGENT_CHECKPOINT_DIR",
                "HPC_AGENT_TIME_BUDGET_S", "HPC_AGENT_SEED", "MY_VAR"]
        env = {k: os.environ[k] for k in keys}
        params = json.load(open(os.environ["HPC_AGENT_PARAMS"]))
        with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
            f.write(json.dumps({"step": 0, "loss": params["x"]}) + "\\n")
        print(json.dumps(env))
        print("secret" if "SECRET_TOKEN_FOR_TEST" in os.environ else "clean")
        """,
    )
    assert run_trial(str(trial), token="tok1") == "completed"
    st = status(trial)
    assert (
        st["state"] == "completed" and st["exit_code"] == 0 and st["token"] == "tok1" and st["attempt"] == 1
    )
    out = (trial / "stdout.log").read_text().splitlines()
    env = json.loads(out[0])
    assert env["HPC_AGENT_TRIAL_DIR"] == str(trial)
    assert env["HPC_AGENT_METRICS"] == str(trial / "metrics.jsonl")
    assert env["HPC_AGENT_CHECKPOINT_DIR"] == str(trial / "checkpoint")
    assert (
        env["HPC_AGENT_TIME_BUDGET_S"] == "20" and env["HPC_AGENT_SEED"] == "3" and env["MY_VAR"] == "hello"
    )
    assert out[1] == "clean"
    assert (trial / "checkpoint").is_dir()
    assert json.loads((trial / "metrics.jsonl").read_text())["loss"] == 0.5


def test_failure_records_exit_code_and_stderr_tail(tmp_path: Path) -> None:
    trial = prepare(
        tmp_path, "import sys\nprint('working', file=sys.stderr)\nraise ValueError('bad learning rate')\n"
    )
    assert run_trial(str(trial)) == "failed"
    st = status(trial)
    assert st["exit_code"] == 1
    assert "ValueError: bad learning rate" in st["reason"]
    assert "working" in st["stderr_tail"] and "Traceback" in st["stderr_tail"]


def test_command_not_found_is_data(tmp_path: Path) -> None:
    trial = prepare(tmp_path, "", command=["definitely-not-a-command-xyz", "--flag"])
    assert run_trial(str(trial)) == "failed"
    st = status(trial)
    assert "command not found: 'definitely-not-a-command-xyz'" in st["reason"]
    assert st["exit_code"] == 127
    assert "command not found" in (trial / "stderr.log").read_text()


def test_budget_is_enforced_sigterm_then_sigkill(tmp_path: Path) -> None:
    trial = prepare(
        tmp_path,
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a stubborn experiment
        time.sleep(60)
        """,
        budget=1,
        grace=1,
    )
    t0 = time.monotonic()
    assert run_trial(str(trial)) == "timeout"
    assert time.monotonic() - t0 < 6
    st = status(trial)
    assert "exceeded time_budget_s=1" in st["reason"] and "SIGKILL" in st["reason"]


def test_budget_sigterm_is_enough_for_a_polite_experiment(tmp_path: Path) -> None:
    trial = prepare(tmp_path, "import time\ntime.sleep(60)\n", budget=1, grace=5)
    t0 = time.monotonic()
    assert run_trial(str(trial)) == "timeout"
    assert time.monotonic() - t0 < 4
    assert "stopped on SIGTERM" in status(trial)["reason"]


def test_finished_trial_is_never_run_twice(tmp_path: Path) -> None:
    trial = prepare(tmp_path, "print('ran')\n")
    assert run_trial(str(trial)) == "completed"
    assert run_trial(str(trial), token="second") == "completed"
    assert (trial / "stdout.log").read_text().count("ran") == 1
    assert status(trial)["attempt"] == 1


def test_signal_to_the_runner_is_a_preemption_and_reaches_the_child(tmp_path: Path) -> None:
    trial = prepare(
        tmp_path,
        """
        import signal, sys, time, os
        def bye(*a):
            open(os.path.join(os.environ["HPC_AGENT_CHECKPOINT_DIR"], "saved"), "w").write("ok")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("started", flush=True)
        time.sleep(60)
        """,
        budget=60,
        grace=5,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from hpc_agent.job.runner import run_trial; print(run_trial({str(trial)!r}, 'tokA'))",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 20
    while "started" not in (trial / "stdout.log").read_text() if (trial / "stdout.log").exists() else True:
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert out.strip() == "preempted"
    st = status(trial)
    assert st["state"] == "preempted" and st["interrupted_by"] == "SIGTERM" and st["token"] == "tokA"
    assert (trial / "checkpoint" / "saved").read_text() == "ok"  # the experiment could checkpoint
    # requeued: the same trial runs again (attempt 2), in the same folder
    (trial / "code" / "train.py").write_text("print('second attempt')\n")
    assert run_trial(str(trial), token="tokB") == "completed"
    st = status(trial)
    assert st["attempt"] == 2 and st["token"] == "tokB"
    assert "attempt 2" in (trial / "stdout.log").read_text()


def test_child_dies_with_a_killed_runner(tmp_path: Path) -> None:
    trial = prepare(tmp_path, "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)\n", budget=60)
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from hpc_agent.job.runner import run_trial; run_trial({str(trial)!r})"]
    )
    deadline = time.time() + 20
    while not (trial / "stdout.log").exists() or not (trial / "stdout.log").read_text().strip():
        assert time.time() < deadline
        time.sleep(0.05)
    child = int((trial / "stdout.log").read_text().split()[0])
    proc.kill()
    proc.wait()
    deadline = time.time() + 5
    while _alive(child):
        assert time.time() < deadline, "the experiment outlived its runner"
        time.sleep(0.05)
    assert status(trial)["state"] == "running"  # the driver will call it lost and requeue it


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_python_means_the_runners_interpreter(tmp_path: Path) -> None:
    trial = prepare(tmp_path, "import sys\nprint(sys.executable)\n")
    assert run_trial(str(trial)) == "completed"
    assert (trial / "stdout.log").read_text().strip() == sys.executable


def test_track_api_in_a_trial(tmp_path: Path) -> None:
    trial = prepare(
        tmp_path,
        """
        import hpc_agent
        cfg = hpc_agent.params({"x": 0.0, "depth": 2})
        assert cfg == {"x": 0.5, "depth": 2, "seed": 3}, cfg
        assert hpc_agent.seed() == 3 and hpc_agent.time_budget_s() == 20 and 0 < hpc_agent.time_left() <= 20
        for step in range(3):
            hpc_agent.log(step=step, loss=1.0 / (step + 1), acc=float("nan") if step == 2 else 0.5)
        (hpc_agent.checkpoint_dir() / "w.txt").write_text("w")
        """,
    )
    assert run_trial(str(trial)) == "completed", (trial / "stderr.log").read_text()
    lines = (trial / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["step"] == 0
    assert "NaN" in lines[2]  # a non-finite value is kept as data
    assert (trial / "checkpoint" / "w.txt").exists()


def test_track_outside_a_campaign(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import hpc_agent

    for k in list(os.environ):
        if k.startswith("HPC_AGENT_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    assert hpc_agent.params({"lr": 1}) == {"lr": 1}
    hpc_agent.log(step=1, loss=0.5)
    assert '"loss": 0.5' in capsys.readouterr().out
    assert hpc_agent.checkpoint_dir() == Path("checkpoint")
    with pytest.raises(TypeError, match="is not a number"):
        hpc_agent.log(loss="high")


# ------------------------------------------------------------------------------- issue: survive the cluster


def test_a_trial_assigned_to_another_submission_is_not_run(tmp_path: Path) -> None:
    trial = prepare(tmp_path, "print('ran')\n")
    (trial / "assignment.json").write_text(json.dumps({"token": "tokNEW"}))
    assert run_trial(str(trial), token="tokOLD") == "superseded"  # an orphaned array's task
    assert not (trial / "status.json").exists() and not (trial / "stdout.log").exists()
    (trial / "assignment.json").write_text(json.dumps({"token": None}))  # being resolved: nobody
    assert run_trial(str(trial), token="tokNEW") == "superseded"
    (trial / "assignment.json").write_text(json.dumps({"token": "tokNEW"}))
    assert run_trial(str(trial), token="tokNEW") == "completed"


CHECKPOINTING = """
import json, os, time
ck = os.path.join(os.environ["HPC_AGENT_CHECKPOINT_DIR"], "step.json")
step = json.load(open(ck))["step"] if os.path.exists(ck) else 0
print("started at", step, flush=True)
while True:
    time.sleep(0.1)
    step += 1
    if step % 5 == 0:
        with open(ck + ".tmp", "w") as f:
            json.dump({"step": step}, f)
        os.replace(ck + ".tmp", ck)
"""


def test_the_jobs_time_limit_stops_the_trial_to_checkpoint(tmp_path: Path) -> None:
    trial = prepare(tmp_path, CHECKPOINTING, budget=60, grace=1)
    t0 = time.time()
    state = run_trial(str(trial), token="t", deadline=t0 + 3.0, stop_before_s=1.5)
    took = time.time() - t0
    st = status(trial)
    assert state == "preempted" and st["interrupted_by"] == "time_limit", st
    assert st["checkpoint_advanced"] is True  # progress: a requeue that is not a failure
    assert "before the job's time limit" in st["reason"]
    assert 1.3 < took < 2.8  # stopped at the deadline minus stop_before_s, not at the budget


def test_no_checkpoint_written_is_no_progress(tmp_path: Path) -> None:
    trial = prepare(tmp_path, "import time\ntime.sleep(60)\n", budget=60, grace=1)
    assert run_trial(str(trial), token="t", deadline=time.time() + 2.0, stop_before_s=1.0) == "preempted"
    assert status(trial)["checkpoint_advanced"] is False


def test_an_early_slurm_warning_does_not_stop_the_trial(tmp_path: Path) -> None:
    """SLURM's USR2 may come up to 60 s before its --signal time: with a known deadline it
    changes nothing, the runner's own clock decides."""
    trial = prepare(tmp_path, CHECKPOINTING, budget=60, grace=1)
    code = (
        "import time; from hpc_agent.job.runner import run_trial; "
        f"print(run_trial({str(trial)!r}, 't', deadline=time.time() + 4.0, stop_before_s=1.5))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while not (trial / "stdout.log").exists() or "started" not in (trial / "stdout.log").read_text():
        assert time.time() < deadline
        time.sleep(0.05)
    t0 = time.time()
    proc.send_signal(signal.SIGUSR2)
    out, _ = proc.communicate(timeout=20)
    assert out.strip() == "preempted"
    st = status(trial)
    assert st["interrupted_by"] == "time_limit" and time.time() - t0 > 1.5, st


def test_usr2_while_the_job_starts_python_never_kills_it(tmp_path: Path) -> None:
    """The job script's first line ignores USR2 until slurm_task's handler is in place: a
    warning delivered while Python starts (it came ~50 ms after launch, with a 1-minute limit)
    cannot kill the task before the trial starts (it did: "FAILED before it started"). (A job
    that short is not sent the warning at all any more: see test_slurm_unit.)"""
    from hpc_agent.executors.slurm.text import JOB_PREAMBLE

    trial = prepare(tmp_path, "import time\ntime.sleep(1.0)\nprint('done')\n", budget=30)
    tasks = tmp_path / "array.tasks.json"
    tasks.write_text(
        json.dumps({"token": "", "trials": [str(trial)], "time_limit_s": 60, "stop_before_s": 30})
    )
    marker = tmp_path / "preamble-done"
    script = f"{JOB_PREAMBLE}\n: > {marker}\nexec {sys.executable} -u -m hpc_agent.slurm_task {tasks}\n"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0"}
    proc = subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.0005)
    sent = 0
    while proc.poll() is None:  # USR2 again and again, through Python's start and the trial
        try:
            os.kill(proc.pid, signal.SIGUSR2)
            sent += 1
        except ProcessLookupError:
            break
        time.sleep(0.002)
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0 and sent > 50, (proc.returncode, out)
    assert status(trial)["state"] == "completed", status(trial)


def test_launch_json_round_trips_every_field(tmp_path: Path) -> None:
    from dataclasses import fields

    from hpc_agent.job.trial import Launch

    launch = Launch(
        trial="0001-0002",
        command=("python", "train.py"),
        time_budget_s=12.5,
        cwd="elsewhere",
        env={"A": "1"},
        kill_grace_s=3.0,
        seed=7,
        unset_env=("SECRET",),
        fidelity=2.0,
    )
    launch.write(tmp_path)
    assert Launch.read(tmp_path) == launch
    assert set(json.loads((tmp_path / "launch.json").read_text())) == {f.name for f in fields(Launch)}


def test_the_end_of_an_attempt_is_announced_beside_the_trial_folders(tmp_path: Path) -> None:
    """In a campaign's layout (gen-NNNN/trials/<trial>) the runner's final status is followed
    by a notice in gen-NNNN/ended/, which the driver lists instead of every status file; a
    running status announces nothing, and a folder outside that layout gets no notice."""
    trial = prepare(tmp_path, "print('hi')\n")
    inside = tmp_path / "gen-0000" / "trials" / "0000-0000"
    inside.parent.mkdir(parents=True)
    trial.rename(inside)
    assert run_trial(str(inside), token="tok") == "completed"
    assert os.listdir(tmp_path / "gen-0000" / "ended") == ["0000-0000.tok.1"]
    other = prepare(tmp_path, "print('hi')\n")
    assert run_trial(str(other), token="tok") == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen-0000", "trial"]

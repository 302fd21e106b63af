"""Surviving a hostile cluster, on the real local SLURM: a driver killed inside a slow
``sbatch``, an orphaned sbatch that submits after its driver is gone, a job time limit shorter
than the trial, and kill -9 of the driver at random moments (the chaos test)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_TRAIN
from test_slurm_cluster import SLURM_RUN, ended, events

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm")]

# every execution of a trial leaves one line in its folder: "exactly once" is counted, not assumed
COUNTED = (
    "import os\n"
    "with open(os.path.join(os.environ['HPC_AGENT_TRIAL_DIR'], 'executions.log'), 'a') as f:\n"
    "    f.write(os.environ.get('SLURM_JOB_ID', '?') + '\\n')\n"
)


def executions(results: Path) -> dict[str, int]:
    return {
        p.parent.name: len(p.read_text().splitlines()) for p in results.glob("gen-*/trials/*/executions.log")
    }


def sbatch_wrapper(folder: Path, body: str) -> dict[str, str]:
    """A PATH on which ``sbatch`` is ``body`` (bash) in front of the real one."""
    real = shutil.which("sbatch")
    assert real
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "sbatch"
    wrapper.write_text("#!/bin/bash\n" + body.replace("REAL_SBATCH", real))
    wrapper.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def driver(camp: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HPC_AGENT_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "hpc_agent", "run", str(camp), *SLURM_RUN],
        cwd=cwd,
        env={**base, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def count_events(results: Path, name: str) -> int:
    try:
        return sum(
            f'"event":"{name}"' in line for line in (results / "journal.jsonl").read_text().splitlines()
        )
    except FileNotFoundError:
        return 0


def wait_until(check: Callable[[], bool], timeout_s: float = 60, what: str = "") -> None:
    deadline = time.time() + timeout_s
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kill9(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def arrays_in_sacct(results: Path, expect_done: int = 0) -> dict[int, set[str]]:
    """Generation -> the job arrays sacct knows for this campaign's submission tokens (every
    token ever journaled, failed ones included: an orphan would carry one of those)."""
    subs = events(results, "submitting")
    names = ",".join(f"hpca.tiny.g{e['generation']:04d}.{e['token']}" for e in subs)
    deadline = time.time() + 30
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-S", "now-2hours", f"--name={names}", "-o", "JobID,JobName,State"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        done = [r for r in rows if r[2].split()[0] not in ("PENDING", "RUNNING")]
        if len(done) >= expect_done or time.time() > deadline:
            break
        time.sleep(0.5)
    arrays: dict[int, set[str]] = {}
    for jid, name, _state in rows:
        arrays.setdefault(int(name.split(".")[2][1:]), set()).add(jid.split("_")[0])
    return arrays


# ------------------------------------------------------------------------------- sbatch in flight


def test_a_driver_killed_inside_a_slow_sbatch_submits_each_trial_once(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    """It did not hold: the rerun found no job yet, resubmitted, and the orphaned sbatch then
    submitted too: two arrays, every trial run twice at once."""
    camp = make_campaign(batch_size=3, script=COUNTED + TINY_TRAIN)
    results = tmp_path / "results" / "tiny"
    slow = sbatch_wrapper(tmp_path / "slow", 'sleep 5\nexec REAL_SBATCH "$@"\n')
    first = driver(camp, tmp_path, slow)
    try:
        wait_until(lambda: count_events(results, "submitting") == 1, what="the submission")
        time.sleep(1.0)  # inside the slowed sbatch
    finally:
        kill9(first)
    again = driver(camp, tmp_path)  # at once, with the real sbatch
    out, _ = again.communicate(timeout=180)
    assert again.returncode == 0, out
    assert {e["state"] for e in ended(results).values()} == {"completed"}
    time.sleep(6)  # long enough for an orphaned sbatch to have submitted
    assert executions(results) == {"0000-0000": 1, "0000-0001": 1, "0000-0002": 1}
    assert {g: len(a) for g, a in arrays_in_sacct(results, 3).items()} == {0: 1}  # one array
    (failed,) = events(results, "submit_failed")
    assert "no job found" in failed["error"]


def test_an_orphaned_sbatch_that_submits_late_runs_nothing(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    """An sbatch that escaped its driver's death (a wrapper that forks it off) submits after the
    next driver has given up on it and resubmitted: while the trials run in the new array, the
    orphan's tasks find them assigned to another submission and leave them alone."""
    camp = make_campaign(batch_size=2, script=COUNTED + "import time\ntime.sleep(8)\n" + TINY_TRAIN)
    results = tmp_path / "results" / "tiny"
    go = tmp_path / "go"
    orphan = sbatch_wrapper(
        tmp_path / "orphan",
        f'setsid bash -c \'while [ ! -f {go} ]; do sleep 0.1; done; exec REAL_SBATCH "$@"\' _ "$@" '
        "> /dev/null 2>&1 < /dev/null &\nsleep 60\n",
    )
    first = driver(camp, tmp_path, orphan)
    try:
        wait_until(lambda: count_events(results, "submitting") == 1, what="the submission")
        time.sleep(0.5)
    finally:
        kill9(first)
    again = driver(camp, tmp_path)
    try:
        wait_until(lambda: count_events(results, "submitted") == 1, 120, "the resubmission")
        go.write_text("")  # now the orphan submits the dead driver's array, trials still running
        (failed,) = events(results, "submit_failed")
        logs = results / "submitit" / f"g0000.{failed['token']}"
        wait_until(
            lambda: (
                sum("belongs to another submission" in p.read_text() for p in logs.glob("*_log.err")) == 2
            ),
            60,
            "the orphan's tasks",
        )
        out, _ = again.communicate(timeout=180)
    finally:
        if again.poll() is None:
            kill9(again)
    assert again.returncode == 0, out
    arrays = arrays_in_sacct(results, 4)
    assert len(arrays[0]) == 2, arrays  # the orphan did get in: a second array ...
    assert executions(results) == {"0000-0000": 1, "0000-0001": 1}  # ... that ran nothing
    assert {e["state"] for e in ended(results).values()} == {"completed"}


# ------------------------------------------------------------------------------- time limits

CHECKPOINTING = textwrap.dedent(
    """
    import json, os, time
    ck = os.path.join(os.environ["HPC_AGENT_CHECKPOINT_DIR"], "step.json")
    step = json.load(open(ck))["step"] if os.path.exists(ck) else 0
    with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
        while step < 100:
            time.sleep(1.0)
            step += 1
            f.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\\n")
            f.flush()
            if step % 5 == 0:  # a checkpoint every 5 steps; SIGTERM kills it (no handler)
                with open(ck + ".tmp", "w") as c:
                    json.dump({"step": step}, c)
                os.replace(ck + ".tmp", ck)
    """
)


def test_a_checkpointing_trial_longer_than_the_job_time_limit_finishes(
    make_campaign: Callable[..., Path], tmp_path: Path, cli_run: Callable[..., Any]
) -> None:
    """100 steps of 1 s under a 1-minute SLURM limit. It did not hold: the time-limit warning
    killed tasks before they started ("FAILED before it started"), and each time-limit requeue
    counted against max_retries, so the trial gave up after three job lifetimes."""
    camp = make_campaign(
        batch_size=1,
        script=CHECKPOINTING,
        time_budget_s=300,
        extra="\n[executor]\ntimeout_min = 1\nsignal_delay_s = 10\n",
    )
    results = tmp_path / "results" / "tiny"
    proc = driver(camp, tmp_path)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    (trial,) = ended(results).values()
    assert trial["state"] == "completed", trial
    requeues = events(results, "requeued")
    lifetimes = len(requeues) + 1
    assert 2 <= lifetimes <= 4, requeues
    assert all(e["progress"] and not e["counted"] and e["why"] == "time_limit" for e in requeues), requeues
    assert not any("before it started" in e["reason"] for e in requeues)
    steps = [
        json.loads(line)["step"] for line in (results / "gen-0000/trials/0000-0000/metrics.jsonl").open()
    ]
    lost = len(steps) - 100  # steps run again after a requeue
    assert lost <= 5 * (lifetimes - 1), (lost, lifetimes)  # at most one checkpoint interval each
    # the time of every lifetime counts, with the number of attempts beside it
    table = cli_run(
        "export", str(results), "--format", "csv", "--per-trial", "--columns", "trial_id,attempts,duration_s"
    ).output.splitlines()
    row = dict(zip(table[0].split(","), table[1].split(",")))
    assert float(row["duration_s"]) >= 100 and int(row["attempts"]) == lifetimes, row
    status = cli_run("status", str(results)).output
    assert f"{lifetimes} attempt(s); {lifetimes - 1} requeue(s) after progress" in status, status
    print(f"FIGURES lifetimes={lifetimes} steps_lost={lost} duration_s={row['duration_s']}")


# ------------------------------------------------------------------------------- chaos


def test_chaos_kill_9_of_the_driver_at_random_moments(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    """A 3 x 6 campaign; the driver is killed with SIGKILL at seeded random moments, at least
    10 times, one of them inside a slowed sbatch, and restarted at once each time. Every trial
    is executed exactly once and each generation is one array in sacct."""
    seed = int(os.environ.get("HPC_AGENT_CHAOS_SEED", "20261129"))
    rng = random.Random(seed)
    script = COUNTED + "import time\ntime.sleep(2.0)\n" + TINY_TRAIN
    camp = make_campaign(generations=3, batch_size=6, script=script)
    results = tmp_path / "results" / "tiny"
    slow = sbatch_wrapper(tmp_path / "slow", 'sleep 1.5\nexec REAL_SBATCH "$@"\n')
    kills: list[str] = []
    finished = False
    while not finished:
        proc = driver(camp, tmp_path, slow)
        if len(kills) == 3:  # this one inside sbatch, on purpose
            before = count_events(results, "submitting")
            wait_until(lambda b=before: count_events(results, "submitting") > b, 120, "a submission")
            time.sleep(0.5)
            where = "inside sbatch"
        elif len(kills) < 10:
            time.sleep(rng.uniform(0.2, 3.0))
            where = "at random"
        else:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
            finished = True
            break
        if proc.poll() is not None:
            out, _ = proc.communicate()
            assert proc.returncode == 0, out
            finished = True  # it ended before it could be killed: count what happened
            break
        kill9(proc)
        kills.append(where)
    assert len(kills) >= 10 and "inside sbatch" in kills, kills
    states = {t: e["state"] for t, e in ended(results).items()}
    assert len(states) == 18 and set(states.values()) == {"completed"}, states
    assert executions(results) == dict.fromkeys(states, 1), executions(results)
    arrays = arrays_in_sacct(results, 18)
    assert {g: len(a) for g, a in arrays.items()} == {0: 1, 1: 1, 2: 1}, arrays
    lost_in_sbatch = sum("no job found" in e.get("error", "") for e in events(results, "submit_failed"))
    adopted = sum(bool(e.get("recovered")) for e in events(results, "submitted"))
    print(
        f"FIGURES seed={seed} kills={len(kills)} killed_before_sbatch_answered={lost_in_sbatch + adopted} "
        f"(resubmitted {lost_in_sbatch}, re-attached {adopted}) duplicates=0 arrays_per_generation=1"
    )

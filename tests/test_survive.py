"""Surviving the cluster, without a scheduler: the requeue rules, what a published table may
rank, one driver per folder at every instant, and messages a user can read.

The same guarantees on the real local SLURM are in test_survive_slurm.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_TRAIN

from hpc_agent.config.spec import ExperimentSection, load_spec
from hpc_agent.loop.reconcile import interrupted
from hpc_agent.store.events import Requeued, TrialEnded
from hpc_agent.store.state import TrialRecord, TrialState


def _experiment(make_campaign: Callable[..., Path], experiment: str = "") -> ExperimentSection:
    return load_spec(make_campaign(experiment=experiment)).experiment


def _trial(**kw: Any) -> TrialRecord:
    base: dict[str, Any] = {
        "trial_id": "0000-0000",
        "generation": 0,
        "index": 0,
        "config_id": "0000-0000",
        "seed": 0,
        "params": {},
        "token": "tok",
    }
    base.update(kw)
    return TrialRecord(**base)


def test_requeue_rules_progress_is_not_a_failure(make_campaign: Callable[..., Path]) -> None:
    exp = _experiment(make_campaign, experiment="max_retries = 1\nmax_progress_requeues = 3")
    time_limit = {"token": "tok", "interrupted_by": "time_limit", "duration_s": 50.0}
    progressed = {**time_limit, "checkpoint_advanced": True}
    # an attempt that wrote a checkpoint: requeued, not counted against max_retries
    ev = interrupted(_trial(retries=1, progress_requeues=2), "r", progressed, "preempted", exp)
    assert isinstance(ev, Requeued) and ev.progress is True and ev.counted is False
    assert ev.duration_s == 50.0
    # ... until its own cap
    ev = interrupted(_trial(progress_requeues=3), "r", progressed, "preempted", exp)
    assert isinstance(ev, TrialEnded) and ev.state == "preempted" and "max_progress_requeues" in ev.reason
    # no checkpoint: counted; once max_retries is spent, a trial longer than the job's limit
    # that never checkpoints is a timeout, and the reason says what to do
    ev = interrupted(_trial(), "r", time_limit, "preempted", exp)
    assert isinstance(ev, Requeued) and ev.counted is True and ev.progress is False
    ev = interrupted(_trial(retries=1), "r", time_limit, "preempted", exp)
    assert isinstance(ev, TrialEnded) and ev.state == "timeout" and "checkpoint_dir()" in ev.reason
    # a preemption without progress gives up as before
    preempted = {"token": "tok", "interrupted_by": "SIGTERM"}
    ev = interrupted(_trial(retries=1), "preempted by SIGTERM", preempted, "preempted", exp)
    assert isinstance(ev, TrialEnded) and ev.state == "preempted" and "gave up after 1" in ev.reason
    # a stopped driver (Ctrl-C) is free, whatever the caps
    ev = interrupted(_trial(retries=1), "r", {"token": "tok", "interrupted_by": "SIGINT"}, "preempted", exp)
    assert isinstance(ev, Requeued) and ev.counted is False


def test_the_state_sums_time_over_attempts() -> None:
    from hpc_agent.store.state import replay

    planned = {"id": "0000-0000", "index": 0, "params": {"x": 1}}
    events = [
        {"event": "planned", "generation": 0, "trials": [planned], "t": 1.0},
        {"event": "submitting", "generation": 0, "token": "a", "trials": ["0000-0000"]},
        {"event": "requeued", "trial": "0000-0000", "counted": False, "progress": True, "duration_s": 40.0},
        {"event": "submitting", "generation": 0, "token": "b", "trials": ["0000-0000"]},
        {
            "event": "trial_ended",
            "trial": "0000-0000",
            "state": "completed",
            "objective": 1.0,
            "duration_s": 12.0,
        },
    ]
    t = replay(events).trials["0000-0000"]
    assert t.state is TrialState.COMPLETED and t.attempt == 2 and t.progress_requeues == 1 and t.retries == 0
    assert t.duration_s == 12.0 and t.total_duration_s == 52.0


# ------------------------------------------------------------------------------- exports

PARTIAL = """
import json, os, time
p = json.load(open(os.environ["HPC_AGENT_PARAMS"]))
with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
    f.write(json.dumps({"step": 0, "loss": -100.0 if p["mode"] == "b" else 1.0}) + "\\n")
    f.flush()
if p["mode"] == "b":
    time.sleep(30)  # logs a great value, then runs out of its budget
"""


def test_exports_rank_only_completed_trials(
    make_campaign: Callable[..., Path], cli_run: Callable[..., Any]
) -> None:
    space = '[space]\nmode = { type = "choice", values = ["a", "b"] }\n'
    camp = make_campaign(script=PARTIAL, space=space, time_budget_s=2, batch_size=2)
    cli_run("run", str(camp), "--executor", "local", "--planner", "random", "-q")
    cols = ("--columns", "mode,state,attempts,duration_s,loss")
    csv = cli_run("export", "results/tiny", "--format", "csv", *cols).output
    rows = [line.split(",") for line in csv.strip().splitlines()]
    header = rows[0]
    assert "attempts" in header and "duration_s" in header
    states = [r[header.index("state")] for r in rows[1:]]
    assert states == ["completed"]  # the timed-out trial's -100 is not a result
    top = cli_run("export", "results/tiny", "--format", "markdown", "--top", "1").output
    assert "timeout" not in top and "-100" not in top
    every = cli_run("export", "results/tiny", "--format", "csv", "--state", "all", *cols).output
    assert "timeout" in every
    only = cli_run("export", "results/tiny", "--format", "csv", "--state", "timeout", *cols).output
    assert only.count("timeout") == 1 and "completed" not in only
    bad = cli_run("export", "results/tiny", "--state", "finished", code=2).output
    assert "finished" in bad and "completed" in bad


# ------------------------------------------------------------------------------- one driver per folder


def _hpc(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HPC_AGENT_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "hpc_agent", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


SLOW = "import time\ntime.sleep(3)\n" + TINY_TRAIN


def test_two_detached_drivers_at_once_one_wins_the_other_exits_2(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    camp = make_campaign(script=SLOW, batch_size=1)
    args = ("run", str(camp), "--executor", "local", "--planner", "random", "--detach")
    a, b = _hpc(tmp_path, *args), _hpc(tmp_path, *args)
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=120), b.communicate(timeout=120)
    assert sorted([a.returncode, b.returncode]) == [0, 2], (out_a, err_a, out_b, err_b)
    loser = err_a if a.returncode == 2 else err_b
    assert "another hpc-agent driver" in loser and "fix:" in loser
    results = tmp_path / "results" / "tiny"
    deadline = time.time() + 60
    while (results / "driver.lock").exists() and time.time() < deadline:
        time.sleep(0.2)
    events = [json.loads(line)["event"] for line in (results / "journal.jsonl").read_text().splitlines()]
    assert events.count("campaign") == 1 and events.count("run") == 1 and events.count("planned") == 1


def test_two_drivers_racing_on_a_new_folder_write_one_campaign_event(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    camp = make_campaign(script=SLOW, batch_size=1)
    args = ("run", str(camp), "--executor", "local", "--planner", "random", "-q")
    procs = [_hpc(tmp_path, *args) for _ in range(3)]
    codes = sorted(p.wait(timeout=120) for p in procs)
    assert codes == [0, 2, 2]
    journal = (tmp_path / "results" / "tiny" / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in journal].count("campaign") == 1


def test_a_torn_journal_line_is_reported_once_as_a_message(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    camp = make_campaign(batch_size=1)
    assert _hpc(tmp_path, "run", str(camp), "--executor", "local", "--planner", "random", "-q").wait(60) == 0
    journal = tmp_path / "results" / "tiny" / "journal.jsonl"
    with open(journal, "ab") as f:
        f.write(b'{"v":1,"event":"run_en')  # a driver killed mid-write
    for args in (("status", "results/tiny"), ("run", str(camp), "--executor", "local", "-q")):
        proc = _hpc(tmp_path, *args)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        warned = [line for line in err.splitlines() if "torn" in line]
        assert len(warned) == 1 and warned[0].startswith("warning: "), err
        assert "TornLineWarning" not in err and "journal.py" not in err


@pytest.mark.parametrize("status", ["status", "export"])
def test_status_and_export_read_a_folder_with_the_upgraded_spec(
    status: str, make_campaign: Callable[..., Path], cli_run: Callable[..., Any], tmp_path: Path
) -> None:
    """A results folder's journal written before a new [experiment] key existed is the same
    campaign: running it again is no spec change, and needs no --force."""
    camp = make_campaign(batch_size=1)
    cli_run("run", str(camp), "--executor", "local", "-q")
    journal = tmp_path / "results" / "tiny" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    first = json.loads(lines[0])
    del first["spec"]["experiment"]["max_progress_requeues"]  # as 0.1.0 wrote it
    journal.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    out = cli_run("run", str(camp), "--executor", "local").output
    assert "spec changed" not in out
    cli_run(status, "results/tiny")

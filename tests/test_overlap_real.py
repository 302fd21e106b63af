"""The async schedule on real trials: local processes, and the real local SLURM with the
driver killed (SIGKILL) while two generations are in flight, then resumed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_TRAIN
from test_overlap import in_flight_at_most
from test_slurm_cluster import events
from test_survive_slurm import COUNTED, arrays_in_sacct, driver, executions, kill9, wait_until

# trials of varied lengths: the stragglers of a generation are what the async schedule overlaps
VARIED = COUNTED + "import time, json, os\n" + (
    "p = json.load(open(os.environ['HPC_AGENT_PARAMS']))\n"
    "time.sleep(0.5 + 2.5 * abs(float(p['x'])))\n"
) + TINY_TRAIN  # fmt: skip

ASYNC = 'schedule = "async"\nmax_in_flight = 4\nrefill_at = 1\nbaseline = false'


def overlapped(results: Path) -> bool:
    """A generation was submitted while an earlier one still had trials out."""
    done = {e["generation"]: e["t"] for e in events(results, "generation_done")}
    first: dict[int, float] = {}
    for e in events(results, "submitting"):
        first.setdefault(e["generation"], e["t"])
    return any(first[g] < done[g - 1] for g in first if g - 1 in done)


def test_async_on_local_processes(make_campaign: Callable[..., Path], cli_run: Any, tmp_path: Path) -> None:
    spec_sync = ASYNC.replace('schedule = "async"\n', "")  # the flag chooses the schedule
    camp = make_campaign(generations=3, batch_size=4, campaign=spec_sync, script=VARIED)
    flags = ("--executor", "local", "--parallelism", "4", "--planner", "tpe", "--schedule", "async", "-q")
    cli_run("run", str(camp), *flags)
    results = tmp_path / "results" / "tiny"
    ended = events(results, "trial_ended")
    assert len(ended) == 12 and {e["state"] for e in ended} == {"completed"}
    assert executions(results) == {e["trial"]: 1 for e in ended}
    assert in_flight_at_most(events(results)) <= 4
    assert overlapped(results)
    status = json.loads(cli_run("status", str(results), "--json").output)
    assert status["schedule"] == "async" and status["stopped"] == "generations"
    assert status["budget"]["trials"] == 12 and status["budget"]["trial_limit"] == 12


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("slurm")
def test_async_on_slurm_survives_kill_9_with_two_generations_in_flight(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    camp = make_campaign(generations=3, batch_size=4, campaign=ASYNC, script=VARIED)
    results = tmp_path / "results" / "tiny"
    proc = driver(camp, tmp_path)

    def two_in_flight() -> bool:
        try:
            taken = {e["token"] for e in events(results, "submitted")}
            ended = {e["trial"] for e in events(results, "trial_ended")}
            subs = [e for e in events(results, "submitting") if e["token"] in taken]
        except FileNotFoundError:
            return False
        return len({s["generation"] for s in subs if set(s["trials"]) - ended}) >= 2

    wait_until(two_in_flight, 180, "two generations in flight")
    kill9(proc)
    time.sleep(1.0)  # the jobs go on without a driver
    again = driver(camp, tmp_path)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    ended = {e["trial"]: e["state"] for e in events(results, "trial_ended")}
    assert len(ended) == 12 and set(ended.values()) == {"completed"}, ended
    assert executions(results) == dict.fromkeys(ended, 1)  # no trial ran twice
    subs = events(results, "submitting")
    arrays = arrays_in_sacct(results, 12)
    assert sum(len(a) for a in arrays.values()) == len(subs)  # one array a submission, none twice
    assert in_flight_at_most(events(results)) <= 4 and overlapped(results)


# ------------------------------------------------------------------------------- narrowed submissions


def narrowed_then_widened(ex: Any, tmp_path: Path) -> None:
    """Three 3-s trials submitted to run one at a time (width 1): the second waits for the
    first, the third for the widening, which lets it start beside the second."""
    import secrets

    from test_slurm_cluster import trial

    from hpc_agent.executors.base import SubmitRequest

    code = "import time; time.sleep(3)"
    names = ("a", "b", "c")
    dirs = tuple(trial(tmp_path / "trials", n, code) for n in names)
    req = SubmitRequest(
        token=secrets.token_hex(4),
        generation=0,
        campaign="narrow",
        trial_ids=names,
        trial_dirs=dirs,
        queue_dir=str(tmp_path / "queue"),
        submitit_dir=str(tmp_path / "submitit"),
        timeout_min=3,
        width=1,
    )

    def status(n: str) -> dict[str, Any]:
        f = Path(dirs[names.index(n)], "status.json")
        return json.loads(f.read_text()) if f.exists() else {}

    sub = ex.submit(req)
    wait_until(lambda: status("a").get("state") == "completed", 60)
    wait_until(lambda: status("b").get("state") == "running", 30)
    time.sleep(1.0)
    assert status("c") == {}  # held back: the width is 1
    ex.widen(req, sub.job_ids, 3)  # SLURM: an array whose task 0 ended answers 1, and obeys
    wait_until(lambda: all(status(n).get("state") == "completed" for n in names), 60)
    b, c = status("b"), status("c")
    assert c["started_at"] < b["updated_at"]  # c ran beside b once widened
    assert status("a")["updated_at"] <= b["started_at"] + 0.5  # b waited for a


def test_a_narrowed_local_submission_runs_its_width_until_widened(tmp_path: Path) -> None:
    from hpc_agent.executors.local import LocalExecutor

    narrowed_then_widened(LocalExecutor(parallelism=3), tmp_path)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm")
def test_a_narrowed_slurm_array_runs_its_width_until_widened(tmp_path: Path) -> None:
    from hpc_agent.executors.slurm.executor import SlurmExecutor

    narrowed_then_widened(SlurmExecutor.from_profile("local", {}, poll_interval_s=0.0), tmp_path)

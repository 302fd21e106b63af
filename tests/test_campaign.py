"""Whole campaigns on the local executor: real subprocesses, real files, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import polars as pl

from hpc_agent.store.journal import Journal
from hpc_agent.store.state import replay

SLOW_TRAIN = textwrap.dedent(
    """
    import json, os, time
    p = json.load(open(os.environ["HPC_AGENT_PARAMS"]))
    time.sleep(float(os.environ.get("SLEEP", "1.5")))
    with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
        f.write(json.dumps({"step": 0, "loss": (float(p["x"]) - 0.3) ** 2}) + "\\n")
    print("done")
    """
)


def journal_events(results: Path) -> list[dict]:
    return Journal(results / "journal.jsonl").read()


def state_of(results: Path):  # type: ignore[no-untyped-def]
    return replay(journal_events(results))


def hpc(tmp_path: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HPC_AGENT_"))}
    env.update(kw.pop("env", {}))
    return subprocess.run(
        [sys.executable, "-m", "hpc_agent", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=kw.pop("timeout", 120),
    )


def test_two_generations_end_to_end(tmp_path: Path, make_campaign, cli_run) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(generations=2, batch_size=3, campaign='report_metrics = ["acc"]')
    out = cli_run("run", str(camp), "--executor", "local", "--planner", "tpe")
    assert "done: 2 generation(s)" in out.output and "best:" in out.output
    results = tmp_path / "results" / "tiny"
    st = state_of(results)
    assert st.completed_generations() == 2 and len(st.trials) == 6
    assert all(t.state.value == "completed" and t.objective is not None for t in st.trials.values())
    for g in (0, 1):
        plan = json.loads((results / f"gen-{g:04d}" / "plan.json").read_text())
        assert len(plan["trials"]) == 3 and plan["planner"] == "tpe"
        assert "Generation" in (results / f"gen-{g:04d}" / "analysis.md").read_text()
    trial = results / "gen-0000" / "trials" / "0000-0000"
    for name in ("params.json", "launch.json", "metrics.jsonl", "status.json", "stdout.log", "stderr.log"):
        assert (trial / name).exists(), name
    assert (trial / "code" / "train.py").is_file() and not (trial / "code" / "train.py").is_symlink()
    assert (trial / "code" / "campaign.toml").is_symlink()
    df = pl.read_parquet(results / "trials.parquet")
    assert df.height == 6 and {"x", "mode", "loss", "acc", "objective", "state"} <= set(df.columns)
    # the events a generation writes, in order
    kinds = [e["event"] for e in journal_events(results)]
    for a, b in [
        ("planning", "planned"),
        ("planned", "submitting"),
        ("submitting", "submitted"),
        ("submitted", "trial_ended"),
        ("trial_ended", "analyzed"),
        ("analyzed", "generation_done"),
    ]:
        assert kinds.index(a) < kinds.index(b), (a, b)
    assert kinds[-1] == "run_ended"

    # status and export read the same folder
    status = json.loads(cli_run("status", str(results), "--json").output)
    assert status["generations_done"] == 2 and status["counts"]["completed"] == 6
    assert status["best"]["objective"] == min(t.objective for t in st.trials.values())
    text = cli_run("status", str(results)).output
    assert ("best so far" in text and "6 completed" not in text) or "completed" in text
    md = cli_run("export", str(results), "--format", "markdown").output  # a paper's columns
    assert md.startswith("| x ") and md.splitlines()[0].split("|")[1:-1] == [
        " x       ",
        " mode ",
        " loss        ",
        " acc        ",
    ]
    assert md.count("\n") == 8
    csv = cli_run(
        "export", str(results), "--format", "csv", "--columns", "trial_id,generation,state,x,mode,loss"
    ).output
    assert csv.splitlines()[0] == "trial_id,generation,state,x,mode,loss"
    tex = cli_run(
        "export", str(results), "--format", "latex", "--top", "2", "--per-trial", "--columns", "trial_id,loss"
    ).output
    assert "\\toprule" in tex and "\\textbf{" in tex and "trial\\_id & loss" in tex
    cli_run("export", str(results), "--format", "parquet", "-o", str(tmp_path / "t.parquet"))
    assert pl.read_parquet(tmp_path / "t.parquet").height == 6


def test_rerun_is_a_noop_and_more_generations_extend(tmp_path: Path, make_campaign, cli_run) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(generations=1, batch_size=2)
    cli_run("run", str(camp), "--executor", "local")
    results = tmp_path / "results" / "tiny"
    logs = {p: p.read_text() for p in results.glob("gen-*/trials/*/stdout.log")}
    cli_run("run", str(camp), "--executor", "local")
    assert {p: p.read_text() for p in results.glob("gen-*/trials/*/stdout.log")} == logs  # nothing ran again
    assert len(state_of(results).trials) == 2
    out = cli_run("run", str(camp), "--executor", "local", "--generations", "2")
    assert "spec changed since the last run: campaign.generations: 1 -> 2" in out.output
    st = state_of(results)
    assert len(st.trials) == 4 and st.completed_generations() == 2


def test_bad_trials_are_data_and_the_campaign_goes_on(tmp_path: Path, make_campaign, cli_run) -> None:  # type: ignore[no-untyped-def]
    script = textwrap.dedent(
        """
        import json, os, sys, time
        p = json.load(open(os.environ["HPC_AGENT_PARAMS"]))
        b = p["behaviour"]
        out = open(os.environ["HPC_AGENT_METRICS"], "a")
        if b == "ok":
            out.write(json.dumps({"step": 0, "loss": 1.0}) + "\\n")
        elif b == "crash":
            raise RuntimeError("CUDA out of memory (simulated)")
        elif b == "nolog":
            out.write(json.dumps({"step": 0, "other": 1.0}) + "\\n")
        elif b == "nonnum":
            out.write(json.dumps({"step": 0, "loss": "high"}) + "\\n")
        elif b == "slow":
            time.sleep(30)
        """
    )
    space = '\n[space]\nbehaviour = ["ok", "crash", "nolog", "nonnum", "slow"]\n'
    no_noise_runs = "\n[rigor]\nnoise_runs = 1\n"  # one trial of each behaviour
    camp = make_campaign(script=script, space=space, batch_size=5, time_budget_s=2, extra=no_noise_runs)
    out = cli_run("run", str(camp), "--executor", "local", "--planner", "random", "--parallelism", "5")
    st = state_of(tmp_path / "results" / "tiny")
    by = {t.params["behaviour"]: t for t in st.trials.values()}
    assert by["ok"].state.value == "completed" and by["ok"].objective == 1.0
    assert by["crash"].state.value == "failed" and "RuntimeError: CUDA out of memory" in by["crash"].reason
    assert by["nolog"].state.value == "failed" and by["nolog"].reason == "metric 'loss' never logged"
    assert by["nonnum"].state.value == "failed" and "'high'" in by["nonnum"].reason
    assert by["slow"].state.value == "timeout" and "time_budget_s=2" in by["slow"].reason
    assert "done: 1 generation(s)" in out.output


def test_command_not_found_fails_every_trial_with_the_reason(tmp_path: Path, make_campaign, cli_run) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(command="no-such-trainer --epochs 3", batch_size=2)
    out = cli_run("run", str(camp), "--executor", "local", code=1)
    assert "no trial completed" in out.output
    st = state_of(tmp_path / "results" / "tiny")
    assert {t.state.value for t in st.trials.values()} == {"failed"}
    assert all("command not found: 'no-such-trainer'" in t.reason for t in st.trials.values())


def test_results_folder_of_another_campaign_is_refused(tmp_path: Path, make_campaign, cli_run) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(batch_size=1)
    cli_run("run", str(camp), "--executor", "local")
    results = tmp_path / "results" / "tiny"
    before = (results / "journal.jsonl").read_text()
    other = make_campaign(
        folder="other", batch_size=1, space='\n[space]\nx = { type = "float", low = 0.0, high = 5.0 }\n'
    )
    out = cli_run("run", str(other), "--executor", "local", "--results", str(results), code=2)
    assert "belongs to a different campaign spec" in out.output and "--force" in out.output
    assert "space.x.high: 1.0 -> 5.0" in out.output
    assert (results / "journal.jsonl").read_text() == before  # nothing written
    cli_run(
        "run", str(other), "--executor", "local", "--results", str(results), "--force", "--generations", "2"
    )
    st = state_of(results)
    assert len(st.trials) == 2 and st.trials["0001-0000"].params["x"] <= 5.0


def test_a_non_results_folder_is_refused(tmp_path: Path, make_campaign, cli_run) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    out = cli_run("run", str(camp), "--executor", "local", "--results", str(tmp_path / "precious"), code=2)
    assert "not an hpc-agent results folder" in out.output
    assert os.listdir(tmp_path / "precious") == ["thesis.tex"]


def test_parallelism_is_respected_and_seeds_expand(tmp_path: Path, make_campaign, cli_run) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(
        script=SLOW_TRAIN, batch_size=3, campaign="seeds = 2", experiment='env = { SLEEP = "0.6" }'
    )
    cli_run("run", str(camp), "--executor", "local", "--parallelism", "2")
    results = tmp_path / "results" / "tiny"
    spans = []
    for p in results.glob("gen-0000/trials/*/status.json"):
        s = json.loads(p.read_text())
        spans.append((s["started_at"], s["ended_at"]))
    assert len(spans) == 6
    peak = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert peak == 2
    st = state_of(results)
    assert sorted(t.seed for t in st.trials.values()) == [0, 0, 0, 1, 1, 1]
    assert len({t.config_id for t in st.trials.values()}) == 3
    grouped = cli_run("export", str(results), "--format", "csv").output  # 2 seeds: a row per configuration
    rows = grouped.strip().splitlines()
    assert rows[0] == "x,mode,loss_mean,loss_std,n" and len(rows) == 4
    assert all(r.split(",")[-1] == "2" for r in rows[1:])


def start_driver(tmp_path: Path, camp: Path, **popen: Any) -> subprocess.Popen[Any]:
    """`hpc-agent run CAMP --executor local --parallelism 2 -q` in the background."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    args = ["run", str(camp), "--executor", "local", "--parallelism", "2", "-q"]
    return subprocess.Popen([sys.executable, "-m", "hpc_agent", *args], cwd=tmp_path, **popen)


def _wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _running(results: Path) -> int:
    n = 0
    for p in results.glob("gen-*/trials/*/status.json"):
        try:
            n += json.loads(p.read_text())["state"] == "running"
        except (ValueError, OSError):
            pass
    return n


def test_killed_driver_resumes_without_running_anything_twice(tmp_path: Path, make_campaign) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(script=SLOW_TRAIN, batch_size=4, generations=2, experiment='env = { SLEEP = "1.0" }')
    results = tmp_path / "results" / "tiny"
    driver = start_driver(tmp_path, camp)
    _wait_for(lambda: _running(results) >= 1)
    driver.kill()  # SIGKILL: no chance to clean up; the local lanes go on
    driver.wait()
    out = hpc(tmp_path, "run", str(camp), "--executor", "local", "--parallelism", "2")
    assert out.returncode == 0, out.stderr
    st = state_of(results)
    assert st.completed_generations() == 2 and all(t.state.value == "completed" for t in st.trials.values())
    for p in results.glob("gen-*/trials/*/stdout.log"):
        assert p.read_text().count("done") == 1, p  # no trial ran twice
    assert all(t.attempt == 1 for t in st.trials.values())


def test_killed_driver_and_jobs_requeue_lost_trials(tmp_path: Path, make_campaign) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(script=SLOW_TRAIN, batch_size=4, experiment='env = { SLEEP = "1.0" }')
    results = tmp_path / "results" / "tiny"
    driver = start_driver(tmp_path, camp, start_new_session=True)
    _wait_for(lambda: _running(results) >= 2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and every lane and trial with it
    driver.wait()
    out = hpc(tmp_path, "run", str(camp), "--executor", "local", "--parallelism", "2")
    assert out.returncode == 0, out.stderr
    st = state_of(results)
    assert all(t.state.value == "completed" for t in st.trials.values())
    requeued = [e for e in journal_events(results) if e["event"] == "requeued"]
    assert len(requeued) >= 2 and all("without a final status" in e["reason"] for e in requeued)
    assert any(t.attempt == 2 for t in st.trials.values())


def test_cancel_stops_the_driver_and_run_resumes(tmp_path: Path, make_campaign) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(script=SLOW_TRAIN, batch_size=4, experiment='env = { SLEEP = "3" }')
    results = tmp_path / "results" / "tiny"
    out = hpc(tmp_path, "run", str(camp), "--executor", "local", "--parallelism", "2", "--detach")
    assert out.returncode == 0 and "detached: driver pid" in out.stdout, out.stderr
    _wait_for(lambda: _running(results) >= 1)
    again = hpc(tmp_path, "run", str(camp), "--executor", "local")
    assert again.returncode == 2 and "another hpc-agent driver" in again.stderr, again.stderr
    cancel = hpc(tmp_path, "cancel", str(results))
    assert cancel.returncode == 0 and "cancelled" in cancel.stdout, cancel.stderr
    _wait_for(lambda: state_of(results).last_run_end == "cancelled", timeout=30)
    st = state_of(results)
    assert "cancelled" in {t.state.value for t in st.trials.values()}
    assert all(t.state.value in ("cancelled", "completed") for t in st.trials.values())
    status = json.loads(hpc(tmp_path, "status", str(results), "--json").stdout)
    assert status["cancelled"] and status["driver"] is None
    out = hpc(tmp_path, "run", str(camp), "--executor", "local", "--parallelism", "4", env={"SLEEP": "0.1"})
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stderr
    st = state_of(results)
    assert all(t.state.value == "completed" for t in st.trials.values())


def test_exhausted_space_ends_the_campaign_early(tmp_path: Path, make_campaign, cli_run) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(space='\n[space]\nmode = ["a", "b", "c"]\n', batch_size=2, generations=4)
    out = cli_run("run", str(camp), "--executor", "local", "--planner", "tpe")
    assert "nothing left to propose" in out.output
    st = state_of(tmp_path / "results" / "tiny")
    # + the champion's control, and the replicate of a better one (a candidate)
    search = [t for t in st.trials.values() if t.purpose not in ("control", "replicate")]
    assert len(search) == 3 and st.last_run_end == "exhausted"


def test_sigterm_stops_the_driver_cleanly(tmp_path: Path, make_campaign) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(script=SLOW_TRAIN, batch_size=2, experiment='env = { SLEEP = "1.0" }')
    results = tmp_path / "results" / "tiny"
    driver = start_driver(tmp_path, camp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _running(results) >= 1)
    driver.send_signal(signal.SIGTERM)  # what a login node's process reaper sends
    _, err = driver.communicate(timeout=30)
    assert driver.returncode == 130 and "Run the same command to resume" in err
    assert journal_events(results)[-1]["event"] == "run_ended"
    assert journal_events(results)[-1]["status"] == "interrupted"
    assert not (results / "driver.lock").exists()
    out = hpc(tmp_path, "run", str(camp), "--executor", "local")
    assert out.returncode == 0, out.stderr
    assert all(t.state.value == "completed" for t in state_of(results).trials.values())


def test_local_lanes_share_the_visible_gpus(tmp_path: Path, make_campaign) -> None:  # type: ignore[no-untyped-def]
    """submitit's local executor hides every GPU (CUDA_VISIBLE_DEVICES=""): each lane gets its share."""
    from hpc_agent.executors.local import split_gpus

    assert split_gpus(["0", "1", "2", "3"], 2) == ["0,2", "1,3"]
    assert split_gpus(["0"], 3) == ["0", "0", "0"] and split_gpus([], 2) == ["", ""]
    script = SLOW_TRAIN + "print('GPUS=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))\n"
    camp = make_campaign(script=script, batch_size=4, experiment='env = { SLEEP = "0.3" }')
    out = hpc(
        tmp_path,
        "run",
        str(camp),
        "--executor",
        "local",
        "--parallelism",
        "2",
        env={"CUDA_VISIBLE_DEVICES": "3,5"},
    )
    assert out.returncode == 0, out.stderr
    seen = {
        p.read_text().split("GPUS=")[1].strip()
        for p in (tmp_path / "results" / "tiny").glob("gen-*/trials/*/stdout.log")
    }
    assert seen == {"3", "5"}

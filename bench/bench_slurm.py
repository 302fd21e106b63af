"""hpc-agent on SLURM vs a raw job array, on the local test cluster.

    sudo bash scripts/local-slurm.sh start
    python bench/bench_slurm.py [--trials 200] [--repeat 1]

Both sides run the same number of trivial tasks on the same cluster, in the same run:

* raw: ONE ``sbatch --array=0-(N-1)`` whose tasks run ``true``, then a ``squeue`` loop (every
  ``--raw-poll-s``) until the array has left the queue: the least any tool could do;
* hpc-agent: ONE generation of N trials (profile ``local``, random planner), each trial a
  shell one-liner that logs its metric; timed from the ``submitting`` event to the last
  ``trial_ended`` event of the journal (every outcome known), and as a whole run.

Throughput ratio = (N / hpc-agent's submit-to-last-outcome) / (N / raw's submit-to-empty-queue);
the goal is >= 0.8. hpc-agent's own bookkeeping (plan, prepare, submit, gather+analyze) is read
from the journal's timestamps and shown per trial. A JSON result goes to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parent.parent


def cluster_ready() -> bool:
    if shutil.which("sbatch") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    return proc.returncode == 0 and any(s in proc.stdout for s in ("idle", "mix"))


def wait_idle(timeout_s: float = 120.0) -> None:
    """Start each measurement on an empty queue."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        proc = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
        if not proc.stdout.strip():
            return
        time.sleep(0.5)
    raise SystemExit("the queue did not empty: other jobs are running on the local cluster")


def run_raw(n: int, work: Path, poll_s: float) -> dict[str, Any]:
    script = work / "raw.sh"
    script.write_text(
        f"#!/bin/bash\n#SBATCH --array=0-{n - 1}\n#SBATCH --job-name=bench.raw\n"
        "#SBATCH --partition=debug\n#SBATCH --cpus-per-task=1\n#SBATCH --output=/dev/null\ntrue\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run(
        ["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True, timeout=60
    )
    job = out.stdout.strip().split(";")[0]
    t_sub = time.perf_counter()
    polls = 0
    while True:
        polls += 1
        q = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True, timeout=60
        )
        if not q.stdout.strip():
            break
        time.sleep(poll_s)
    t1 = time.perf_counter()
    return {"job": job, "submit_s": t_sub - t0, "total_s": t1 - t0, "polls": polls}


CAMPAIGN = """
[campaign]
name = "bench"
metric = "loss"
generations = 1
batch_size = {n}
baseline = false

[experiment]
command = "sh trial.sh"
time_budget_s = 60
kill_grace_s = 2

[space]
x = {{ type = "float", low = 0.0, high = 1.0 }}
"""

TRIAL = textwrap.dedent(
    """\
    # a trivial trial: log one metric line and exit
    echo '{"loss": 0.5}' >> "$HPC_AGENT_METRICS"
    """
)


def run_agent(n: int, work: Path) -> dict[str, Any]:
    from hpc_agent.config.spec import load_spec
    from hpc_agent.executors.slurm.executor import SlurmExecutor
    from hpc_agent.loop.campaign import Campaign
    from hpc_agent.planners import make_planner

    camp = work / "camp"
    camp.mkdir()
    (camp / "campaign.toml").write_text(CAMPAIGN.format(n=n))
    (camp / "trial.sh").write_text(TRIAL)
    spec = load_spec(camp)
    results = work / "results"
    t0 = time.perf_counter()
    executor = SlurmExecutor.from_profile("local", {}, parallelism=0, poll_interval_s=0.0)
    result = Campaign(spec, results, executor, make_planner("random", spec)).run()
    total = time.perf_counter() - t0
    events = [
        json.loads(line) for line in (results / "journal.jsonl").read_text().splitlines() if line.strip()
    ]
    t = {e["event"]: e["t"] for e in events if e["event"] != "trial_ended"}  # first/last of each kind
    first: dict[str, float] = {}
    for e in events:
        first.setdefault(e["event"], e["t"])
    ended = [e for e in events if e["event"] == "trial_ended"]
    states: dict[str, int] = {}
    for e in ended:
        states[e["state"]] = states.get(e["state"], 0) + 1
    last_end = max(e["t"] for e in ended)
    submitted = [e for e in events if e["event"] == "submitted"]
    arrays = sorted({j.split("_")[0] for e in submitted for j in e["job_ids"]})
    statuses = [
        json.loads(p.read_text())
        for p in (results / "gen-0000" / "trials").glob("*/status.json")
        if p.exists()
    ]
    durations = [s.get("duration_s", 0.0) for s in statuses]
    return {
        "status": result.status,
        "states": states,
        "arrays": arrays,
        "total_s": total,
        "plan_s": first["planned"] - first["planning"],
        "prepare_s": first["submitting"] - first["planned"],
        "submit_s": first["submitted"] - first["submitting"],
        "wait_s": last_end - first["submitted"],
        "submit_to_done_s": last_end - first["submitting"],
        "gather_analyze_s": t["generation_done"] - last_end,
        "trial_command_s_median": statistics.median(durations) if durations else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="measure each side this many times (median)")
    ap.add_argument(
        "--raw-poll-s", type=float, default=1.0, help="the raw side's squeue interval (local profile: 1 s)"
    )
    args = ap.parse_args()
    if not cluster_ready():
        raise SystemExit("no local SLURM cluster: run `sudo bash scripts/local-slurm.sh start` first")
    OUT.mkdir(parents=True, exist_ok=True)
    raws, agents = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
            work = Path(tmp)
            wait_idle()
            raws.append(run_raw(args.trials, work, args.raw_poll_s))
            wait_idle()
            agents.append(run_agent(args.trials, work))
    raw_s = statistics.median(r["total_s"] for r in raws)
    agent_s = statistics.median(a["submit_to_done_s"] for a in agents)
    a = agents[len(agents) // 2]
    n = args.trials
    ratio = (n / agent_s) / (n / raw_s)
    rows = [
        ("raw sbatch --array + squeue loop", f"{raw_s:.2f}", f"{n / raw_s:.1f}", ""),
        ("hpc-agent, submit -> every outcome", f"{agent_s:.2f}", f"{n / agent_s:.1f}", f"ratio {ratio:.2f}"),
        ("hpc-agent, whole run (plan..analyze)", f"{a['total_s']:.2f}", f"{n / a['total_s']:.1f}", ""),
    ]
    print(f"\n{n} trivial tasks on the local SLURM cluster ({os.cpu_count()} cores), median of {args.repeat}")
    print(f"{'':38} {'seconds':>8} {'tasks/s':>8}")
    for name, secs, tps, note in rows:
        print(f"{name:38} {secs:>8} {tps:>8}  {note}")
    print(
        f"\nhpc-agent bookkeeping (ms per trial): plan {1000 * a['plan_s'] / n:.2f}, "
        f"prepare {1000 * a['prepare_s'] / n:.2f}, submit {1000 * a['submit_s'] / n:.2f}, "
        f"gather+analyze {1000 * a['gather_analyze_s'] / n:.2f}"
    )
    print(
        "each run, seconds: raw "
        + " ".join(f"{r['total_s']:.1f}" for r in raws)
        + " | hpc-agent "
        + " ".join(f"{x['submit_to_done_s']:.1f}" for x in agents)
        + "  (the local scheduler starts tasks in waves: expect +-30 % between runs)"
    )
    print(f"arrays submitted: {len(a['arrays'])} ({', '.join(a['arrays'])}); outcomes: {a['states']}")
    print(f"goal: throughput ratio >= 0.8 -> {'met' if ratio >= 0.8 else 'NOT met'}")
    record = {
        "bench": "slurm",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "trials": n,
        "repeat": args.repeat,
        "raw_poll_s": args.raw_poll_s,
        "raw": raws,
        "hpc_agent": agents,
        "throughput_ratio": ratio,
        "goal_met": ratio >= 0.8,
    }
    path = OUT / f"bench_slurm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

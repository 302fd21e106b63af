"""Benchmarks of the spine (issue 2), each a ratio against a baseline measured in the same run.

    python bench/bench_spine.py quickstart        # wall time of the quickstart campaign (3 x 4)
    python bench/bench_spine.py noop --trials 200 # bookkeeping per trial vs plain subprocess
    python bench/bench_spine.py memory --trials 1000  # the driver's peak memory
    python bench/bench_spine.py all

Results are printed and written to bench/out/spine-<what>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
NOOP = ["sh", "-c", 'echo \'{"step": 0, "loss": 1.0}\' >> "$HPC_AGENT_METRICS"']


def hpc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run(
        [sys.executable, "-m", "hpc_agent", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def noop_campaign(root: Path, trials: int, planner: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "campaign.toml").write_text(
        textwrap.dedent(
            f"""
            [campaign]
            name = "noop"
            metric = "loss"
            generations = 1
            batch_size = {trials}

            [experiment]
            command = {json.dumps(NOOP)}
            time_budget_s = 60

            [space]
            x = {{ type = "float", low = 0.0, high = 1.0 }}
            k = {{ type = "int", low = 0, high = 1000000 }}

            [planner]
            kind = "{planner}"
            """
        )
    )
    return root


def phases(results: Path) -> dict[str, float]:
    """Seconds spent in each phase of generation 0, from the journal's timestamps."""
    events = [json.loads(line) for line in (results / "journal.jsonl").read_text().splitlines()]
    t = {}
    for e in events:
        t.setdefault(e["event"], e["t"])
        if e["event"] == "trial_ended":
            t["last_trial_ended"] = e["t"]
    return {
        "plan_s": t["planned"] - t["planning"],
        "prepare_s": t["submitting"] - t["planned"],
        "submit_s": t["submitted"] - t["submitting"],
        "wait_s": t["last_trial_ended"] - t["submitted"],
        "gather_analyze_s": t["generation_done"] - t["last_trial_ended"],
        "total_s": t["run_ended"] - t["run"],
    }


def bench_noop(trials: int, parallelism: int, planner: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        camp = noop_campaign(tmp_path / "camp", trials, planner)
        # baseline: the same commands, same parallelism, plain subprocess
        env = dict(os.environ, HPC_AGENT_METRICS=str(tmp_path / "baseline.jsonl"))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(parallelism) as pool:
            list(pool.map(lambda _: subprocess.run(NOOP, env=env, check=True), range(trials)))
        baseline_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = hpc(
            ["run", str(camp), "--executor", "local", "--parallelism", str(parallelism), "-q"], tmp_path
        )
        wall_s = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        ph = phases(tmp_path / "results" / "noop")
    bookkeeping = ph["plan_s"] + ph["prepare_s"] + ph["submit_s"] + ph["gather_analyze_s"]
    return {
        "trials": trials,
        "parallelism": parallelism,
        "planner": planner,
        "plain_subprocess_s": round(baseline_s, 3),
        "hpc_agent_wall_s": round(wall_s, 3),
        "ratio_wall_vs_plain": round(wall_s / baseline_s, 2),
        "phases_s": {k: round(v, 3) for k, v in ph.items()},
        "bookkeeping_ms_per_trial": round(1000 * bookkeeping / trials, 2),
        "plain_ms_per_trial": round(1000 * baseline_s / trials, 2),
    }


def bench_memory(trials: int, parallelism: int) -> dict[str, object]:
    """Peak RSS (VmHWM) of the driver process while it drives one generation of N trials."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        camp = noop_campaign(tmp_path / "camp", trials, "tpe")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        cmd = [
            sys.executable,
            "-m",
            "hpc_agent",
            "run",
            str(camp),
            "--executor",
            "local",
            "--parallelism",
            str(parallelism),
            "-q",
        ]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        peak_kb = 0
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.05)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr.read() if proc.stderr else "driver failed")
        wall = time.perf_counter() - t0
        # baseline in the same run: a bare interpreter that imports the same libraries
        base = subprocess.run(
            [
                sys.executable,
                "-c",
                "import resource, polars, optuna, submitit, rich, click; "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        ph = phases(tmp_path / "results" / "noop")
    imports_mb = int(base.stdout.strip()) / 1024
    return {
        "trials": trials,
        "driver_peak_rss_mb": round(peak_kb / 1024, 1),
        "imports_only_rss_mb": round(imports_mb, 1),
        "ratio_peak_vs_imports": round(peak_kb / 1024 / imports_mb, 2),
        "limit_mb": 300,
        "wall_s": round(wall, 1),
        "phases_s": {k: round(v, 3) for k, v in ph.items()},
    }


def bench_quickstart() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        out = hpc(["run", str(ROOT / "examples" / "quickstart"), "--executor", "local", "-q"], tmp_path)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        results = tmp_path / "results" / "quickstart"
        durations = [
            json.loads(p.read_text())["duration_s"] for p in results.glob("gen-*/trials/*/status.json")
        ]
        best = out.stdout.strip().splitlines()[-1]
    cores = len(os.sched_getaffinity(0))
    ideal = sum(durations) / cores
    return {
        "trials": len(durations),
        "cores": cores,
        "wall_s": round(wall, 1),
        "sum_trial_s": round(sum(durations), 1),
        "ideal_s": round(ideal, 1),
        "ratio_wall_vs_ideal": round(wall / ideal, 2),
        "best": best,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["quickstart", "noop", "memory", "all"])
    ap.add_argument("--trials", type=int, default=0)
    ap.add_argument("--parallelism", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--planner", default="tpe", choices=["tpe", "random"])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    todo = ["quickstart", "noop", "memory"] if args.what == "all" else [args.what]
    for what in todo:
        if what == "quickstart":
            result = bench_quickstart()
        elif what == "noop":
            result = bench_noop(args.trials or 200, args.parallelism, args.planner)
        else:
            result = bench_memory(args.trials or 1000, args.parallelism)
        result["command"] = " ".join(shlex.quote(a) for a in sys.argv)
        print(f"== {what}")
        print(json.dumps(result, indent=2))
        (OUT / f"spine-{what}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

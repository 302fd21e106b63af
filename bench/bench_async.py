"""The async schedule (issue 11): slot utilization and wall time, sync vs async, side by side.

    python bench/bench_async.py utilization --executor local   # 48 trials of 5-40 s, 8 slots
    python bench/bench_async.py utilization --executor slurm   # the same on the local SLURM
    python bench/bench_async.py slow-planner                   # the LLM planner, answering after 20 s
    python bench/bench_async.py quality                        # async TPE's best vs sync TPE's

**Utilization** = the sum of the trials' durations / (slots x the campaign's wall time). The wall
time is the whole ``hpc-agent run`` process, start-up and every generation's planning included,
from its start to its exit. Each campaign runs 48 search trials (6 x 8, no baseline, no controls)
on 8 slots; trial *k* (in the order trials start) sleeps the *k*-th of 48 durations drawn once,
uniformly in 5-40 s (seed 0): every run, sync or async, does the same work. The variants
alternate within each repetition; the figures are medians over the repetitions. A second
utilization, over the span from the first trial's start to the last one's end, says what the
start-up and the first plan cost.

**Slow planner**: the same campaign planned by the LLM planner against the scripted
OpenAI-compatible server (hpc_agent.testing.fake_llm, real HTTP) answering every request after
20 s with valid proposals.

**Quality**: async and sync TPE on the same tasks (Branin, Hartmann6 and the HPOBench tables of
bench_search.py when installed), 48 trials, 8 slots, through the real ``Campaign`` loop with the
scripted executor (trials last 0.05-0.45 s, by their parameters): the regret of the champion
after 48 trials, mean and standard error over the seeds, and the paired difference.

Results are printed and written to bench/out/async-<what>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
SLOTS = 8
TRIALS = 48

TRAIN = textwrap.dedent(
    """
    import json, os, time
    from pathlib import Path
    import hpc_agent

    p = hpc_agent.params()
    claims = Path(os.environ["BENCH_CLAIMS"])
    durations = json.loads((claims / "durations.json").read_text())
    d = durations[-1]
    for i, value in enumerate(durations):  # the k-th trial to start sleeps the k-th duration
        try:
            os.mkdir(claims / f"claim-{i:03d}")
        except FileExistsError:
            continue
        d = value
        break
    time.sleep(d)
    loss = (p["x"] - 0.3) ** 2 + (p["y"] + 0.2) ** 2
    hpc_agent.log(step=0, loss=loss, slept_s=d)
    """
)


def durations(scale: float) -> list[float]:
    rng = random.Random(0)
    return [round(rng.uniform(5, 40) * scale, 3) for _ in range(TRIALS)]


def write_campaign(root: Path, schedule: str, executor: str, scale: float, planner: str = "tpe") -> Path:
    root.mkdir(parents=True)
    claims = root / "claims"
    claims.mkdir()
    (claims / "durations.json").write_text(json.dumps(durations(scale)))
    (root / "train.py").write_text(TRAIN)
    (root / "campaign.toml").write_text(
        textwrap.dedent(
            f"""
            [campaign]
            name = "bench-{schedule}"
            metric = "loss"
            generations = {TRIALS // SLOTS}
            batch_size = {SLOTS}
            baseline = false
            schedule = "{schedule}"
            max_in_flight = {SLOTS}

            [experiment]
            command = "{sys.executable} train.py"
            time_budget_s = {math.ceil(60 * scale) + 30}
            env = {{ BENCH_CLAIMS = "{claims}" }}

            [space]
            x = {{ type = "float", low = -1.0, high = 1.0 }}
            y = {{ type = "float", low = -1.0, high = 1.0 }}

            [planner]
            kind = "{planner}"
            max_tokens = 2000

            [rigor]
            control = false

            [executor]
            kind = "{executor}"
            parallelism = {SLOTS}
            """
        )
    )
    return root


def measure(camp: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One ``hpc-agent run`` as a user types it; its wall time and the trials' times."""
    from hpc_agent.store.journal import Journal

    results = camp / "results"
    cmd = [sys.executable, "-m", "hpc_agent", "run", str(camp), "--results", str(results), "--quiet"]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.time() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    events = list(Journal(results / "journal.jsonl").iter())
    ended = [e for e in events if e["event"] == "trial_ended"]
    busy = sum(float(e.get("duration_s") or 0.0) for e in ended)
    first = min(e["t"] for e in events if e["event"] == "submitting")
    last = max(e["t"] for e in ended)
    runs = [json.loads(line) for m in results.glob("gen-*/trials/*/metrics.jsonl") for line in m.open()]
    gens = {e["generation"] for e in events if e["event"] == "planned"}
    lags = lags_of(results, events)
    plans = [e for e in events if e["event"] == "planned"]
    return {
        "wall_s": round(wall, 2),
        "busy_s": round(busy, 2),
        "trials": len(ended),
        "generations": len(gens),
        "utilization": round(busy / (SLOTS * wall), 4),
        "utilization_trial_span": round(busy / (SLOTS * (last - first)), 4),  # first submit -> last end
        "best_loss": min(r["loss"] for r in runs),
        **lags,
        "planner_notes": [p.get("note", "") for p in plans][:3],
        # submissions narrowed to the free slots (the rest queued), and widenings
        "narrowed": sum(1 for e in events if e["event"] == "submitting" and e.get("width")),
        "widened": sum(1 for e in events if e["event"] == "widened"),
    }


def lags_of(results: Path, events: list[dict[str, Any]]) -> dict[str, float]:
    """Where a slot's idle time goes, medians in seconds: a trial's end to the driver noticing
    it (``detect``), the planner (``plan``), and the submission to the trial's runner starting
    (``start``: lanes or sbatch, the job's start-up)."""
    status = {}
    for f in results.glob("gen-*/trials/*/status.json"):
        s = json.loads(f.read_text())
        status[s["trial"]] = s
    submitted = {t: e["t"] for e in events if e["event"] == "submitting" for t in e["trials"]}
    detect = [e["t"] - status[e["trial"]]["updated_at"] for e in events if e["event"] == "trial_ended"]
    start = [s["started_at"] - submitted[t] for t, s in status.items() if t in submitted]
    planning: dict[int, float] = {}
    plan = []
    for e in events:
        if e["event"] == "planning":
            planning[e["generation"]] = e["t"]
        elif e["event"] == "planned" and e["generation"] in planning:
            plan.append(e["t"] - planning[e["generation"]])
    return {
        "lag_detect_s": round(statistics.median(detect), 3),
        "lag_plan_s": round(statistics.median(plan), 3),
        "lag_start_s": round(statistics.median(start), 3),
    }


def utilization(args: argparse.Namespace) -> dict[str, Any]:
    variants = ("sync", "async")
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-async-", dir=args.tmp) as tmp:
        for rep in range(args.reps):
            order = variants if rep % 2 == 0 else variants[::-1]  # alternate which goes first
            for v in order:
                camp = write_campaign(Path(tmp) / f"{v}-{rep}", v, args.executor, args.scale)
                r = measure(camp)
                runs[v].append(r)
                print(f"rep {rep} {v:5s}: {json.dumps(r)}", flush=True)
                shutil.rmtree(camp, ignore_errors=True)
    return summary(runs, args)


def summary(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"executor": args.executor, "slots": SLOTS, "trials": TRIALS, "scale": args.scale}
    for v, rs in runs.items():
        out[v] = {
            k: statistics.median(r[k] for r in rs)
            for k in ("wall_s", "utilization", "utilization_trial_span", "generations", "narrowed", "widened")
        }
    if "sync" in runs and "async" in runs:
        ratios = [a["wall_s"] / s["wall_s"] for a, s in zip(runs["async"], runs["sync"])]
        out["wall_ratio_async_over_sync"] = round(statistics.median(ratios), 3)
    out["runs"] = runs
    return out


def slow_planner(args: argparse.Namespace) -> dict[str, Any]:
    """The LLM planner against the scripted server answering after ``--delay`` seconds."""
    from hpc_agent.testing import FakeLLM

    def answer(body: Mapping[str, Any]) -> dict[str, Any]:
        text = "".join(str(m.get("content", "")) for m in body.get("messages", []))
        found = re.search(r"[Pp]ropose exactly (\d+)", text)
        n = int(found.group(1)) if found else 0
        rng = random.Random(len(text))
        proposals = [
            {
                "hypothesis": "a point near the optimum the analyses point to",
                "params": {"x": round(rng.uniform(-1, 1), 4), "y": round(rng.uniform(-1, 1), 4)},
            }
            for _ in range(n)
        ]
        return {"json": {"analysis": "The loss falls toward x=0.3, y=-0.2.", "proposals": proposals},
                "delay_s": args.delay}  # fmt: skip

    runs: dict[str, list[dict[str, Any]]] = {"sync": [], "async": []}
    with tempfile.TemporaryDirectory(prefix="bench-slow-", dir=args.tmp) as tmp:
        for rep in range(args.reps):
            order = ("sync", "async") if rep % 2 == 0 else ("async", "sync")
            for v in order:
                with FakeLLM([answer], loop=True) as fake:
                    camp = write_campaign(Path(tmp) / f"{v}-{rep}", v, args.executor, args.scale, "llm")
                    env = {
                        "OPENAI_BASE_URL": fake.base_url,
                        "OPENAI_API_KEY": "x",
                        "HPC_AGENT_MODEL": "fake-model",
                    }
                    r = measure(camp, env)
                    r["llm_requests"] = len(fake.chat_requests)
                runs[v].append(r)
                print(f"rep {rep} {v:5s}: {json.dumps(r)}", flush=True)
                shutil.rmtree(camp, ignore_errors=True)
    out = summary(runs, args)
    out["delay_s"] = args.delay
    for v in runs:
        out[v]["llm_requests"] = statistics.median(r["llm_requests"] for r in runs[v])
    return out


def quality(args: argparse.Namespace) -> dict[str, Any]:
    """Async vs sync TPE through the real loop on the scripted executor: regret after 48 trials."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_search as bs

    from hpc_agent.config.spec import parse_spec
    from hpc_agent.loop.campaign import Campaign
    from hpc_agent.planners import make_planner
    from hpc_agent.store.results import load_state
    from hpc_agent.testing import ScriptedExecutor

    tasks = ["branin", "hartmann6"] + [f"hpobench-{t}" for t in bs.HPOBENCH if args.hpobench]
    table: dict[str, dict[str, list[float]]] = {}
    for name in tasks:
        task = bs.make_task(name)
        table[name] = {"sync": [], "async": []}
        for seed in range(args.seeds):
            for schedule in ("sync", "async") if seed % 2 == 0 else ("async", "sync"):
                with tempfile.TemporaryDirectory(prefix="bench-quality-", dir=args.tmp) as tmp:
                    data = {
                        "campaign": {"name": "q", "metric": "y", "mode": task.mode, "generations": 6,
                                     "batch_size": 8, "seed": seed, "schedule": schedule,
                                     "baseline": False},
                        "experiment": {"command": ["true"], "time_budget_s": 60},
                        "space": task.space(),
                        "rigor": {"control": False},
                    }  # fmt: skip
                    spec = parse_spec(data, Path(tmp))
                    ex = ScriptedExecutor(
                        objective=lambda p, s=seed, t=task: t.observe(p, s),
                        metric="y",
                        duration=lambda p: (
                            0.05
                            + 0.4 * (zlib.crc32(json.dumps(dict(p), sort_keys=True).encode()) % 1000) / 1000
                        ),
                    )
                    Campaign(spec, Path(tmp) / "results", ex, make_planner("tpe", spec)).run()
                    st = load_state(Path(tmp) / "results")
                    champ = st.champion(task.mode)
                    table[name][schedule].append(task.regret(champ.params) if champ else 1.0)
            print(name, seed, {k: round(v[-1], 4) for k, v in table[name].items()}, flush=True)
    out: dict[str, Any] = {"trials": TRIALS, "slots": SLOTS, "seeds": args.seeds, "tasks": {}}
    for name, r in table.items():
        diffs = [a - s for a, s in zip(r["async"], r["sync"])]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
        out["tasks"][name] = {
            "sync_mean_regret": statistics.mean(r["sync"]),
            "async_mean_regret": statistics.mean(r["async"]),
            "paired_diff": statistics.mean(diffs),
            "paired_diff_se": se,
            "within_2se": abs(statistics.mean(diffs)) <= 2 * se,
            "runs": r,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("utilization", "slow-planner", "quality"))
    ap.add_argument("--executor", choices=("local", "slurm"), default="local")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="times the 5-40 s durations")
    ap.add_argument("--delay", type=float, default=20.0, help="slow-planner: the server's answer delay")
    ap.add_argument("--seeds", type=int, default=10, help="quality: seeds per task")
    ap.add_argument("--hpobench", action="store_true", help="quality: the HPOBench tables too")
    ap.add_argument("--tmp", default=None, help="where the campaigns run (SLURM: a folder every node sees)")
    args = ap.parse_args()
    result = {"utilization": utilization, "slow-planner": slow_planner, "quality": quality}[args.what](args)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"async-{args.what}{'-' + args.executor if args.what != 'quality' else ''}.json"
    path.write_text(json.dumps(result, indent=2))
    brief = {k: v for k, v in result.items() if k not in ("runs",)}
    if "tasks" in brief:
        brief = {k: {kk: vv for kk, vv in v.items() if kk != "runs"} for k, v in result["tasks"].items()}
    print(json.dumps(brief, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()

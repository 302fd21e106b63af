"""False keeps on pure noise, and the cost of confirmed keeps on a real signal (issue 20).

    python bench/bench_false_keeps.py                      # both parts, before and after
    python bench/bench_false_keeps.py --part noise --campaigns 5   # a quick look
    python bench/bench_false_keeps.py --part noise --generations 71 --schedules sync \
        --versions after --out false_keeps_700.json                # 700 configurations

**Pure noise.** Every configuration scores ``1 + N(0, sigma)`` (sigma = 0.05), its parameters
ignored: any keep after the reference (the first configuration, kept without a comparison) is
false. Each campaign runs 11 generations of 10 (sync) or the same trial budget with the async
schedule, one seed, the random planner (parameters are ignored: the planner cannot matter), the
default ``[rigor]``; the count is the keeps among its first 100 configurations of the search.
20 campaigns (planner and noise seeds 0..19) per schedule.

**A real signal.** ``x`` in [0, 1]; configurations with ``x > 0.8`` are better by 5 sigma
(``1 - 0.25 + N(0, 0.05)``), the rest pure noise as above. The cost: how many trials of the
search (controls, noise runs and replicates included) had ended when the first truly better
configuration was kept; sync, 12 generations of 8, TPE, 20 campaigns.

*Before* is the rule of commit ``--before`` (default 70efac8: issue 10's rule, which keeps any
improvement before the noise is estimated and any one past 2 SE after), run from ``git archive``
of that commit in a subprocess; *after* is this tree. Both run in-process campaigns on the
scripted executor (:mod:`hpc_agent.testing.executor`: trials "run" for 5-150 ms, so the async
schedule overlaps them and plans for the slots that free). The two variants alternate campaign
by campaign. Written to bench/out/false_keeps.json; the tables in docs/benchmarks.md and
docs/rigor.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
SIGMA = 0.05
GAIN = 5 * SIGMA  # the real signal: x > 0.8 is better by 5 sigma
CONFIGS = 100  # pure noise: false keeps among a campaign's first 100 configurations
SCALE = (25, 50, 100, 200, 400, 700)  # and among its first 25, 50, ...: how the count grows


def campaign_toml(name: str, seed: int, schedule: str, generations: int, batch: int, planner: str) -> str:
    return (
        f'[campaign]\nname = "{name}"\nmetric = "loss"\nmode = "min"\ngenerations = {generations}\n'
        f'batch_size = {batch}\nseed = {seed}\nschedule = "{schedule}"\n'
        f'[experiment]\ncommand = "true"\ntime_budget_s = 60\n'
        f'[planner]\nkind = "{planner}"\n'
        '[space]\nx = { type = "float", low = 0.0, high = 1.0 }\n'
    )


def run_campaign(part: str, seed: int, schedule: str, workdir: Path, generations: int = 11) -> dict[str, Any]:
    """One campaign in this process (the hpc_agent on sys.path: before or after)."""
    from hpc_agent.config.spec import load_spec
    from hpc_agent.loop.campaign import Campaign
    from hpc_agent.planners import make_planner
    from hpc_agent.store.journal import Journal
    from hpc_agent.testing import ScriptedExecutor

    rng = random.Random(seed)
    if part == "noise":
        batch, planner = 10, "random"

        def objective(params: Any) -> float:
            return 1.0 + rng.gauss(0, SIGMA)

    else:
        generations, batch, planner = 12, 8, "tpe"

        def objective(params: Any) -> float:
            return 1.0 - (GAIN if float(params["x"]) > 0.8 else 0.0) + rng.gauss(0, SIGMA)

    camp = workdir / f"{part}-{schedule}-{seed}"
    camp.mkdir(parents=True)
    (camp / "campaign.toml").write_text(campaign_toml("bench", seed, schedule, generations, batch, planner))
    spec = load_spec(camp)
    durations = random.Random(1000 + seed)
    executor = ScriptedExecutor(objective=objective, duration=lambda p: durations.uniform(0.005, 0.15))
    t0 = time.perf_counter()
    Campaign(spec, camp / "results", executor, make_planner(planner, spec)).run()
    wall = time.perf_counter() - t0
    return summarize(part, list(Journal(camp / "results" / "journal.jsonl").read()), wall)


def summarize(part: str, events: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Keeps, false keeps (pure noise) or the trials ended before the first true keep."""
    planned: dict[str, dict[str, Any]] = {}  # config -> its first trial
    order: list[str] = []
    ended = 0
    first_true_keep: int | None = None
    keeps: list[str] = []
    candidates = unconfirmed = 0
    for e in events:
        if e["event"] == "planned":
            for t in e["trials"]:
                if t.get("purpose", "") == "" and t["config"] not in planned:
                    planned[t["config"]] = t
                    order.append(t["config"])
        elif e["event"] == "trial_ended":
            ended += 1
        elif e["event"] == "verdict" and e["verdict"] == "candidate":
            candidates += 1
        elif e["event"] == "verdict" and e["reason"].startswith("not confirmed"):
            unconfirmed += 1
        elif e["event"] == "verdict" and e["verdict"] == "keep":
            keeps.append(e["config"])
            better = float(planned[e["config"]]["params"]["x"]) > 0.8
            if part == "signal" and better and first_true_keep is None:
                first_true_keep = ended
    first = set(order[:CONFIGS])
    counted = [k for k in keeps if k in first]
    by_n = {n: max(0, sum(1 for k in keeps if k in set(order[:n])) - 1) for n in SCALE if n <= len(order)}
    return {
        "false_keeps_by_n": by_n if part == "noise" else None,
        "configs": len(order),
        "trials": ended,
        "keeps": len(keeps),
        "candidates": candidates,  # the confirmed rule's: passed on the screening run
        "not_confirmed": unconfirmed,  # and discarded by their replicate
        "false_keeps": max(0, len(counted) - 1) if part == "noise" else None,
        "trials_to_true_keep": first_true_keep,
        "wall_s": round(wall_s, 2),
    }


def worker(part: str, seeds: list[int], schedules: list[str], generations: int) -> None:
    """Run these campaigns with the hpc_agent on sys.path; one JSON line each on stdout."""
    with tempfile.TemporaryDirectory(prefix="bench-false-keeps-") as tmp:
        for seed in seeds:
            for schedule in schedules:
                row = run_campaign(part, seed, schedule, Path(tmp), generations)
                print(json.dumps({"part": part, "seed": seed, "schedule": schedule, **row}), flush=True)


def run_version(
    code: Path, part: str, seed: int, schedules: list[str], generations: int = 11
) -> list[dict[str, Any]]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--part", part, "--seeds", str(seed),
           "--schedules", ",".join(schedules), "--generations", str(generations)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={code}) failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def old_tree(ref: str, into: Path) -> Path:
    """The package as of ``ref`` (git archive: the repository is only read)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "hpc_agent"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def table(rows: list[dict[str, Any]], part: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for version in ("before", "after"):
        for schedule in ("sync", "async"):
            mine = [r for r in rows if r["version"] == version and r["schedule"] == schedule]
            if not mine:
                continue
            key = f"{version}/{schedule}"
            if part == "noise":
                fk = [r["false_keeps"] for r in mine]
                out[key] = {
                    "campaigns": len(mine),
                    "clean": sum(1 for v in fk if v == 0),
                    "false_keeps_total": sum(fk),
                    "per_campaign": fk,
                    "false_keeps_by_n": {
                        str(n): sum(r["false_keeps_by_n"][str(n)] for r in mine)
                        for n in SCALE
                        if all(str(n) in r["false_keeps_by_n"] for r in mine)
                    },
                    "candidates": sum(r.get("candidates", 0) for r in mine),
                    "not_confirmed": sum(r.get("not_confirmed", 0) for r in mine),
                    "configs_median": statistics.median(r["configs"] for r in mine),
                    "trials_median": statistics.median(r["trials"] for r in mine),
                }
            else:
                found = [r["trials_to_true_keep"] for r in mine if r["trials_to_true_keep"] is not None]
                out[key] = {
                    "campaigns": len(mine),
                    "found_and_kept": len(found),
                    "trials_to_true_keep_median": statistics.median(found) if found else None,
                    "per_campaign": [r["trials_to_true_keep"] for r in mine],
                }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["noise", "signal", "both"], default="both")
    ap.add_argument("--campaigns", type=int, default=20)
    ap.add_argument("--before", default="70efac8", help="the commit whose rule is 'before'")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seeds", default="", help=argparse.SUPPRESS)
    ap.add_argument("--schedules", default="sync,async", help="the noise part's schedules")
    ap.add_argument("--generations", type=int, default=11, help="the noise part's generations of 10")
    ap.add_argument("--versions", default="before,after", help="which rules to run")
    ap.add_argument("--out", default="false_keeps.json", help="its file under bench/out")
    args = ap.parse_args()
    if args.worker:
        worker(
            args.part, [int(s) for s in args.seeds.split(",")], args.schedules.split(","), args.generations
        )
        return
    parts = ["noise", "signal"] if args.part == "both" else [args.part]
    result: dict[str, Any] = {"before": args.before, "sigma": SIGMA}
    with tempfile.TemporaryDirectory(prefix="bench-old-") as tmp:
        code = {"before": old_tree(args.before, Path(tmp)), "after": ROOT}
        for part in parts:
            schedules = args.schedules.split(",") if part == "noise" else ["sync"]
            rows: list[dict[str, Any]] = []
            t0 = time.time()
            for seed in range(args.campaigns):
                order = ("before", "after") if seed % 2 == 0 else ("after", "before")  # alternated
                for version in (v for v in order if v in args.versions.split(",")):
                    for r in run_version(code[version], part, seed, schedules, args.generations):
                        rows.append({"version": version, **r})
                print(f"{part}: campaign {seed + 1}/{args.campaigns} ({time.time() - t0:.0f} s)", flush=True)
            result[part] = {"table": table(rows, part), "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / args.out
    earlier = json.loads(path.read_text()) if path.exists() else {}  # a part run alone keeps the other
    path.write_text(json.dumps({**earlier, **result}, indent=2))
    print(json.dumps({p: result[p]["table"] for p in parts}, indent=2))


if __name__ == "__main__":
    main()

"""The promotion rule on a real campaign (issue 10): how many "improvements" a plain best-so-far
would have kept that the rule refused as noise.

    python bench/bench_rigor.py                         # nanolm, TPE, 6 generations x 4, local
    python bench/bench_rigor.py --results results/x     # the same count on a finished campaign

It runs ``hpc-agent run examples/nanolm --planner tpe`` (real torch training, 60 s a trial; the
champion's control trials measure the noise), then replays the journal's verdicts in the order
they were given. A *plain best-so-far* keeps every configuration whose mean beats the best mean
before it; the rule (``[rigor]``, default ``se`` with k = 2) keeps one only when it beats the
champion by more than k standard errors. Printed and written to bench/out/rigor.json: the
verdicts, the promotions each keeps, the ones the rule refused (with their margins against the
noise), and the two champions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def run_nanolm(workdir: Path, generations: int, batch: int, parallelism: int) -> Path:
    camp = workdir / "nanolm"
    shutil.copytree(
        ROOT / "examples" / "nanolm", camp, ignore=shutil.ignore_patterns("results", "checkpoint")
    )
    results = workdir / "results"
    cmd = [sys.executable, "-m", "hpc_agent", "run", str(camp), "--results", str(results), "--planner", "tpe",
           "--executor", "local", "--parallelism", str(parallelism), "--generations", str(generations),
           "--batch-size", str(batch), "-q"]  # fmt: skip
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    print(f"campaign took {time.time() - t0:.0f} s", flush=True)
    return results


def count(results: Path) -> dict[str, Any]:
    from hpc_agent.store.results import load_state

    state = load_state(results)
    mode = state.spec.get("campaign", {}).get("mode", "min")
    sign = 1.0 if mode == "min" else -1.0
    configs = {c.config_id: c for c in state.configs()}
    verdicts = [
        json.loads(line)
        for line in (results / "journal.jsonl").read_text().splitlines()
        if '"event":"verdict"' in line
    ]
    best: float | None = None
    best_id = None
    plain_keeps, refused, rows = [], [], []
    for v in verdicts:
        c = configs[v["config"]]
        y = c.objective
        plain = y is not None and (best is None or sign * y < sign * best)
        if plain:
            plain_keeps.append(c.config_id)
            best, best_id = y, c.config_id
        if plain and v["verdict"] != "keep":
            refused.append(
                {
                    "config": c.config_id,
                    "objective": y,
                    "improvement": v.get("improvement"),
                    "se": v.get("se"),
                    "noise_sigma": v.get("noise_sigma"),
                    "reason": v["reason"],
                }
            )
        rows.append({"config": c.config_id, "objective": y, "runs": c.n_completed, "verdict": v["verdict"],
                     "plain_keep": plain, "reason": v["reason"]})  # fmt: skip
    champion = state.champion(mode)
    champ = None if champion is None else {"config": champion.config_id, "objective": champion.objective}
    return {
        "results": str(results),
        "configurations_judged": len(verdicts),
        "rule_keeps": [v["config"] for v in verdicts if v["verdict"] == "keep"],
        "plain_best_so_far_keeps": plain_keeps,
        "refused_by_the_rule": refused,
        "champion": champ,
        "plain_champion": {"config": best_id, "objective": best},
        "trials": len(state.trials),
        "controls": sum(1 for t in state.trials.values() if t.purpose == "control"),
        "verdicts": rows,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, help="count on this finished campaign instead of running one")
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--parallelism", type=int, default=2)
    args = ap.parse_args()
    if args.results:
        out = count(args.results)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-rigor-") as tmp:
            out = count(run_nanolm(Path(tmp), args.generations, args.batch_size, args.parallelism))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rigor.json").write_text(json.dumps(out, indent=2))
    brief = {k: v for k, v in out.items() if k != "verdicts"}
    print(json.dumps(brief, indent=2))
    plain, rule, refused = out["plain_best_so_far_keeps"], out["rule_keeps"], out["refused_by_the_rule"]
    print(f"{len(plain)} promotions by a plain best-so-far, {len(rule)} by the rule; refused: {len(refused)}")


if __name__ == "__main__":
    main()

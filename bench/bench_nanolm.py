"""nanolm's figures (issue 10): val_bpb after 60 s of training at the default configuration
over several seeds (the noise floor a promotion rule sees), and at other learning rates (the
room a campaign has).

    python bench/bench_nanolm.py                               # 3 seeds x (default lr, 3e-3, 3e-2)
    python bench/bench_nanolm.py --seeds 5 --lrs 1e-2 3e-3 3e-2 --train-seconds 60

Each run is examples/nanolm/train.py exactly as a trial runs it (its own process,
OMP_NUM_THREADS=1, the parameters through HPC_AGENT_PARAMS, its metrics through
HPC_AGENT_METRICS, then the fixed evaluator `prepare.py --evaluate` on the model it saved),
one at a time, the learning rates alternated within each seed so that a
change of the machine's load touches all of them alike. The budget is wall-clock, so the load
of a shared machine moves the number of steps a run gets: each run's steps and the load
average before it are recorded with its result. Printed, and written to bench/out/nanolm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NANOLM = ROOT / "examples" / "nanolm"
OUT = ROOT / "bench" / "out"


def run_once(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One trial of nanolm with ``params``: its last metrics line, steps, wall time and load."""
    workdir.mkdir(parents=True)
    (workdir / "params.json").write_text(json.dumps(params))
    env = dict(
        os.environ,
        HPC_AGENT_PARAMS=str(workdir / "params.json"),
        HPC_AGENT_METRICS=str(workdir / "metrics.jsonl"),
        HPC_AGENT_CHECKPOINT_DIR=str(workdir / "checkpoint"),
        HPC_AGENT_TRIAL_DIR=str(workdir),
        OMP_NUM_THREADS="1",
    )
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(NANOLM / "train.py")], cwd=workdir, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"train.py failed ({out.returncode}) with {params}:\n{out.stderr[-2000:]}")
    # then the fixed evaluator, as the campaign runs it ([experiment] evaluate)
    env["HPC_AGENT_METRICS"] = str(workdir / "evaluation.jsonl")
    ev = subprocess.run(
        [sys.executable, "prepare.py", "--evaluate"], cwd=NANOLM, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if ev.returncode != 0:
        raise SystemExit(
            f"prepare.py --evaluate failed ({ev.returncode}) with {params}:\n{ev.stderr[-2000:]}"
        )
    last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    scores = json.loads((workdir / "evaluation.jsonl").read_text().splitlines()[-1])
    run = json.loads((workdir / "run.json").read_text())
    return {
        **params,
        "val_bpb": scores["val_bpb"],
        "test_bpb": scores["test_bpb"],
        "steps": last["step"],
        "train_s": last["train_s"],
        "wall_s": round(wall, 1),
        "load_before": round(load, 2),
        "data_sha256": run["data"]["sha256"],
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--lrs", type=float, nargs="+", default=[1e-2, 3e-3, 3e-2], help="the first is the default"
    )
    ap.add_argument("--train-seconds", type=float, default=60.0)
    args = ap.parse_args()

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-nanolm-") as tmp:
        for seed in range(args.seeds):
            for lr in args.lrs:
                params = {"lr": lr, "seed": seed, "train_seconds": args.train_seconds}
                r = run_once(params, Path(tmp) / f"lr{lr:g}-seed{seed}")
                runs.append(r)
                print(
                    f"lr {lr:g} seed {seed}: val_bpb {r['val_bpb']:.4f} test_bpb {r['test_bpb']:.4f} "
                    f"({r['steps']} steps, load {r['load_before']})",
                    flush=True,
                )
    by_lr = {
        f"{lr:g}": {
            "val_bpb": spread([r["val_bpb"] for r in runs if r["lr"] == lr]),
            "test_bpb": spread([r["test_bpb"] for r in runs if r["lr"] == lr]),
            "steps": spread([r["steps"] for r in runs if r["lr"] == lr]),
        }
        for lr in args.lrs
    }
    result = {
        "train_seconds": args.train_seconds,
        "default_lr": args.lrs[0],
        "cpus": os.cpu_count(),
        "by_lr": by_lr,
        "runs": runs,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "nanolm.json").write_text(json.dumps(result, indent=2))
    print(f"\nval_bpb after {args.train_seconds:g} s of training, {args.seeds} seeds each:")
    for lr, s in by_lr.items():
        v, st = s["val_bpb"], s["steps"]
        print(
            f"  lr {lr}: median {v['median']:.3f}  min {v['min']:.3f}  max {v['max']:.3f}  std {v['std']:.3f}"
            f"  (steps {st['min']:.0f}-{st['max']:.0f})"
        )
    print(f"written to {OUT / 'nanolm.json'}")


if __name__ == "__main__":
    main()

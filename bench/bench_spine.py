"""Benchmarks of the loop (issues 2 and 9): each a ratio against a baseline in the same run,
the variants alternated, the median of several repetitions.

    python bench/bench_spine.py cpu            # the driver's own CPU per trial vs Optuna's journal loop
    python bench/bench_spine.py generations    # per-generation driver time as history grows (20 x 50)
    python bench/bench_spine.py gather         # summarize() vs a raw pl.scan_ndjson (1,000 x 1,000 rows)
    python bench/bench_spine.py status         # `hpc-agent status` on a 1,000-trial campaign, whole process
    python bench/bench_spine.py quickstart     # wall time of the quickstart campaign (3 x 4, real torch)
    python bench/bench_spine.py memory         # the driver's peak memory driving 1,000 trials
    python bench/bench_spine.py all            # everything but quickstart

What each figure includes is printed with it. ``cpu`` runs the driver in this process (the
campaign's own ``Campaign.run``, the local executor, 2 lanes, a no-op command), so that
``getrusage(RUSAGE_SELF)`` counts the driver only, every phase included (plan, prepare,
submit, the wait with its looks for ended trials, gather, analysis), and not its children (the
lanes and the trials) nor the imports (done before the clock starts). Results are printed and
written to bench/out/spine-<what>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
NOOP = ["sh", "-c", 'echo \'{"step": 0, "loss": 1.0}\' >> "$HPC_AGENT_METRICS"']


def cpu_s() -> float:
    return sum(cpu_split())


def cpu_split() -> tuple[float, float]:
    """(user, system) CPU seconds of this process: the system share is the kernel's work for
    it (the file system: a trial's folder, its files, the status files read)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def noop_campaign(root: Path, trials: int, generations: int = 1, planner: str = "random") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "campaign.toml").write_text(
        textwrap.dedent(
            f"""
            [campaign]
            name = "noop"
            metric = "loss"
            generations = {generations}
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
    """Seconds of each phase of generation 0, from the journal's timestamps."""
    t: dict[str, float] = {}
    for line in (results / "journal.jsonl").read_text().splitlines():
        e = json.loads(line)
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


def median(xs: list[float]) -> float:
    """Unrounded: a ratio of rounded per-trial seconds is wrong (0.00045 s rounds to 0.0005)."""
    return statistics.median(xs)


# ------------------------------------------------------------------------------- cpu


class _Clock:
    """A reporter that notes the driver's CPU at each generation's end (for ``generations``)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None: ...

    def generation_done(self, generation: int, analysis: str) -> None:
        self.marks.append(cpu_s())


class _TimedPlanner:
    """Wraps a planner: the CPU spent inside ``propose``, to take it out of the driver's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.spent: list[float] = []

    def propose(self, ctx: Any) -> Any:
        c0 = cpu_s()
        plan = self.inner.propose(ctx)
        self.spent.append(cpu_s() - c0)
        return plan

    def analyze(self, ctx: Any) -> str:
        return str(self.inner.analyze(ctx))

    def describe(self) -> str:
        return str(self.inner.describe())

    def __getattr__(self, name: str) -> Any:  # the rest of the planner's interface, as it is
        return getattr(self.inner, name)


def run_driver(camp: Path, results: Path, lanes: int, reporter: Any = None) -> tuple[float, float, Any]:
    """The campaign in this process: (wall s, driver CPU s, the planner wrapper)."""
    from hpc_agent.config.spec import load_spec
    from hpc_agent.executors.local import LocalExecutor
    from hpc_agent.loop.campaign import Campaign
    from hpc_agent.planners.random import RandomPlanner

    planner = _TimedPlanner(RandomPlanner())
    camp_ = Campaign(load_spec(camp), results, LocalExecutor(lanes), planner, reporter)  # type: ignore[arg-type]
    t0, c0 = time.perf_counter(), cpu_s()
    result = camp_.run()
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    if result.status != "done" or result.counts["completed"] != sum(result.counts.values()):
        raise SystemExit(f"the campaign did not complete: {result}")
    return wall, cpu, planner


def optuna_loop(trials: int, folder: Path) -> tuple[float, float]:
    """Optuna's ask/tell loop with JournalFileBackend (random sampler), no-op objective."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0, c0 = time.perf_counter(), cpu_s()
    storage = JournalStorage(JournalFileBackend(str(folder / "optuna.log")))
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(trials):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_int("k", 0, 1_000_000)
        study.tell(trial, 1.0)
    return time.perf_counter() - t0, cpu_s() - c0


def bench_cpu(trials: int, repeat: int, lanes: int) -> dict[str, Any]:
    import optuna  # noqa: F401 - imported before any clock starts
    import polars  # noqa: F401

    ours_cpu, ours_wall, optuna_cpu, optuna_wall, phase_runs = [], [], [], [], []
    split: dict[str, list[float]] = {"ours_user": [], "ours_sys": [], "optuna_user": [], "optuna_sys": []}
    for _ in range(repeat):  # alternate the two variants
        with tempfile.TemporaryDirectory() as tmp:
            (u0, s0) = cpu_split()
            wall, cpu, _planner = run_driver(
                noop_campaign(Path(tmp) / "camp", trials), Path(tmp) / "res", lanes
            )
            (u1, s1) = cpu_split()
            split["ours_user"].append((u1 - u0) / trials)
            split["ours_sys"].append((s1 - s0) / trials)
            ours_wall.append(wall / trials)
            ours_cpu.append(cpu / trials)
            phase_runs.append(phases(Path(tmp) / "res"))
        with tempfile.TemporaryDirectory() as tmp:
            (u0, s0) = cpu_split()
            wall, cpu = optuna_loop(trials, Path(tmp))
            (u1, s1) = cpu_split()
            split["optuna_user"].append((u1 - u0) / trials)
            split["optuna_sys"].append((s1 - s0) / trials)
            optuna_wall.append(wall / trials)
            optuna_cpu.append(cpu / trials)
    ours, theirs = median(ours_cpu), median(optuna_cpu)
    return {
        "trials": trials,
        "lanes": lanes,
        "repeat": repeat,
        "includes": "the driver process's own CPU (RUSAGE_SELF) over Campaign.run: plan, prepare, submit, "
        "the wait phase (ended/ listings, status and metrics reads), gather and analysis; imports "
        "excluded; the lanes and the trials (children) excluded. Optuna: ask + 2 suggests + tell "
        "per trial with JournalFileBackend, in process",
        "driver_cpu_ms_per_trial": round(1000 * ours, 3),
        "optuna_journal_cpu_ms_per_trial": round(1000 * theirs, 3),
        "ratio_cpu_vs_optuna": round(ours / theirs, 2),
        "driver_cpu_runs_ms": [round(1000 * x, 3) for x in ours_cpu],
        "optuna_cpu_runs_ms": [round(1000 * x, 3) for x in optuna_cpu],
        "user_and_system_ms_per_trial": {k: [round(1000 * x, 3) for x in v] for k, v in split.items()},
        "driver_wall_ms_per_trial": round(1000 * median(ours_wall), 3),
        "optuna_wall_ms_per_trial": round(1000 * median(optuna_wall), 3),
        "phases_s_median": {k: round(median([p[k] for p in phase_runs]), 4) for k in phase_runs[0]},
        "goals": {"driver_cpu_ms_per_trial": "<= 1.0", "ratio_cpu_vs_optuna": "<= 0.5"},
    }


# ------------------------------------------------------------------------------- generations


def bench_generations(generations: int, batch: int, repeat: int, lanes: int) -> dict[str, Any]:
    import polars  # noqa: F401

    per_gen_runs: list[list[float]] = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            clock = _Clock()
            camp = noop_campaign(Path(tmp) / "camp", batch, generations)
            c0 = cpu_s()
            _wall, _cpu, planner = run_driver(camp, Path(tmp) / "res", lanes, clock)
            marks = [c0, *clock.marks]
            per_gen_runs.append([marks[i + 1] - marks[i] - planner.spent[i] for i in range(generations)])
    first = [r[1] for r in per_gen_runs]  # generation 1 (0 holds the run's start-up)
    last = [r[generations - 1] for r in per_gen_runs]
    return {
        "generations": generations,
        "batch": batch,
        "repeat": repeat,
        "includes": "the driver's own CPU from one generation's end to the next (prepare, submit, wait, "
        "gather, analysis, journal writes), the planner's propose() taken out",
        "cpu_ms_per_generation_median": [
            round(1000 * median([r[g] for r in per_gen_runs]), 2) for g in range(generations)
        ],
        "generation_1_ms": round(1000 * median(first), 2),
        "generation_last_ms": round(1000 * median(last), 2),
        "ratio_last_vs_first": round(median(last) / median(first), 2),
        "goal": "ratio_last_vs_first <= 1.2",
    }


# ------------------------------------------------------------------------------- gather


def bench_gather(files: int, rows: int, repeat: int) -> dict[str, Any]:
    import polars as pl

    from hpc_agent.store import metrics

    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for i in range(files):
            p = Path(tmp) / f"t{i:04d}" / "metrics.jsonl"
            p.parent.mkdir()
            p.write_text(
                "".join(
                    json.dumps({"step": s, "loss": 1.0 / (s + 1), "acc": s / rows}) + "\n"
                    for s in range(rows)
                )
            )
            paths[f"t{i:04d}"] = p
        schema = {"step": pl.Float64(), "loss": pl.Float64(), "acc": pl.Float64()}

        def raw() -> None:
            pl.scan_ndjson([str(p) for p in paths.values()], schema=schema).collect()

        def ours() -> None:
            metrics.summarize(paths, "loss", "min", "last", ["acc"])

        t_raw, t_ours = alternate(raw, ours, repeat)
    return {
        "files": files,
        "rows_per_file": rows,
        "repeat": repeat,
        "includes": "ours: summarize() of every trial (one lazy scan, aggregated per file: lines, last step, "
        "objective, last values), the dict of summaries built; raw: pl.scan_ndjson(...).collect() of the "
        "same files with the same schema, nothing else",
        "raw_scan_s": round(median(t_raw), 4),
        "summarize_s": round(median(t_ours), 4),
        "ratio_speed_vs_raw": round(median(t_raw) / median(t_ours), 2),
        "goal": ">= 0.9",
    }


def alternate(a: Callable[[], None], b: Callable[[], None], repeat: int) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


# ------------------------------------------------------------------------------- status


def bench_status(trials: int, repeat: int, lanes: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "res"
        run_driver(noop_campaign(Path(tmp) / "camp", trials), results, lanes)
        status = [sys.executable, "-m", "hpc_agent", "status", str(results)]
        bare = [sys.executable, "-c", "pass"]
        t_bare, t_status = alternate(
            lambda: subprocess.run(bare, check=True, env=env, capture_output=True),
            lambda: subprocess.run(status, check=True, env=env, capture_output=True),
            repeat,
        )
    return {
        "trials": trials,
        "repeat": repeat,
        "includes": "`python -m hpc_agent status RESULTS` as a whole process: interpreter start, imports, "
        "journal replay, status files, rendering; baseline: `python -c pass` in the same run",
        "status_s": round(median(t_status), 4),
        "bare_python_s": round(median(t_bare), 4),
        "goal": "status_s < 0.2",
    }


# ------------------------------------------------------------------------------- memory, quickstart


def bench_memory(trials: int, lanes: int) -> dict[str, Any]:
    """Peak RSS (VmHWM) of a driver process driving one generation of N no-op trials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with tempfile.TemporaryDirectory() as tmp:
        camp = noop_campaign(Path(tmp) / "camp", trials, planner="tpe")
        cmd = [sys.executable, "-m", "hpc_agent", "run", str(camp), "--executor", "local"]
        cmd += ["--parallelism", str(lanes), "-q", "--results", str(Path(tmp) / "res")]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
    imports = (
        "import resource, polars, optuna, submitit, rich, click; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    base = subprocess.run([sys.executable, "-c", imports], capture_output=True, text=True, check=True)
    imports_mb = int(base.stdout.strip()) / 1024
    return {
        "trials": trials,
        "includes": "VmHWM of the `hpc-agent run` process (TPE planner, local executor); baseline: an "
        "interpreter importing polars, optuna, submitit, rich and click",
        "driver_peak_rss_mb": round(peak_kb / 1024, 1),
        "imports_only_rss_mb": round(imports_mb, 1),
        "ratio_peak_vs_imports": round(peak_kb / 1024 / imports_mb, 2),
        "limit_mb": 300,
    }


def bench_quickstart() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "hpc_agent",
            "run",
            str(ROOT / "examples" / "quickstart"),
            "--executor",
            "local",
        ]
        t0 = time.perf_counter()
        out = subprocess.run([*cmd, "-q"], cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        results = Path(tmp) / "results" / "quickstart"
        durations = [
            json.loads(p.read_text())["duration_s"] for p in results.glob("gen-*/trials/*/status.json")
        ]
    cores = len(os.sched_getaffinity(0))
    return {
        "trials": len(durations),
        "cores": cores,
        "includes": "the whole `hpc-agent run examples/quickstart` process, start-up to exit; baseline: the "
        "sum of the trials' own durations divided by the cores (a perfect scheduler with no driver)",
        "wall_s": round(wall, 1),
        "sum_trial_s": round(sum(durations), 1),
        "ideal_s": round(sum(durations) / cores, 1),
        "ratio_wall_vs_ideal": round(wall / (sum(durations) / cores), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["cpu", "generations", "gather", "status", "memory", "quickstart", "all"])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--lanes", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    todo = ["cpu", "generations", "gather", "status", "memory"] if args.what == "all" else [args.what]
    for what in todo:
        if what == "cpu":
            result = bench_cpu(args.trials, args.repeat, args.lanes)
        elif what == "generations":
            result = bench_generations(20, 50, args.repeat, args.lanes)
        elif what == "gather":
            result = bench_gather(1000, 1000, args.repeat)
        elif what == "status":
            result = bench_status(args.trials, max(args.repeat, 7), args.lanes)
        elif what == "memory":
            result = bench_memory(args.trials, args.lanes)
        else:
            result = bench_quickstart()
        result["command"] = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
        result["load_average"] = os.getloadavg()[0]
        print(f"== {what}")
        print(json.dumps(result, indent=2))
        (OUT / f"spine-{what}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

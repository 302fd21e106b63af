"""One contract suite, run over every built-in planner and every TPE strategy (as Optuna tests
its samplers), then what the TPE strategies promise beyond the contract."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from hpc_agent.config.space import Space, parse_space
from hpc_agent.config.spec import TPE_STRATEGIES, parse_spec
from hpc_agent.errors import SpecError, UserError
from hpc_agent.planners import make_planner, resolve_planner_kind
from hpc_agent.planners.base import PlanContext, Planner
from hpc_agent.planners.gp import GaussianProcess, expected_improvement, kriging_believer
from hpc_agent.planners.refine import from_unit, refine_count, to_unit
from hpc_agent.planners.tpe import TPEPlanner
from hpc_agent.store.state import ConfigResult

# every planner kind that plans without an LLM, and every strategy of the TPE planner
PLANNERS = ["random", *(f"tpe:{s}" for s in TPE_STRATEGIES)]


def spec_for(tmp_path: Path, space: dict, seed: int = 0, kind: str = "auto", **campaign: object):  # type: ignore[no-untyped-def]
    (tmp_path / "train.py").write_text("")
    kind, _, strategy = kind.partition(":")
    return parse_spec(
        {
            "campaign": {"name": "p", "metric": "loss", "seed": seed, **campaign},
            "experiment": {"command": "python train.py"},
            "space": space,
            "planner": {"kind": kind, **({"tpe_strategy": strategy} if strategy else {})},
        },
        tmp_path,
    )


def planner_for(kind: str, spec) -> Planner:  # type: ignore[no-untyped-def]
    """The planner as ``hpc-agent run`` builds it (``tpe:<strategy>`` sets [planner] tpe_strategy)."""
    assert spec.planner.kind == kind.partition(":")[0]
    return make_planner(spec.planner.kind, spec)


SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "width": {"type": "int", "low": 8, "high": 64, "step": 8},
    "act": ["relu", "tanh", "gelu"],
}


def result(i: int, params: dict, objective: float | None, pending: bool = False) -> ConfigResult:  # type: ignore[type-arg]
    return ConfigResult(
        config_id=f"0000-{i:04d}",
        generation=0,
        params=params,
        hypothesis="",
        source="random",
        parent=None,
        patch=None,
        trial_ids=(f"0000-{i:04d}",),
        objective=None if pending else objective,
        n_completed=0 if pending or objective is None else 1,
        pending=pending,
        failed_reasons=(),
    )


def history(space: Space, n: int, pending: int = 0) -> tuple[ConfigResult, ...]:
    """n finished random configurations of SPACE (a clear optimum at lr = 0.01), then in-flight ones."""
    rng = random.Random(42)
    out = []
    for i in range(n + pending):
        params = space.sample(rng)
        obj = (math.log10(params["lr"]) + 2) ** 2 + params["width"] / 64  # type: ignore[arg-type]
        out.append(result(i, params, obj, pending=i >= n))
    return tuple(out)


def ctx(
    spec, n: int, hist: tuple[ConfigResult, ...] = (), generation: int = 1, total: int = 2
) -> PlanContext:  # type: ignore[no-untyped-def]
    return PlanContext(
        spec=spec,
        generation=generation,
        n=n,
        history=hist,
        champion=None,
        generations_left=total - generation,
        seed=spec.campaign.seed,
    )


# ------------------------------------------------------------------------ the contract suite


@pytest.mark.parametrize("kind", PLANNERS)
def test_batch_is_valid_unique_and_new(tmp_path: Path, kind: str) -> None:
    spec = spec_for(tmp_path, SPACE, kind=kind)
    hist = history(spec.space, 20, pending=5)
    plan = planner_for(kind, spec).propose(ctx(spec, 12, hist))
    assert len(plan.proposals) == 12
    keys = [Space.key(p.params) for p in plan.proposals]
    assert len(set(keys)) == 12
    assert not set(keys) & {Space.key(c.params) for c in hist}
    for p in plan.proposals:
        assert spec.space.validate(p.params)[1] == []
        assert dict(spec.space.validate(p.params)[0]) == dict(p.params)  # already normalised
        assert p.source and p.hypothesis


@pytest.mark.parametrize("kind", PLANNERS)
def test_same_history_and_seed_same_plan(tmp_path: Path, kind: str) -> None:
    spec = spec_for(tmp_path, SPACE, seed=3, kind=kind)
    hist = history(spec.space, 15)
    a = planner_for(kind, spec).propose(ctx(spec, 6, hist))
    b = planner_for(kind, spec).propose(ctx(spec, 6, hist))
    assert [p.params for p in a.proposals] == [p.params for p in b.proposals]
    other = spec_for(tmp_path, SPACE, seed=4, kind=kind)
    c = planner_for(kind, other).propose(ctx(other, 6, hist))
    assert [p.params for p in c.proposals] != [p.params for p in a.proposals]


@pytest.mark.parametrize("kind", PLANNERS)
@pytest.mark.parametrize("finished", [0, 12])
def test_small_space_is_exhausted_not_duplicated(tmp_path: Path, kind: str, finished: int) -> None:
    spec = spec_for(tmp_path, {"a": ["x", "y", "z"], "b": {"type": "int", "low": 0, "high": 4}}, kind=kind)
    grid = [{"a": a, "b": b} for b in range(5) for a in ("x", "y", "z")]  # 15 configurations
    hist = tuple(result(i, grid[i], float(grid[i]["b"])) for i in range(finished))  # type: ignore[arg-type]
    plan = planner_for(kind, spec).propose(ctx(spec, 10, hist))
    keys = {Space.key(p.params) for p in plan.proposals}
    assert len(plan.proposals) == len(keys) == min(10, 15 - finished)
    assert keys == {Space.key(g) for g in grid[finished:]} or finished == 0
    if finished:
        assert "no more unseen configurations" in plan.note


@pytest.mark.parametrize("kind", [k for k in PLANNERS if k.startswith("tpe")])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_tpe_exploits_a_clear_optimum(tmp_path: Path, kind: str, mode: str) -> None:
    spec = spec_for(tmp_path, {"x": {"type": "float", "low": 0.0, "high": 1.0}}, kind=kind, mode=mode)
    sign = 1.0 if mode == "min" else -1.0
    xs = [(i * 0.6180339) % 1.0 for i in range(30)]
    hist = tuple(result(i, {"x": x}, sign * (x - 0.8) ** 2) for i, x in enumerate(xs))
    plan = planner_for(kind, spec).propose(ctx(spec, 8, hist))
    got = [float(p.params["x"]) for p in plan.proposals]  # type: ignore[arg-type]
    assert sum(abs(x - 0.8) < 0.2 for x in got) >= 5, got


# ----------------------------------------------------------------------- the TPE strategies


def test_refine_share_follows_the_schedule(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, SPACE, kind="tpe:refine")
    hist = history(spec.space, 16, pending=3)
    planner = planner_for("tpe:refine", spec)
    for generation, total in ((2, 6), (5, 6), (1, 2)):
        plan = planner.propose(ctx(spec, 8, hist, generation, total))
        refined = [p for p in plan.proposals if p.source == "tpe-refine"]
        assert len(refined) == refine_count(8, generation, total) > 0
        assert f"{len(refined)} of 8 refine" in plan.note
    assert refine_count(8, 1, 6) == 3 and refine_count(8, 5, 6) == 6 and refine_count(1, 5, 6) == 1
    # before TPE's start-up trials are in, and with the liar strategy, nothing refines
    early = planner.propose(ctx(spec, 8, history(spec.space, 5)))
    assert {p.source for p in early.proposals} == {"tpe"}
    liar = spec_for(tmp_path, SPACE, kind="tpe:liar")
    assert {p.source for p in planner_for("tpe:liar", liar).propose(ctx(liar, 8, hist)).proposals} == {"tpe"}


def test_refinements_close_in_on_the_optimum(tmp_path: Path) -> None:
    """A GP sees the optimum of a smooth bowl from 20 points (a choice parameter too): its
    picks land nearer the optimum than anything seen so far."""
    spec = spec_for(tmp_path, {"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": [0, 1]}, kind="tpe")
    rng = random.Random(1)
    pts = [{"x": rng.random(), "y": rng.choice([0, 1])} for _ in range(20)]
    hist = tuple(result(i, p, (float(p["x"]) - 0.37) ** 2 + 0.5 * float(p["y"])) for i, p in enumerate(pts))
    plan = planner_for("tpe", spec).propose(ctx(spec, 8, hist, 5, 6))
    refined = [p.params for p in plan.proposals if p.source == "tpe-refine"]
    assert len(refined) == 6
    best_seen = min(abs(float(p["x"]) - 0.37) for p in pts if p["y"] == 0)
    assert all(p["y"] == 0 and abs(float(p["x"]) - 0.37) < best_seen for p in refined), refined  # type: ignore[arg-type]


def test_unknown_strategy_names_the_value_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        spec_for(tmp_path, SPACE, kind="tpe:greedy")
    assert "tpe_strategy = 'greedy'" in str(err.value) and "['refine', 'liar']" in str(err.value)
    assert 'tpe_strategy = "refine"' in (err.value.fix or "")
    with pytest.raises(UserError, match="greedy"):
        TPEPlanner(strategy="greedy")
    assert TPEPlanner().describe() == "tpe" and TPEPlanner(strategy="liar").describe() == "tpe (liar)"


@pytest.mark.parametrize(
    "param",
    [
        {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        {"type": "float", "low": -1.0, "high": 2.0, "step": 0.25},
        {"type": "int", "low": 16, "high": 1024, "log": True},
        {"type": "int", "low": 3, "high": 40, "step": 4},
    ],
)
def test_unit_positions_round_trip_and_stay_valid(param: dict) -> None:  # type: ignore[type-arg]
    p = parse_space({"v": param}).params[0]
    rng = random.Random(0)
    for _ in range(200):
        value = p.sample(rng)
        assert from_unit(p, to_unit(p, value)) == value  # type: ignore[arg-type]
        landed = from_unit(p, rng.random())  # type: ignore[arg-type]
        assert p.normalize(landed) == (landed, None)
    assert from_unit(p, 0.0) == p.low and to_unit(p, p.low) == 0.0  # type: ignore[arg-type,union-attr]


def test_gp_interpolates_a_smooth_function_and_knows_where_it_has_not_looked() -> None:
    x = np.linspace(0.0, 0.6, 15)[:, None]
    f = np.sin(6 * x[:, 0])
    gp = GaussianProcess.fit(x, f)
    xs = np.array([[0.13], [0.41], [0.95]])
    mean, sd = gp.predict(xs)
    target = (np.sin(6 * xs[:, 0]) - f.mean()) / f.std()
    assert np.abs(mean[:2] - target[:2]).max() < 0.05  # inside the data
    assert sd[2] > 10 * sd[:2].max()  # far from it
    ei = expected_improvement(np.array([0.0, 0.0, -1.0]), np.array([0.1, 1.0, 0.1]), best=-0.5)
    assert ei[1] > ei[0] and ei[2] > ei[1]  # uncertainty is worth something; a lower mean more


def test_kriging_believer_spreads_a_batch() -> None:
    """In a gap of the data, 0.47 alone promises more than 0.3; once 0.5 is picked (or is in
    flight) its twin 0.47 promises little, and 0.3 goes first."""
    x = np.array([0, 0.1, 0.2, 0.8, 0.9, 1.0])[:, None]
    gp = GaussianProcess.fit(x, np.sin(3 * x[:, 0]))
    c = np.array([[0.5], [0.47], [0.3]])
    mean, sd = gp.predict(c)
    ei = expected_improvement(mean, sd, gp.best)
    assert ei[0] > ei[1] > ei[2]
    assert kriging_believer(gp, c, np.zeros((0, 1)), 3) == [0, 2, 1]
    assert kriging_believer(gp, c, np.array([[0.5]]), 2) == [2, 1]  # 0.5 is in flight
    assert kriging_believer(gp, c, np.zeros((0, 1)), 5) == [0, 2, 1]  # no more than there are


def test_auto_picks_tpe_without_an_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(v, raising=False)
    spec = spec_for(tmp_path, SPACE)
    kind, why = resolve_planner_kind(spec)
    assert kind == "tpe" and "no LLM endpoint" in why
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert resolve_planner_kind(spec)[0] == "llm"


def test_bench_drives_planners_in_process_exactly_as_a_campaign_does() -> None:
    """bench/bench_search.py draws its large-seed statistics from planners driven in process;
    that is only sound while those runs equal real campaigns trial for trial."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_search.py"
    module_spec = importlib.util.spec_from_file_location("bench_search", path)
    assert module_spec and module_spec.loader
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)
    task = bench.Branin()  # 3 generations x 4: the third is planned with refinements
    real = bench.observations_of(bench.run_campaign(task, "tpe", 7, 3, 4))
    assert len(real) == 12
    assert real == bench.observations_of(bench.run_in_process(task, "tpe", 7, 3, 4))

"""hpc_agent.planners (the registry's loader), .base (the seam), .random, .tpe, .refine and
.gp: each planner asked directly for a generation of a finished campaign's history."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from hpc_agent.errors import UserError
from hpc_agent.planners import make_planner, resolve_planner_kind
from hpc_agent.planners.base import PlanContext, Proposal, fill_random, fits, unique
from hpc_agent.planners.gp import GaussianProcess, expected_improvement, kriging_believer
from hpc_agent.planners.random import RandomPlanner
from hpc_agent.planners.refine import from_unit, perturb, refine_count, refinements, to_unit
from hpc_agent.planners.tpe import TPEPlanner, distributions
from unit.conftest import Finished


def context(finished: Finished, n: int = 4) -> PlanContext:
    state = finished.state
    return PlanContext(
        finished.spec,
        2,
        n,
        tuple(state.configs()),
        state.champion("min"),
        extra_seen=frozenset(state.config_keys()),
    )


def test_the_registry_makes_each_kind(finished: Finished, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    auto = replace(finished.spec, planner=replace(finished.spec.planner, kind="auto"))
    assert resolve_planner_kind(auto)[0] == "tpe"  # no endpoint configured
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert resolve_planner_kind(auto)[0] == "llm"
    pinned = replace(finished.spec, planner=replace(finished.spec.planner, kind="random"))
    assert resolve_planner_kind(pinned) == ("random", "--planner random")
    assert isinstance(make_planner("tpe", finished.spec), TPEPlanner)
    assert isinstance(make_planner("random", finished.spec), RandomPlanner)
    with pytest.raises(UserError, match="--planner 'x': expected one of auto"):
        make_planner("x", finished.spec)


@pytest.mark.parametrize("planner", [RandomPlanner(), "tpe"])
def test_each_planner_proposes_fresh_valid_configurations(finished: Finished, planner: object) -> None:
    p = TPEPlanner.for_spec(finished.spec) if planner == "tpe" else planner
    ctx = context(finished)
    plan = p.propose(ctx)  # type: ignore[attr-defined]
    assert len(plan.proposals) == 4
    keys = [q.key() for q in plan.proposals]
    assert len(set(keys)) == 4 and not set(keys) & ctx.seen_keys()
    assert all(finished.spec.space.contains(q.params) for q in plan.proposals)


def test_the_seams_helpers(finished: Finished) -> None:
    space = finished.spec.space
    a, b = Proposal({"x": 0.1, "mode": "a"}), Proposal({"x": 0.1, "mode": "a"})
    kept, dups = unique([a, b], set())
    assert kept == [a] and dups == [b]
    filled = fill_random(space, 3, {a.key()}, random.Random(0), "random")
    assert (
        len(filled) == 3
        and all(fits(space, p.params) for p in filled)
        and a.key() not in {p.key() for p in filled}
    )
    assert not fits(space, {"x": 9.0, "mode": "a"})
    assert set(distributions(space)) == {"x", "mode"}


def test_refinement_neighbours_the_best(finished: Finished) -> None:
    assert refine_count(8, 0, 4) < refine_count(8, 3, 4) <= 8
    x = finished.spec.space.params[0]
    assert (
        to_unit(x, x.low) == 0.0
        and to_unit(x, x.high) == 1.0
        and from_unit(x, 0.5) == pytest.approx((x.low + x.high) / 2)
    )
    rng = random.Random(1)
    best = finished.state.champion("min")
    assert best is not None
    near = perturb(finished.spec.space, best.params, 0.1, rng)
    assert finished.spec.space.contains(near) and near != dict(best.params)
    seen = set(finished.state.config_keys())
    got = refinements(context(finished), 2, seen, [], rng)
    assert 0 < len(got) <= 2 and all(p.key() in seen for p in got)


def test_the_gaussian_process_picks_by_expected_improvement() -> None:
    x = np.array([[0.0], [0.5], [1.0]])
    y = np.array([1.0, 0.0, 1.0])
    gp = GaussianProcess.fit(x, y)
    mean, sd = gp.predict(np.array([[0.5], [0.0]]))
    assert mean[0] < mean[1] and sd[0] >= 0
    ei = expected_improvement(np.array([0.0, 1.0]), np.array([1.0, 1.0]), 0.5)
    assert ei[0] > ei[1] > 0
    picks = kriging_believer(gp, np.array([[0.45], [0.55], [0.95]]), np.empty((0, 1)), 2)
    assert len(picks) == 2 and len(set(picks)) == 2 and 2 not in picks[:1]

"""hpc_agent.loop.propose: a planner's proposals held to the space, made fresh, turned into
trials (one per seed); the campaign's own trials (controls, confirmations, replicates)."""

from __future__ import annotations

import io
import random
from dataclasses import replace
from typing import Any

import pytest

from hpc_agent.errors import UserError
from hpc_agent.loop.propose import (
    ask_planner,
    baseline,
    champion_controls,
    confirm_trials,
    confirmable,
    explored,
    fresh,
    generations_left,
    history_keys,
    next_kind,
    trials,
    validated,
)
from hpc_agent.loop.reporter import SilentReporter
from hpc_agent.planners.base import Plan, PlanContext, Planner, Proposal
from hpc_agent.planners.random import RandomPlanner
from hpc_agent.science.budget import Stop
from unit.conftest import Finished


def test_invalid_and_duplicate_proposals_are_dropped_with_a_note(finished: Finished) -> None:
    spec, state = finished.spec, finished.state
    seen = history_keys(state)
    assert len(seen) == len(state.configs())  # one key per experiment
    old = dict(state.trials["0000-0000"].params)
    notes: list[str] = []
    props = [
        Proposal({"x": 5.0, "mode": "a"}),
        Proposal(old),
        Proposal({"x": 0.25, "mode": "b"}),
        Proposal({"x": 0.25, "mode": "b"}),
    ]
    ok = validated(spec, props, notes)
    assert len(ok) == 3 and notes[0].startswith("dropped an invalid proposal (")
    kept = fresh(ok, set(seen), notes)
    assert [p.params for p in kept] == [{"x": 0.25, "mode": "b"}] and notes[
        1
    ] == "dropped 2 duplicate proposal(s)"


def test_each_proposal_becomes_one_trial_per_seed_sharing_its_config_id() -> None:
    planned = trials(3, [Proposal({"x": 0.1}, "h1"), Proposal({"x": 0.2}, "h2")], seeds=[0, 1])
    assert [(t.trial_id, t.config, t.seed) for t in planned] == [
        ("0003-0000", "0003-0000", 0),
        ("0003-0001", "0003-0000", 1),
        ("0003-0002", "0003-0002", 0),
        ("0003-0003", "0003-0002", 1),
    ]
    assert planned[2].hypothesis == "h2" and dict(planned[3].params) == {"x": 0.2}


def test_the_baseline_comes_first_in_generation_0_only_once(finished: Finished) -> None:
    spec = finished.spec
    rng = random.Random(0)
    space = replace(spec.space, params=tuple(replace(p, default=p.sample(rng)) for p in spec.space.params))
    with_defaults = replace(spec, space=space)
    seen: set[str] = set()
    (b,) = baseline(with_defaults, 0, seen)
    assert b.source == "baseline" and b.hypothesis == "baseline: the defaults declared in [space]"
    assert baseline(with_defaults, 0, seen) == [] and baseline(with_defaults, 1, set()) == []
    assert baseline(spec, 0, set()) == []  # no defaults declared


def test_what_comes_next_and_the_confirmation(finished: Finished) -> None:
    state, spec = finished.state, finished.spec
    assert explored(state) == 2 and explored(state, before=1) == 1
    assert generations_left(state, spec, 1) == 1
    assert next_kind(state, spec) == "explore"
    assert next_kind(state, spec, Stop("max_hours", "")) is None
    assert next_kind(state, spec, Stop("generations", "")) is None  # no [confirm]: complete
    conf = replace(spec, confirm=replace(spec.confirm, top_k=2, seeds=2, budget_multiplier=3.0))
    assert next_kind(state, conf, Stop("generations", "")) == "confirm"
    best = confirmable(state, conf)
    assert len(best) == 2 and (best[0].objective or 0) <= (best[1].objective or 0)
    planned = confirm_trials(state, conf, 2)
    assert [t.trial_id for t in planned] == ["0002-0000", "0002-0001", "0002-0002", "0002-0003"]
    assert {t.purpose for t in planned} == {"confirm"} and planned[0].of == best[0].config_id
    assert planned[0].budget_multiplier == 3.0


def test_champion_controls_run_the_champions_code_again(finished: Finished) -> None:
    state, spec = finished.state, finished.spec
    champ = state.champion("min")
    runs = champion_controls(state, spec, 2, 2, "no code change")
    assert champ is not None and len(runs) == 2
    assert all(dict(t.params) == dict(champ.params) for t in runs)
    assert {(t.purpose, t.source) for t in runs} == {("control", "control")}
    assert champion_controls(state, spec, 2, 0, "none") == ()


class _Broken(Planner):
    def propose(self, ctx: PlanContext) -> Plan:
        raise RuntimeError("a bug")

    def describe(self) -> str:
        return "broken"


def test_a_crashing_planner_is_replaced_for_the_generation(finished: Finished) -> None:
    state = finished.state
    ctx = PlanContext(finished.spec, 2, 2, tuple(state.configs()), state.champion("min"))
    out = io.StringIO()
    plan = ask_planner(_Broken(), ctx, RandomPlanner, SilentReporter(out))
    assert len(plan.proposals) == 2 and plan.note.startswith("planner failed (RuntimeError: a bug)")
    assert out.getvalue() == "warning: planner broken failed (RuntimeError: a bug); using TPE\n"
    with pytest.raises(RuntimeError):
        ask_planner(_Broken(), ctx, None, SilentReporter())

    class _User(_Broken):
        def propose(self, ctx: Any) -> Plan:
            raise UserError("bad")

    with pytest.raises(UserError):
        ask_planner(_User(), ctx, RandomPlanner, SilentReporter())

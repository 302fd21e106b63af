"""hpc_agent.loop.live, .planning and .submit: a generation planned, recorded and submitted on
a bare :class:`~hpc_agent.loop.live.LiveDriver` (a real journal, the scripted executor), with
no loop around them."""

from __future__ import annotations

import json

import pytest

from hpc_agent.errors import UserError
from hpc_agent.loop.live import LiveDriver
from hpc_agent.loop.planning import Planning, PlanRequest
from hpc_agent.loop.submit import Submissions
from hpc_agent.planners.base import Plan, Proposal
from hpc_agent.store.journal import Journal
from hpc_agent.store.state import TrialState
from unit.conftest import BareDriver


def kinds(driver: BareDriver) -> list[str]:
    return [e["event"] for e in Journal(driver.paths.journal).read()]


def test_the_bare_driver_is_a_live_driver(bare_driver: BareDriver) -> None:
    driver: LiveDriver = bare_driver  # checked by mypy: the protocol is all the helpers need
    assert driver.state.spec["campaign"]["name"] == "tiny"


def test_a_generation_is_started_asked_and_recorded(bare_driver: BareDriver) -> None:
    planning = Planning(bare_driver)
    req = planning.start(0, "explore")
    assert isinstance(req, PlanRequest) and req.ctx.n == 3 and req.planner == "random"
    assert kinds(bare_driver)[-1] == "planning"
    plan = req.ask(bare_driver.planner, None, bare_driver.reporter)
    assert len(plan.proposals) == 3
    bad = Plan((*plan.proposals, Proposal({"x": 9.0, "mode": "a"})), note="")
    assert planning.finish(req, bad) is True
    planned = bare_driver.state.trials_of(0)
    assert [t.trial_id for t in planned] == ["0000-0000", "0000-0001", "0000-0002"]
    assert all(t.state is TrialState.PLANNED for t in planned)
    plan_json = json.loads(bare_driver.paths.plan(0).read_text())
    assert plan_json["planner"] == "random" and plan_json["note"].startswith("dropped an invalid proposal")
    assert len(plan_json["trials"]) == 3


def test_nothing_to_propose_ends_the_campaign(bare_driver: BareDriver) -> None:
    planning = Planning(bare_driver)
    req = planning.start(0, "explore")
    assert req is not None and planning.finish(req, Plan(())) is False
    assert bare_driver.state.trials_of(0) == []


def test_the_stop_rule_is_journaled_once(bare_driver: BareDriver) -> None:
    planning = Planning(bare_driver)
    assert planning.check_stop() is None
    for g in (0, 1):
        req = planning.start(g, "explore")
        assert req is not None
        planning.finish(req, req.ask(bare_driver.planner, None, bare_driver.reporter))
    stop = planning.check_stop()
    assert stop is not None and stop.rule == "generations"
    planning.check_stop()
    assert kinds(bare_driver).count("stopped") == 1
    assert planning.budget_text() == "Budget used: 6 trials planned."


def test_a_submission_is_journaled_before_and_after_the_scheduler(bare_driver: BareDriver) -> None:
    planning = Planning(bare_driver)
    req = planning.start(0, "explore")
    assert req is not None
    planning.finish(req, req.ask(bare_driver.planner, None, bare_driver.reporter))
    subs = Submissions(bare_driver)
    assert "OPENAI_API_KEY" in subs.secret_env
    subs.submit(0, bare_driver.state.trials_of(0), width=2)
    assert kinds(bare_driver)[-2:] == ["submitting", "submitted"]
    (request,) = bare_driver.executor.submissions
    assert request.width == 2 and request.trial_ids == ("0000-0000", "0000-0001", "0000-0002")
    assert all(t.state is TrialState.SUBMITTED for t in bare_driver.state.trials_of(0))
    assert subs.widen(request.token, 3) is True
    assert bare_driver.executor.widths[request.token] == 3 and kinds(bare_driver)[-1] == "widened"


def test_a_refused_submission_is_submit_failed_and_a_user_error(bare_driver: BareDriver) -> None:
    planning = Planning(bare_driver)
    req = planning.start(0, "explore")
    assert req is not None
    planning.finish(req, req.ask(bare_driver.planner, None, bare_driver.reporter))
    bare_driver.executor.refuse_next = "sbatch: error: invalid partition"
    with pytest.raises(
        UserError, match="the scheduler refused generation 0's jobs: sbatch: error: invalid partition"
    ):
        Submissions(bare_driver).submit(0, bare_driver.state.trials_of(0))
    assert kinds(bare_driver)[-1] == "submit_failed"
    assert all(t.state is TrialState.PLANNED for t in bare_driver.state.trials_of(0))

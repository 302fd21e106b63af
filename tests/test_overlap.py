"""The async schedule (``[campaign] schedule = "async"``) and the stop rules, through the
scripted in-process executor: overlapping generations, slots never oversubscribed, a slow
planner hidden behind running trials, a driver killed with two generations in flight, cancel,
and each stop rule. The same schedule on real processes and the real local SLURM is in
tests/test_overlap_real.py."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from hpc_agent.config.spec import load_spec
from hpc_agent.loop.campaign import Campaign
from hpc_agent.loop.driver import RunResult
from hpc_agent.loop.reporter import SilentReporter
from hpc_agent.outputs.status import status_report
from hpc_agent.planners.base import Plan, PlanContext
from hpc_agent.planners.random import RandomPlanner
from hpc_agent.store.events import Cancelled
from hpc_agent.store.journal import Journal
from hpc_agent.store.results import load_state
from hpc_agent.testing import DriverKilled, ScriptedExecutor


def results(camp: Path) -> Path:
    return camp.parent / f"results-{camp.name}"


def loss(params: Mapping[str, Any]) -> float:
    return (float(params["x"]) - 0.3) ** 2 + (0.0 if params["mode"] == "a" else 0.1)


def spread(params: Mapping[str, Any]) -> float:
    """Durations from 0.05 s to 0.45 s, by x: some trials of a generation straggle."""
    return 0.05 + 0.4 * abs(float(params["x"]))


def executor(**kw: Any) -> ScriptedExecutor:
    return ScriptedExecutor(objective=loss, duration=spread, **kw)


def run(camp: Path, ex: ScriptedExecutor, planner: Any = None, reporter: Any = None) -> RunResult:
    planner = planner or RandomPlanner()
    return Campaign(load_spec(camp), results(camp), ex, planner, reporter).run()


def journal(camp: Path) -> list[dict[str, Any]]:
    return Journal(results(camp) / "journal.jsonl").read()


def events(camp: Path, name: str) -> list[dict[str, Any]]:
    return [e for e in journal(camp) if e["event"] == name]


def in_flight_at_most(records: list[dict[str, Any]]) -> int:
    """The most slots taken at any moment, replayed from a journal: each submission's trials
    not yet ended, up to its width (``submitting``'s, then ``widened``'s; 0: all of them)."""
    open_: dict[str, set[str]] = {}  # token -> its trials not yet ended
    width: dict[str, int] = {}
    most = 0
    for e in records:
        if e["event"] == "submitting":
            open_[e["token"]] = set(e["trials"])
            width[e["token"]] = e.get("width") or len(e["trials"])
        elif e["event"] == "widened":
            width[e["token"]] = e["width"]
        elif e["event"] in ("trial_ended", "requeued"):
            for trials in open_.values():
                trials.discard(e["trial"])
        most = max(most, sum(min(len(ts), width[k]) for k, ts in open_.items()))
    return most


ASYNC = 'schedule = "async"\nmax_in_flight = 4\nrefill_at = 2'


@pytest.fixture
def camp(make_campaign: Callable[..., Path]) -> Path:
    return make_campaign(generations=4, batch_size=4, campaign=ASYNC)


def test_generations_overlap_and_the_slots_are_never_oversubscribed(camp: Path) -> None:
    ex = executor()
    result = run(camp, ex)
    assert result.status == "done"
    st = load_state(results(camp))
    search = [t for t in st.trials.values() if t.purpose in ("", "control")]
    assert len(search) == 16  # the trial budget: generations x batch, whatever the generations' sizes
    assert all(n == 1 for n in ex.executions.values())  # nothing ran twice
    assert in_flight_at_most(journal(camp)) <= 4
    assert ex.most_at_once <= 4  # what ran at once, as the scheduler saw it
    # a later generation was submitted while an earlier one still had trials running
    done_at = {e["generation"]: e["t"] for e in events(camp, "generation_done")}
    first_submit = {}
    for e in events(camp, "submitting"):
        first_submit.setdefault(e["generation"], e["t"])
    assert any(first_submit[g + 1] < done_at[g] for g in done_at if g + 1 in first_submit)
    # each generation: its plan, its one submission, its analysis
    for g, rec in st.generations.items():
        assert rec.done and rec.analyzed
        assert (results(camp) / f"gen-{g:04d}" / "plan.json").exists()
        assert (results(camp) / f"gen-{g:04d}" / "analysis.md").exists()
        assert 1 <= len(rec.trial_ids) <= 4
    (stopped,) = events(camp, "stopped")
    assert stopped["rule"] == "generations" and "16 of 16" in stopped["detail"]


def test_async_keeps_the_slots_fuller_than_sync(make_campaign: Callable[..., Path]) -> None:
    """The same campaign, both schedules: the sum of trial times over slots x wall time."""

    def utilization(schedule: str) -> float:
        camp = make_campaign(
            folder=schedule, generations=3, batch_size=4, campaign=f'schedule = "{schedule}"\nrefill_at = 1'
        )
        t0 = time.time()
        # stragglers of 0.2 s to 1.4 s: long beside the 0.25 s status poll, or a loaded machine
        # (two cores building a wheel) blurs the difference the test is about
        run(camp, ScriptedExecutor(objective=loss, duration=lambda p: 0.2 + 1.2 * abs(float(p["x"]))))
        wall = time.time() - t0
        busy = sum(e["duration_s"] for e in events(camp, "trial_ended"))
        return busy / (4 * wall)

    sync, async_ = utilization("sync"), utilization("async")
    assert async_ > sync, (async_, sync)


class SlowPlanner(RandomPlanner):
    """Random proposals, after a delay: a planner that thinks for a while."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def propose(self, ctx: PlanContext) -> Plan:
        time.sleep(self.delay_s)
        return super().propose(ctx)


def test_a_slow_planner_plans_while_trials_run_and_end(camp: Path) -> None:
    run(camp, executor(), planner=SlowPlanner(0.3))
    records = journal(camp)
    # trials ended (and were journaled) between a generation's planning and its plan
    overlapped = 0
    for i, e in enumerate(records):
        if e["event"] != "planning" or e["generation"] == 0:
            continue
        j = next(k for k in range(i, len(records)) if records[k]["event"] == "planned")
        overlapped += any(r["event"] == "trial_ended" for r in records[i:j])
    assert overlapped >= 1
    # the latency was learned: later plans started before all of their slots were free
    st = load_state(results(camp))
    assert all(r.planning_s is not None and r.planning_s >= 0.3 for r in st.generations.values())


class KillWhenTwoInFlight(SilentReporter):
    """Stands for kill -9 of the driver the first time two generations have trials running."""

    def __init__(self, camp: Path) -> None:
        super().__init__()
        self.camp = camp

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
        if generation >= 1 and counts.get("running", 0) + counts.get("submitted", 0):
            st = load_state(results(self.camp))
            running = {t.generation for t in st.trials.values() if t.state.value in ("submitted", "running")}
            if len(running) >= 2:
                raise DriverKilled("kill -9 with two generations in flight")


def test_driver_killed_with_two_generations_in_flight_resumes_them_once(camp: Path) -> None:
    ex = executor()
    with pytest.raises(DriverKilled):
        run(camp, ex, reporter=KillWhenTwoInFlight(camp))
    st = load_state(results(camp))
    in_flight = {t.generation for t in st.trials.values() if t.state.value in ("submitted", "running")}
    assert len(in_flight) >= 2
    result = run(camp, ex)  # the same cluster: the jobs went on while no driver watched
    assert result.status == "done"
    assert all(n == 1 for n in ex.executions.values())  # no trial ran twice
    tokens = [e["token"] for e in events(camp, "submitting")]
    assert len(tokens) == len(set(tokens)) == len(ex.submissions)  # nothing submitted twice
    assert len([t for t in load_state(results(camp)).trials.values() if not t.purpose]) >= 15


class CostlyRandom(RandomPlanner):
    """A planner the async schedule treats as the LLM: it plans a whole batch ahead."""

    costly = True


def test_a_costly_planner_plans_a_batch_ahead_into_a_narrowed_array(camp: Path) -> None:
    ex = executor()
    assert run(camp, ex, planner=CostlyRandom()).status == "done"
    subs = events(camp, "submitting")
    assert all(len(e["trials"]) == 4 for e in subs)  # whole batches, not the free slots' worth
    assert any(e["width"] for e in subs) and events(camp, "widened")  # queued behind the slots
    assert in_flight_at_most(journal(camp)) <= 4 and ex.most_at_once <= 4
    assert all(n == 1 for n in ex.executions.values())


def test_a_driver_killed_after_widened_tells_the_executor_again(camp: Path) -> None:
    """``widened`` is journaled before the executor hears of it: a driver killed in between
    left the submission narrower than the journal says, and the next driver says it again."""
    ex = executor()
    told: list[tuple[str, int]] = []
    widen = ex.widen

    def kill_once(request: Any, job_ids: Any, width: int) -> None:
        if not told:
            told.append(("killed", width))
            raise DriverKilled("kill -9 between widened and the executor")
        told.append((request.token, width))
        widen(request, job_ids, width)

    ex.widen = kill_once  # type: ignore[method-assign]
    with pytest.raises(DriverKilled):
        run(camp, ex, planner=CostlyRandom())
    (last,) = events(camp, "widened")[-1:]
    assert ex.widths[last["token"]] < last["width"]  # the executor never heard it
    jobs = [g.jobs for g in status_report(results(camp), queue=False).generations if not g.done]
    assert any(f"{last['width']} of 4 at once" in j for j in jobs), jobs  # status shows the width
    assert run(camp, ex, planner=CostlyRandom()).status == "done"
    assert told[1] == (last["token"], last["width"])  # the first word of the next driver
    assert all(n == 1 for n in ex.executions.values())
    assert in_flight_at_most(journal(camp)) <= 4 and ex.most_at_once <= 4


def test_cancel_stops_every_generation_in_flight_and_run_resumes(camp: Path) -> None:
    class CancelOnce(SilentReporter):
        fired = False

        def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
            if generation >= 1 and not self.fired:
                self.fired = True
                Journal(results(camp) / "journal.jsonl").write([Cancelled(reason="test")])

    ex = executor()
    assert run(camp, ex, reporter=CancelOnce()).status == "cancelled"
    st = load_state(results(camp))
    assert not [t for t in st.trials.values() if not t.state.is_finished()]
    assert run(camp, ex).status == "done"
    st = load_state(results(camp))
    assert all(t.state.value == "completed" for t in st.trials.values())


# ------------------------------------------------------------------------------- stop rules


@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_target_stops_the_search_and_is_journaled(make_campaign: Callable[..., Path], schedule: str) -> None:
    camp = make_campaign(
        generations=20,
        batch_size=4,
        campaign=f'schedule = "{schedule}"\nbaseline = false',
        extra="\n[stop]\ntarget = 0.05\n[rigor]\ncontrol = false\n",
    )
    assert run(camp, executor()).status == "done"
    st = load_state(results(camp))
    (stopped,) = events(camp, "stopped")
    assert stopped["rule"] == "target" and "reached target 0.05" in stopped["detail"]
    champion = st.champion("min")
    assert champion is not None and champion.objective is not None and champion.objective <= 0.05
    assert len(st.trials) < 80  # it stopped long before its 20 generations
    report = status_report(results(camp), queue=False)
    assert report.stopped == "target" and report.budget["trials"] == len(st.trials)


def test_plateau_stops_after_k_trials_without_a_new_champion(make_campaign: Callable[..., Path]) -> None:
    camp = make_campaign(
        generations=30, batch_size=2, extra="\n[stop]\nplateau_trials = 6\n[rigor]\ncontrol = false\n"
    )
    ex = ScriptedExecutor(objective=lambda p: 1.0)  # nothing ever beats the first
    assert run(camp, ex).status == "done"
    (stopped,) = events(camp, "stopped")
    assert stopped["rule"] == "plateau"
    assert len(load_state(results(camp)).trials) == 8  # the champion's generation, then 6 more


def test_max_trials_bounds_the_search_in_both_schedules(make_campaign: Callable[..., Path]) -> None:
    for schedule in ("sync", "async"):
        camp = make_campaign(
            folder=schedule,
            generations=10,
            batch_size=4,
            campaign=f'schedule = "{schedule}"',
            extra="\n[stop]\nmax_trials = 10\n",
        )
        assert run(camp, executor()).status == "done"
        st = load_state(results(camp))
        assert len(st.trials) == 10, schedule
        assert events(camp, "stopped")[0]["rule"] == "max_trials"


def test_max_hours_ends_everything_new_and_a_looser_limit_continues(
    make_campaign: Callable[..., Path],
) -> None:
    camp = make_campaign(
        generations=50,
        batch_size=2,
        campaign='schedule = "async"',
        # about 1 s; and no confirmation after a hard stop
        extra="\n[stop]\nmax_hours = 0.0003\n[confirm]\ntop_k = 1\n",
    )
    assert run(camp, executor()).status == "done"
    st = load_state(results(camp))
    (stopped,) = events(camp, "stopped")
    assert stopped["rule"] == "max_hours"
    assert not [t for t in st.trials.values() if t.purpose == "confirm"]
    n = len(st.trials)
    text = (camp / "campaign.toml").read_text().replace("max_hours = 0.0003", "max_hours = 0.0006")
    (camp / "campaign.toml").write_text(text)
    run(camp, executor())
    assert len(load_state(results(camp)).trials) > n  # a looser rule: the campaign went on


# ------------------------------------------------------------------------------- the LLM, async


def test_the_llm_plans_async_with_one_round_trip_a_generation_and_sees_what_is_in_flight(
    make_campaign: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real HTTP to the scripted server: the analysis of a generation returns the proposals of
    the next one (no second request), and every prompt lists the configurations in flight."""
    from hpc_agent.llm import read_log
    from hpc_agent.planners.llm import LLMPlanner
    from hpc_agent.testing import FakeLLM

    def answer(body: Mapping[str, Any]) -> dict[str, Any]:
        text = "".join(str(m.get("content", "")) for m in body.get("messages", []))
        found = re.search(r"[Pp]ropose exactly (\d+)", text)
        n = int(found.group(1)) if found else 0
        salt = len(body.get("messages", [])) + text.count("\n") + len(text)
        props = [{"hypothesis": "near 0.3", "params": {"x": round(((salt * 7 + i * 13) % 199) / 100 - 1, 2),
                                                       "mode": "a"}} for i in range(n)]  # fmt: skip
        return {"json": {"analysis": "x near 0.3 is best so far.", "proposals": props}}

    camp = make_campaign(
        generations=4, batch_size=4, campaign='schedule = "async"\nbaseline = false',
        extra="\n[planner]\nkind = \"llm\"\n[stop]\nmax_hours = 1\n",
    )  # fmt: skip
    with FakeLLM([answer], loop=True) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "k")
        monkeypatch.setenv("HPC_AGENT_MODEL", "fake-model")
        spec = load_spec(camp)
        ex = executor()
        result = Campaign(spec, results(camp), ex, LLMPlanner(spec)).run()
        prompts = [r.text() for r in fake.chat_requests]
    assert result.status == "done"
    # proposals an analysis made are taken whole at once: a narrowed array, widened as slots free
    records = journal(camp)
    assert any(e.get("width") for e in events(camp, "submitting")) and events(camp, "widened")
    assert in_flight_at_most(records) <= 4 and ex.most_at_once <= 4
    st = load_state(results(camp))
    assert st.counts()["completed"] == 16
    gens = len(st.generations)
    assert 2 <= gens <= 16
    # the rhythm: one analysis a generation, and it carries the next plan's proposals; a plan
    # asks on its own only when no analysis had come since the last plan (the first ones)
    log = list(read_log(results(camp) / "llm.jsonl"))
    analyses = [r for r in log if r.get("purpose") == "analyze"]
    asked = [r for r in log if r.get("purpose") == "propose" and r.get("round_trip")]
    repairs = [r for r in log if r.get("purpose") == "repair"]  # a proposal already in flight, re-asked
    assert len(analyses) == gens and len(prompts) == len(analyses) + len(asked) + len(repairs)
    assert not {r["generation"] for r in asked} & {r.get("plan_for") for r in analyses}
    reused = [e for e in events(camp, "planned") if "written with the analysis" in e.get("note", "")]
    assert reused and len(asked) < gens  # proposals made by an analysis served later plans
    assert any("In flight (do not propose these again)" in p for p in prompts[1:])
    assert all("Generations overlap" in p for p in prompts)  # the async budget line
    assert any("h (" in p and "of 1 h" in p for p in prompts)  # the budget used and left

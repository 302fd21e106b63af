"""The async schedule (``[campaign] schedule = "async"``): generations overlap, so a free slot
waits neither for the stragglers of its generation nor for the planner.

One loop on the driver's thread; the planner's calls (a plan, an analysis) run one at a time
on a second thread, so the loop goes on reconciling and submitting while the model thinks::

    every pass
      collect    a planner call that returned: a plan -> planned, prepared; an analysis ->
                 analysis.md, analyzed, generation_done
      submit     each generation's planned (or requeued) trials as ONE submission, once the
                 slots are free for all of them (oldest generation first)
      reconcile  the open trials of every generation in flight
      close      a generation whose trials all ended: gather, then its analysis (planner thread)
      plan       no planner call running, the search goes on, and the slots expected free by
                 the time the planner answers reach ``refill_at`` (default: 1, every slot as it
                 frees; half the slots with a costly planner, the LLM): the next generation,
                 sized to them (at most a batch)

**Slots.** ``[campaign] max_in_flight`` (default: a batch, seeds included), capped by the
executor's own limit (local lanes: ``parallelism``). Trials submitted or running are in flight;
planned ones waiting for slots count as taken.

**The planner's latency is hidden.** Its expected latency L is the median of its last
``PLANNER_LATENCY_RUNS`` plans (the journal's ``planning`` -> ``planned``). The slots expected
free after L are the free ones plus, for each trial in flight, the chance that it ends within L
given how long it has been out, estimated from the submit-to-end times of the trials that
ended. Planning starts when that reaches ``refill_at``; the plan is sized to it, and submitted
the moment that many slots are free.

**One round trip a generation.** When an analysis and a plan are both due, the analysis goes
first: the LLM planner writes the next generation's proposals with it (its ``plan_for``), and
the plan that follows reuses them.

**A killed driver** resumes as in the sync schedule: every phase is journaled with the same
events. The next run prepares and submits what was planned and not submitted, resolves the
pending submissions, reconciles every generation in flight, and plans again (or analyzes
again) a generation whose planner call the dead driver never saw return.
"""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hpc_agent.budget import SEARCH_PURPOSES
from hpc_agent.defaults import ASYNC_STATUS_INTERVAL_S, PLANNER_LATENCY_RUNS
from hpc_agent.events import GenerationDone, Requeued
from hpc_agent.plan import CONFIRM, EXPLORE, RERUN, next_kind
from hpc_agent.reconcile import next_delay
from hpc_agent.rigor import verdicts_due
from hpc_agent.state import TrialRecord, TrialState

if TYPE_CHECKING:
    from hpc_agent.campaign import Campaign
    from hpc_agent.planning import PlanRequest

IN_FLIGHT = (TrialState.SUBMITTED, TrialState.RUNNING)


class _Collect:
    """A reporter for the planner's thread: keeps the messages for the loop to say."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        """Kept."""
        self.messages.append(("info", message))

    def warn(self, message: str) -> None:
        """Kept."""
        self.messages.append(("warn", message))

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
        """Nothing: the loop reports progress."""

    def generation_done(self, generation: int, analysis: str) -> None:
        """Nothing: the loop reports analyses."""


class _Call:
    """One planner call (``plan`` or ``analysis`` of ``generation``) on a daemon thread: a
    driver that stops abandons it, and the next run asks again."""

    def __init__(self, what: str, generation: int, fn: Callable[[_Collect], Any]) -> None:
        self.what, self.generation = what, generation
        self.reporter = _Collect()
        self.result: Any = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(fn,), name=f"hpc-agent-{what}-{generation}", daemon=True
        )
        self._thread.start()

    def _run(self, fn: Callable[[_Collect], Any]) -> None:
        try:
            self.result = fn(self.reporter)
        except BaseException as e:  # handed to the loop, which raises it as the sync one would
            self.error = e
        finally:
            self._done.set()

    def done(self) -> bool:
        """Has it returned (or raised)?"""
        return self._done.is_set()


class Overlap:
    """The async schedule of one driver run (see the module docstring)."""

    def __init__(self, campaign: Campaign) -> None:
        self.c = campaign
        camp = campaign.spec.campaign
        cap = campaign.executor.max_running
        self.slots = min(camp.slots, cap) if cap else camp.slots
        default = max(1, self.slots // 2) if campaign.planner.costly else 1
        self.refill = max(min(camp.refill_at or default, self.slots), len(camp.seeds))
        self.call: _Call | None = None
        self.request: PlanRequest | None = None
        self.exhausted = False
        self._durations: list[float] = []  # submit-to-end times of the trials that ended, sorted
        self._ended = -1

    def run(self) -> str:
        """Run until nothing is in flight and nothing more is to be planned: ``done``,
        ``exhausted`` or ``cancelled``."""
        c = self.c
        for g in self.open_generations():
            c.prepare(g)  # what a killed driver planned and never prepared
        delay = 0.05
        while True:
            c.refresh()
            if c.state.cancelled:
                c.stop_cancelled(self.open_generations())
                return "cancelled"
            changed = self._collect()
            changed = self._submit_ready() or changed
            changed = self._reconcile() or changed
            changed = self._close() or changed
            if self.call is None:
                changed = self._plan() or changed
            if self.call is None and not self.open_generations() and not self._more_to_plan():
                return "exhausted" if self.exhausted else "done"
            for g in self.open_generations():
                c.report_progress(g)
            c.touch_lock()
            n_open = sum(len(c.state.generations[g].trial_ids) for g in self.open_generations())
            delay = next_delay(delay, changed, n_open, c.executor, ASYNC_STATUS_INTERVAL_S)
            time.sleep(delay)

    # ------------------------------------------------------------------ what is in flight
    def open_generations(self) -> list[int]:
        """Generations planned and not done, oldest first."""
        return [g for g, r in self.c.state.generations.items() if r.planned and not r.done]

    def _open_trials(self) -> list[TrialRecord]:
        st = self.c.state
        return [t for g in self.open_generations() for t in st.trials_of(g)]

    def _taken(self) -> tuple[int, int]:
        """(trials in flight, trials planned and waiting for slots)."""
        in_flight = waiting = 0
        for t in self._open_trials():
            in_flight += t.state in IN_FLIGHT
            waiting += t.state is TrialState.PLANNED
        return in_flight, waiting

    # ------------------------------------------------------------------ the passes
    def _collect(self) -> bool:
        """A planner call that returned: record what it made."""
        call, c = self.call, self.c
        if call is None or not call.done():
            return False
        self.call = None
        for kind, message in call.reporter.messages:
            getattr(c.reporter, kind)(message)
        if call.error is not None:
            raise call.error  # a user error (a context too small, a bad key) ends the run, as in sync
        if call.what == "plan":
            assert self.request is not None
            if c.planning.finish(self.request, call.result):
                c.prepare(call.generation)
            else:
                self.exhausted = True
        else:
            c.planning.write_analysis(call.generation, *call.result)
            c.record(GenerationDone(generation=call.generation))
        return True

    def _submit_ready(self) -> bool:
        """Each generation's planned trials, as one submission, when the slots are free for
        all of them (or nothing else is in flight: a confirmation may be wider than the slots)."""
        c, st = self.c, self.c.state
        in_flight, _ = self._taken()
        submitted = False
        for g in self.open_generations():
            planned = [t for t in st.trials_of(g) if t.state is TrialState.PLANNED]
            if not planned:
                continue
            if in_flight and in_flight + len(planned) > self.slots:
                break  # oldest first: a younger generation does not overtake it
            c.submit(g, planned)
            in_flight += len(planned)
            submitted = True
        return submitted

    def _reconcile(self) -> bool:
        """The open trials of every generation in flight, as the sync loop's ``wait`` does."""
        c = self.c
        open_trials = [t for t in self._open_trials() if t.state in IN_FLIGHT]
        if not open_trials:
            return False
        events = c.reconciler.reconcile(c.state, open_trials)
        if events:
            c.record(*events)
            c.record(*verdicts_due(c.state, c.spec))
            for e in events:
                if isinstance(e, Requeued):
                    c.reporter.info(f"trial {e.trial} requeued: {e.reason}")
        return bool(events)

    def _close(self) -> bool:
        """The oldest generation whose trials all ended: gathered, then analyzed on the
        planner's thread (one call at a time), then done."""
        c, st = self.c, self.c.state
        for g in self.open_generations():
            if self.call is not None:
                return False
            if not all(t.state.is_finished() for t in st.trials_of(g)):
                continue
            c.gather()
            if st.generations[g].analyzed:
                c.record(GenerationDone(generation=g))
                return True
            self._analyze(g)
            return True
        return False

    def _analyze(self, g: int) -> None:
        c = self.c
        ctx = c.planning.analysis_context(g, plan_for=self._next_unplanned())
        self.call = _Call("analysis", g, lambda _reporter: c.planning.run_analysis(ctx))

    def _plan(self) -> bool:
        """Start planning the next generation when its slots are (about to be) free."""
        c, st, spec = self.c, self.c.state, self.c.spec
        if self.exhausted:
            return False
        g = self._next_unplanned()
        if c.stop_after is not None and g > c.stop_after:
            return False
        kind = next_kind(st, spec, c.planning.check_stop())
        if kind is None:
            return False
        if kind == CONFIRM:  # it ranks finished configurations: the search in flight ends first
            if any(t.purpose in SEARCH_PURPOSES for t in self._open_trials()):
                return False
            c.planning.start(g, CONFIRM)
            c.prepare(g)
            return True
        in_flight, waiting = self._taken()
        free = self.slots - in_flight - waiting
        expected = free + self._ending_within(self._latency(), in_flight)
        if expected < self.refill:
            return False
        size = max(min(spec.campaign.batch_trials, int(expected)), len(spec.campaign.seeds))
        req = self.request = c.planning.start(g, EXPLORE, size)
        assert req is not None
        self.call = _Call("plan", g, lambda reporter: req.ask(c.planner, c.fallback_planner, reporter))
        return True

    def _more_to_plan(self) -> bool:
        c = self.c
        if self.exhausted or (c.stop_after is not None and self._next_unplanned() > c.stop_after):
            return False
        return next_kind(c.state, c.spec, c.planning.check_stop()) is not None

    def _next_unplanned(self) -> int:
        """The generation to plan next: one a dead driver began planning, else a new one."""
        gens = self.c.state.generations
        started = [g for g, r in gens.items() if r.planning and not r.planned]
        return min(started) if started else max(gens, default=-1) + 1

    # ------------------------------------------------------------------ the latency estimate
    def _latency(self) -> float:
        """The planner's expected latency: the median of its last plans (0 before any)."""
        gens = self.c.state.generations.values()
        times = [r.planning_s for r in gens if r.planner not in (CONFIRM, RERUN) and r.planning_s is not None]
        recent = times[-PLANNER_LATENCY_RUNS:]
        return statistics.median(recent) if recent else 0.0

    def _ending_within(self, latency: float, in_flight: int) -> float:
        """How many trials in flight are expected to end within ``latency`` seconds."""
        if latency <= 0 or not in_flight:
            return 0.0
        st = self.c.state
        self._learn_durations()
        d, now, expected = self._durations, time.time(), 0.0
        for t in self._open_trials():
            sub = st.submissions.get(t.token or "")
            if t.state not in IN_FLIGHT or sub is None:
                continue
            out_for = now - sub.at
            longer = len(d) - bisect.bisect_right(d, out_for)
            if longer:
                expected += (bisect.bisect_right(d, out_for + latency) - (len(d) - longer)) / longer
        return expected

    def _learn_durations(self) -> None:
        st = self.c.state
        ended = [t for t in st.trials.values() if t.state.is_finished() and t.ended_at and t.token]
        if len(ended) == self._ended:
            return
        self._ended = len(ended)
        out = []
        for t in ended:
            sub = st.submissions.get(t.token or "")
            if sub is not None and t.ended_at is not None:
                out.append(max(0.0, t.ended_at - sub.at))
        self._durations = sorted(out)

"""The async schedule (``[campaign] schedule = "async"``): generations overlap, so a free slot
waits neither for the stragglers of its generation nor for the planner.

One loop on the driver's thread; the planner's calls (a plan, an analysis) run one at a time
on a second thread, so the loop goes on reconciling and submitting while the model thinks::

    every pass
      collect    a planner call that returned: a plan -> planned, prepared; an analysis ->
                 analysis.md, analyzed, generation_done
      widen      a submission holding more trials than it may run at once: as slots free,
                 more of them may start (oldest submission first)
      submit     each generation's planned (or requeued) trials as ONE submission the moment
                 a slot is free, narrowed to the free slots (oldest generation first)
      reconcile  the open trials of every generation in flight
      call       if no planner call is running: a plan when the slots expected free by the
                 time the planner answers reach ``refill_at`` (default: 1, every slot as it
                 frees; half the slots with a costly planner, the LLM), sized to them (at most
                 a batch); else the analysis of a generation whose trials all ended

**Slots.** ``[campaign] max_in_flight`` (default: a batch, seeds included), capped by the
executor's own limit (local lanes: ``parallelism``). A slot is taken by a trial that runs or
may start: a submission's unfinished trials up to its *width*. A generation is submitted as one
array as soon as one slot is free, with the width of the free slots (``submitting``'s
``width``); its other trials wait in the scheduler's queue (SLURM: the array's ``%N``; local:
lanes that wait) and are let in as slots free (``widened``, then ``scontrol update
ArrayTaskThrottle``). Trials waiting so, and planned ones not yet submitted, count as taken for
planning. An executor that cannot widen gets a generation only once all its trials fit.

**The planner's latency is hidden.** A costly planner (the LLM) plans one batch ahead, where
the executor can hold trials back (``can_widen``): it is asked for a whole batch as soon as the
trials waiting for a slot leave room for ``refill_at`` more, as if every trial in flight could
end before it answers, so that its proposals wait in the queue when slots free. Any other
planner is asked just in time: its expected latency L is the median of its last
``PLANNER_LATENCY_RUNS`` calls (at the start of a run, of the journal's ``planning`` ->
``planned`` times). The slots expected free after L are the free ones plus, for each trial in
flight, the chance that it ends within L given how long it has run, estimated from the run
times of the trials that ended. Planning starts when that reaches ``refill_at``;
the plan is sized to it, and submitted the moment a slot is free. Proposals an analysis wrote
(below) cost no call: they are all taken at once (the whole batch), the free slots first.

**One round trip a generation.** A costly planner (``Planner.costly``: the LLM) analyzes a
finished generation when a plan is due, not before: the analysis writes the next generation's
proposals in the same round trip (``AnalysisContext.plan_for``), and the plan that follows
reuses them at once. Its analysis of a generation is therefore written with the next plan after
the generation's last trial ends (the last ones when the search is over). Any other planner
analyzes a generation as soon as its last trial ends, and plans first when both are due.

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

from hpc_agent.config.defaults import ASYNC_STATUS_INTERVAL_S, PLANNER_LATENCY_RUNS
from hpc_agent.job.trial import is_running_for
from hpc_agent.loop.propose import CONFIRM, EXPLORE, OWN_GENERATIONS, next_kind
from hpc_agent.loop.reconcile import next_delay
from hpc_agent.science.budget import SEARCH_PURPOSES
from hpc_agent.science.rigor import REPLICATE, verdicts_due
from hpc_agent.store.events import GenerationDone, Requeued
from hpc_agent.store.state import SubmissionRecord, TrialRecord, TrialState

if TYPE_CHECKING:
    from hpc_agent.loop.driver import Driver
    from hpc_agent.loop.planning import PlanRequest

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
        self.started = time.monotonic()
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


class AsyncSchedule:
    """The async schedule of one driver run (see the module docstring), built on the driver."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        camp = driver.spec.campaign
        cap = driver.executor.max_running
        self.slots = min(camp.slots, cap) if cap else camp.slots
        default = max(1, self.slots // 2) if driver.planner.costly else 1
        self.refill = max(min(camp.refill_at or default, self.slots), len(camp.seeds))
        self.call: _Call | None = None
        self.request: PlanRequest | None = None
        self.exhausted = False
        self._fresh_for: int | None = None  # the generation the last analysis made proposals for
        self._timed = True  # the running call is a round trip (its time says the latency)
        self._calls_s: list[float] = [  # the planner's latency: its plans so far, then its calls
            r.planning_s
            for r in driver.state.generations.values()
            if r.planning_s and r.planner not in OWN_GENERATIONS
        ]
        self._durations: list[float] = []  # run times of the trials that ended, sorted
        self._ended = -1

    def run(self) -> str:
        """Run until nothing is in flight and nothing more is to be planned: ``done``,
        ``exhausted`` or ``cancelled``."""
        driver = self.driver
        for generation in self.open_generations():
            driver.prepare(generation)  # what a killed driver planned and never prepared
        self._rewiden()
        delay = 0.05
        while True:
            driver.refresh()
            if driver.state.cancelled:
                driver.stop_cancelled(self.open_generations())
                return "cancelled"
            changed = self._collect()
            changed = self._widen() or changed
            changed = self._submit_ready() or changed
            changed = self._reconcile() or changed
            if self.call is None:
                changed = self._next_call() or changed
            if self.call is None and not self.open_generations() and not self._more_to_plan():
                return "exhausted" if self.exhausted else "done"
            for generation in self.open_generations():
                driver.report_progress(generation)
            driver.touch_lock()
            n_open = sum(
                len(driver.state.generations[generation].trial_ids) for generation in self.open_generations()
            )
            delay = next_delay(delay, changed, n_open, driver.executor, ASYNC_STATUS_INTERVAL_S)
            time.sleep(delay)

    # ------------------------------------------------------------------ what is in flight
    def open_generations(self) -> list[int]:
        """Generations planned and not done, oldest first."""
        return [
            generation for generation, r in self.driver.state.generations.items() if r.planned and not r.done
        ]

    def _open_trials(self) -> list[TrialRecord]:
        state = self.driver.state
        return [trial for generation in self.open_generations() for trial in state.trials_of(generation)]

    def _taken(self) -> tuple[int, int]:
        """(slots taken: trials that run or may start, trials waiting for a slot: planned
        ones and those a narrowed submission holds back)."""
        in_use = waiting = 0
        for _sub, unfinished, width in self._submissions():
            in_use += min(unfinished, width)
            waiting += max(0, unfinished - width)
        waiting += sum(trial.state is TrialState.PLANNED for trial in self._open_trials())
        return in_use, waiting

    def _submissions(self) -> list[tuple[SubmissionRecord, int, int]]:
        """(submission, its trials in flight, its width) of every submission with trials in
        flight, oldest first."""
        state = self.driver.state
        count: dict[str, int] = {}
        for trial in self._open_trials():
            if trial.state in IN_FLIGHT and trial.token:
                count[trial.token] = count.get(trial.token, 0) + 1
        out = []
        for token, n in count.items():
            sub = state.submissions.get(token)
            if sub is not None:
                out.append((sub, n, sub.width or len(sub.trial_ids)))
        return sorted(out, key=lambda x: x[0].at)

    # ------------------------------------------------------------------ the passes
    def _collect(self) -> bool:
        """A planner call that returned: record what it made."""
        call, driver = self.call, self.driver
        if call is None or not call.done():
            return False
        self.call = None
        if call.what == "analysis" or self._timed:
            self._calls_s.append(time.monotonic() - call.started)
        for kind, message in call.reporter.messages:
            getattr(driver.reporter, kind)(message)
        if call.error is not None:
            raise call.error  # a user error (a context too small, a bad key) ends the run, as in sync
        if call.what == "plan":
            assert self.request is not None
            if driver.planning.finish(self.request, call.result):
                driver.prepare(call.generation)
            else:
                self.exhausted = True
        else:
            driver.planning.write_analysis(call.generation, *call.result)
            driver.record(GenerationDone(generation=call.generation))
        return True

    def _rewiden(self) -> None:
        """A starting driver tells the executor each narrowed submission's journaled width
        again (the dead one may have journaled it and died before telling)."""
        if self.driver.executor.can_widen:
            for sub, _n, width in self._submissions():
                if sub.width and sub.state == "submitted":
                    self.driver.submissions.widen(sub.token, width, again=True)

    def _widen(self) -> bool:
        """Let the trials a narrowed submission holds back start as slots free, oldest
        submission first."""
        if not self.driver.executor.can_widen:
            return False
        subs = self._submissions()
        free = self.slots - sum(min(n, w) for _s, n, w in subs)
        widened = False
        for sub, n, width in subs:
            if free <= 0:
                break
            if width < n and sub.state == "submitted":
                new = min(n, width + free)
                if self.driver.submissions.widen(sub.token, new):
                    free -= new - width
                    widened = True
        return widened

    def _submit_ready(self) -> bool:
        """Each generation's planned trials, as one submission, oldest first: narrowed to the
        free slots the moment one is free, where the executor can widen it later; else once all
        of them fit (or nothing else is in flight: a confirmation may be wider than the slots)."""
        driver, state = self.driver, self.driver.state
        in_use, _ = self._taken()
        narrow = driver.executor.can_widen
        submitted = False
        for generation in self.open_generations():
            planned = [trial for trial in state.trials_of(generation) if trial.state is TrialState.PLANNED]
            if not planned:
                continue
            free = self.slots - in_use
            if in_use and (free < 1 if narrow else free < len(planned)):
                break  # oldest first: a younger generation does not overtake it
            width = min(len(planned), max(free, 1)) if narrow else len(planned)
            driver.submit(generation, planned, width)  # all of them: not narrowed (Submissions.submit)
            in_use += width
            submitted = True
        return submitted

    def _reconcile(self) -> bool:
        """The open trials of every generation in flight, as the sync loop's ``wait`` does."""
        driver = self.driver
        open_trials = [trial for trial in self._open_trials() if trial.state in IN_FLIGHT]
        if not open_trials:
            return False
        events = driver.reconciler.reconcile(driver.state, open_trials)
        if events:
            driver.record(*events)
            driver.record(*verdicts_due(driver.state, driver.spec))
            for e in events:
                if isinstance(e, Requeued):
                    driver.reporter.info(f"trial {e.trial} requeued: {e.reason}")
        return bool(events)

    def _next_call(self) -> bool:
        """Start the planner's next call, if one is due: a plan when its slots are (about to
        be) free, an analysis of a generation whose trials all ended. A costly planner (the
        LLM) analyzes when a plan is due, so that the analysis carries the plan's proposals
        (one round trip a generation); any other analyzes at once and plans first."""
        due = self._plan_due()
        ripe = self._ripe()
        if due is not None and ripe and self.driver.planner.costly and self._fresh_for != due[0]:
            return self._analyze(ripe[0])
        if due is not None:
            return self._start_plan(*due)
        if ripe and (not self.driver.planner.costly or not self._more_to_plan()):
            return self._analyze(ripe[0])
        return False

    def _ripe(self) -> list[int]:
        """Generations whose trials all ended, oldest first (analyzed ones are closed here)."""
        driver, state, out = self.driver, self.driver.state, []
        for generation in self.open_generations():
            if all(trial.state.is_finished() for trial in state.trials_of(generation)):
                if state.generations[generation].analyzed:  # by a driver that died before generation_done
                    driver.record(GenerationDone(generation=generation))
                else:
                    out.append(generation)
        return out

    def _analyze(self, generation: int) -> bool:
        driver = self.driver
        driver.gather()
        ctx = driver.planning.analysis_context(generation, plan_for=self._next_unplanned())
        self._fresh_for = ctx.plan_for if driver.planner.costly else None
        self.call = _Call("analysis", generation, lambda _reporter: driver.planning.run_analysis(ctx))
        return True

    def _plan_due(self) -> tuple[int, str, int] | None:
        """(generation, kind, size) when the next generation should be planned now."""
        driver, state, spec = self.driver, self.driver.state, self.driver.spec
        generation = self._next_unplanned()
        if self.exhausted or (driver.stop_after is not None and generation > driver.stop_after):
            return None
        kind = next_kind(state, spec, driver.planning.check_stop())
        if kind is None:
            return None
        if kind == CONFIRM:  # it ranks finished configurations: the search in flight ends first
            searching = any(trial.purpose in SEARCH_PURPOSES for trial in self._open_trials())
            return None if searching else (generation, CONFIRM, 0)
        if kind == REPLICATE:  # the search has ended: the candidates' replicates, at once
            return generation, REPLICATE, 0
        in_use, waiting = self._taken()
        free = self.slots - in_use - waiting
        if driver.executor.can_widen and (self._fresh_for == generation or driver.planner.costly):
            # proposals ready: take them all now; a costly planner plans a batch ahead
            ahead = self._fresh_for == generation or self.slots - waiting >= self.refill
            return (generation, EXPLORE, spec.campaign.batch_trials) if ahead else None
        latency = 0.0 if self._fresh_for == generation else self._latency()  # proposals ready: no call
        expected = free + self._ending_within(latency, in_use)
        if expected < self.refill:
            return None
        return (
            generation,
            EXPLORE,
            max(min(spec.campaign.batch_trials, int(expected)), len(spec.campaign.seeds)),
        )

    def _start_plan(self, generation: int, kind: str, size: int) -> bool:
        driver = self.driver
        if kind in (CONFIRM, REPLICATE):
            driver.planning.start(generation, kind)
            driver.prepare(generation)
            return True
        req = self.request = driver.planning.start(generation, EXPLORE, size)
        assert req is not None
        self._timed = self._fresh_for != generation  # a round trip, not proposals an analysis made
        self._fresh_for = None
        self.call = _Call(
            "plan", generation, lambda reporter: req.ask(driver.planner, driver.fallback_planner, reporter)
        )
        return True

    def _more_to_plan(self) -> bool:
        driver = self.driver
        if self.exhausted or (driver.stop_after is not None and self._next_unplanned() > driver.stop_after):
            return False
        return next_kind(driver.state, driver.spec, driver.planning.check_stop()) is not None

    def _next_unplanned(self) -> int:
        """The generation to plan next: one a dead driver began planning, else a new one."""
        gens = self.driver.state.generations
        started = [generation for generation, r in gens.items() if r.planning and not r.planned]
        return min(started) if started else max(gens, default=-1) + 1

    # ------------------------------------------------------------------ the latency estimate
    def _latency(self) -> float:
        """The planner's expected latency: the median of its last calls (0 before any)."""
        recent = self._calls_s[-PLANNER_LATENCY_RUNS:]
        return statistics.median(recent) if recent else 0.0

    def _ending_within(self, latency: float, in_use: int) -> float:
        """How many trials that hold a slot are expected to end within ``latency`` seconds:
        those running, by how long they have run (their status file's ``started_at``), and
        those about to start (the rest of ``in_use``), as new."""
        if latency <= 0 or not in_use:
            return 0.0
        self._learn_durations()
        d, now = self._durations, time.time()
        if not d:
            return 0.0
        ran: list[float] = []
        for trial in self._open_trials():
            if trial.state in IN_FLIGHT:
                status = self.driver.reconciler.status(trial.trial_id)
                if is_running_for(status, trial.token) and status is not None:
                    ran.append(max(0.0, now - float(status.get("started_at") or now)))
        ran += [0.0] * max(0, in_use - len(ran))
        return expected_ends(d, ran[:in_use], latency)

    def _learn_durations(self) -> None:
        """The run times of the trials that ended (their last attempt's), sorted."""
        trials = self.driver.state.trials.values()
        ended = [t for t in trials if t.state.is_finished() and t.duration_s is not None]
        if len(ended) == self._ended:
            return
        self._ended = len(ended)
        self._durations = sorted(float(t.duration_s or 0.0) for t in ended)


def expected_ends(durations: list[float], ran: list[float], latency: float) -> float:
    """How many of the trials that have run ``ran`` seconds each are expected to end within
    ``latency`` more, given the run times of the trials that ended (``durations``, sorted):
    for each, the share of the longer past runs that ended within ``latency`` of its age."""
    expected = 0.0
    for out_for in ran:
        longer = len(durations) - bisect.bisect_right(durations, out_for)
        if longer:
            expected += (
                bisect.bisect_right(durations, out_for + latency) - (len(durations) - longer)
            ) / longer
    return expected

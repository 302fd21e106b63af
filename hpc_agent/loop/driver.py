"""The driver: the live state, ``record``, the lock, and one method per phase, named as in
docs/architecture.md. The order the phases run in is a *schedule*, a peer built on the driver:
:class:`~hpc_agent.loop.sync.SyncSchedule` (one generation at a time, each a barrier) or
:class:`~hpc_agent.loop.overlap.AsyncSchedule` (generations overlap); :mod:`hpc_agent.loop.campaign`
picks one by ``[campaign] schedule``. The sync schedule::

    run:  for each generation g
            propose(g)   the planner's proposals -> validated, deduplicated trials  (planned)
            prepare(g)   a folder per trial: params, its own code, launch.json
            submit(g)    ONE executor.submit per generation, under a new token     (submitted)
            wait(g)      reconcile until every trial of g is finished               (trial_ended, requeued)
            gather()     every trial's metrics -> trials.parquet
            analyze(g)   the planner's analysis -> analysis.md                      (analyzed)

Every phase first asks the journal whether it already happened, and records an event before
and after its side effect, so running ``hpc-agent run`` again on a results folder, at any
moment and after any failure, continues where the last driver stopped (the table "the driver
died here -> on the next run" is in docs/architecture.md). The driver holds one live state
and applies each event as it writes it (:meth:`Driver.record`); what another process
appended (``hpc-agent cancel``) is read from the byte offset it had reached.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hpc_agent import __version__
from hpc_agent.config.spec import CampaignSpec
from hpc_agent.edits.patches import workdir_entries
from hpc_agent.executors.base import Executor
from hpc_agent.loop.planning import Planning
from hpc_agent.loop.prepare import base_files, evaluator_snapshot, prepare_trial
from hpc_agent.loop.propose import (
    EXPLORE,
    next_kind,
)
from hpc_agent.loop.reconcile import Reconciler, cancelled_by_campaign, next_delay, resumed_after_cancel
from hpc_agent.loop.reporter import Reporter, SilentReporter
from hpc_agent.loop.submit import Submissions
from hpc_agent.planners.base import Planner
from hpc_agent.science.provenance import write_run_provenance
from hpc_agent.science.rigor import verdicts_due
from hpc_agent.store import events as ev
from hpc_agent.store.events import (
    Event,
    Requeued,
    RunEnded,
    parse,
)
from hpc_agent.store.journal import FileLock, Journal
from hpc_agent.store.metrics import EndedRows, gather_table, write_table
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import acquire_driver_lock, open_results
from hpc_agent.store.state import CampaignState, TrialRecord, TrialState

LOCK_TOUCH_S = 30.0  # how often the driver shows it is alive (its lock's mtime)


@dataclass(frozen=True)
class RunResult:
    """How a run ended: ``done``, ``cancelled`` or ``exhausted`` (the space ran out)."""

    status: str
    results: Path
    generations_done: int
    best: TrialRecord | None
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Trials ran, and not one completed: almost always a broken command or environment."""
        return (
            self.status != "cancelled" and sum(self.counts.values()) > 0 and not self.counts.get("completed")
        )


class Schedule(Protocol):
    """The order a driver's phases run in (``[campaign] schedule``), built on one driver."""

    def run(self) -> str:
        """Run until the campaign ends: ``done``, ``exhausted`` or ``cancelled``."""
        ...


class Driver:
    """One campaign's driver: owns the results folder while it runs (one driver per folder).
    It holds the live state, writes the journal (:meth:`record`) and runs the phases; a
    schedule (:meth:`schedule`) says in which order.

    ``planner`` proposes and analyzes; ``executor`` runs the trials; ``fallback_planner``
    (TPE) plans a generation whose planner failed, so a night on the cluster is never lost."""

    def __init__(
        self,
        spec: CampaignSpec,
        results: Path,
        executor: Executor,
        planner: Planner,
        reporter: Reporter | None = None,
        *,
        fallback_planner: Callable[[], Planner] | None = None,
        force: bool = False,
        stop_after: int | None = None,
    ) -> None:
        self.spec = spec
        self.paths = ResultsPaths(results.resolve())  # jobs run elsewhere: every path absolute
        self.journal = Journal(self.paths.journal)
        self.executor = executor
        self.planner = planner
        self.reporter: Reporter = reporter or SilentReporter()
        self.fallback_planner = fallback_planner
        self.force = force
        self.stop_after = stop_after  # run no generation after this one (hpc-agent rerun)
        self.state = CampaignState()
        self.planning = Planning(self)
        self.reconciler = Reconciler(self.paths, spec, executor)
        self.submissions = Submissions(self)
        self._offset = 0  # how far into the journal the state has read
        self._ended_rows = EndedRows()  # the trials table's rows of trials that ended, between gathers
        self._gathered = -1  # state.trial_changes when trials.parquet was last written
        self._lock: FileLock | None = None
        self._locked_at = time.time()
        self._touched_at = 0.0

    # ------------------------------------------------------------------ journal + state
    def record(self, *events: Event) -> None:
        """Write events and apply them; first apply what another process appended."""
        if not events:
            return
        written = self.journal.write(events)
        if written.start != self._offset:
            self._apply_records(self.journal.read_from(self._offset, until=written.start)[0])
        for e in written.events:
            self.state.apply(e)
        self._offset = written.end

    def refresh(self) -> None:
        """Apply what another process (``hpc-agent cancel``) appended since the last look."""
        if self.journal.size() != self._offset:
            records, self._offset = self.journal.read_from(self._offset)
            self._apply_records(records)

    def _apply_records(self, records: Sequence[Mapping[str, object]]) -> None:
        for r in records:
            event = parse(r)
            if event is not None:
                self.state.apply(event)

    # ------------------------------------------------------------------ run
    def run(self, argv: Sequence[str] = ()) -> RunResult:
        """Run or resume the campaign to its end. Takes the driver lock first (UserError if
        another driver holds it), then records the spec (:func:`open_results`): nothing is
        written to a folder another driver is running."""
        self._lock = acquire_driver_lock(self.paths)
        self._locked_at = time.time()  # the last driver, if it died, died before this
        try:
            _journal, messages = open_results(self.spec, self.paths.root, self.force)
            for m in messages:
                self.reporter.info(m)
            self.refresh()
            return self._run(argv)
        except KeyboardInterrupt:
            self.record(RunEnded(status="interrupted"))
            raise
        except BaseException as e:
            if self._offset:
                self.record(RunEnded(status="failed", error=f"{type(e).__name__}: {e}"[:500]))
            raise
        finally:
            self.executor.close()
            self._lock.release()
            self._lock = None

    def _run(self, argv: Sequence[str]) -> RunResult:
        self.record(
            ev.Run(
                pid=os.getpid(),
                host=socket.gethostname(),
                executor=self.executor.describe(),
                planner=self.planner.describe(),
                version=__version__,
                argv=tuple(argv),
            )
        )
        write_run_provenance(self.paths, self.state.runs, Path(self.spec.experiment.workdir))
        again = resumed_after_cancel(self.state)
        if again:
            self.reporter.info(f"resuming {len(again)} trial(s) stopped by `hpc-agent cancel`")
            self.record(*again)
        self.submissions.resolve_pending(self._locked_at)
        status = self.schedule().run()
        if status != "cancelled":
            self.gather()
        self.record(RunEnded(status=status))
        state = self.state
        return RunResult(
            status,
            self.paths.root,
            state.completed_generations(),
            state.best(self.spec.campaign.mode),
            state.counts(),
        )

    def schedule(self) -> Schedule:
        """The schedule this run follows (:class:`hpc_agent.loop.campaign.Campaign` picks it
        by ``[campaign] schedule``)."""
        raise NotImplementedError

    def next_generation(self) -> int | None:
        """The generation to work on, or None when the campaign has as many as it asks for
        (exploration until a stop rule holds, and the confirmations ``[confirm]`` asks for)."""
        generation = self.state.next_generation()
        record = self.state.generations.get(generation)
        if self.stop_after is not None and generation > self.stop_after:
            return None
        if (
            not (record and record.planned)
            and next_kind(self.state, self.spec, self.planning.check_stop()) is None
        ):
            return None
        return generation

    # ------------------------------------------------------------------ 1 propose
    def propose(self, generation: int, size: int | None = None) -> bool:
        """Plan generation g (``planned``): the planner's proposals (with the baseline and the
        champion's control), or a confirmation generation (``[confirm]``). ``size``: the trials
        it may have (async: the free slots; default a full batch). False when nothing is left
        to propose (the campaign ends ``exhausted``)."""
        kind = next_kind(self.state, self.spec, self.planning.check_stop())
        req = self.planning.start(generation, kind or EXPLORE, size)
        if req is None:
            return True
        return self.planning.finish(req, req.ask(self.planner, self.fallback_planner, self.reporter))

    # ------------------------------------------------------------------ 2 prepare
    def prepare(self, generation: int) -> None:
        """A folder per trial of generation g (whatever a killed driver left unwritten)."""
        exp = self.spec.experiment
        base = base_files(self.paths, exp)
        evaluator_snapshot(self.paths, exp, base)
        entries = workdir_entries(Path(exp.workdir), [self.paths.root])
        evaluated = self.spec.evaluated_metrics
        for trial in self.state.trials_of(generation):
            prepare_trial(self.paths, trial, exp, base, self.submissions.secret_env, entries, evaluated)

    # ------------------------------------------------------------------ 3 submit
    def submit(self, generation: int, planned: Sequence[TrialRecord], width: int = 0) -> None:
        """Submit these trials of generation g as ONE submission under a new token, at most
        ``width`` at once until widened (see :meth:`hpc_agent.loop.submit.Submissions.submit`)."""
        self.submissions.submit(generation, planned, width)
        self.reconciler.submitted()

    # ------------------------------------------------------------------ 4 wait
    def wait(self, generation: int) -> bool:
        """Submit what of generation g is planned (and requeued), and reconcile until every
        trial of g is finished; False when the campaign was cancelled meanwhile.

        Two clocks: the ends the runners announce (``gen-NNNN/ended/``) are cheap to look
        for and are looked for often (from 50 ms, backing off to STATUS_INTERVAL_S while
        nothing changes); the scheduler is asked at most once per
        ``executor.poll_interval_s`` (:class:`Reconciler`)."""
        delay = 0.05
        while True:
            self.refresh()
            if self.state.cancelled:
                self.stop_cancelled([generation])
                return False
            mine = self.state.trials_of(generation)
            planned = [trial for trial in mine if trial.state is TrialState.PLANNED]
            if planned:
                self.submit(generation, planned)
                continue
            open_trials = [trial for trial in mine if not trial.state.is_finished()]
            if not open_trials:
                self.report_progress(generation)
                return True
            events = self.reconciler.reconcile(self.state, open_trials)
            if events:
                self.record(*events)  # a cancel appended meanwhile is applied first
                self.record(*verdicts_due(self.state, self.spec))
                for e in events:
                    if isinstance(e, Requeued):
                        self.reporter.info(f"trial {e.trial} requeued: {e.reason}")
            self.report_progress(generation)
            self.touch_lock()
            time.sleep(delay := next_delay(delay, bool(events), len(open_trials), self.executor))

    def touch_lock(self) -> None:
        """Keep the driver lock's mtime fresh (every LOCK_TOUCH_S): this driver is alive."""
        now = time.monotonic()
        if now - self._touched_at > LOCK_TOUCH_S:
            os.utime(self.paths.driver_lock)  # the driver is alive: keep its lock fresh
            self._touched_at = now

    def stop_cancelled(self, generations: Sequence[int]) -> None:
        """``hpc-agent cancel``: what ended before it is recorded as it ended (a completed
        trial stays completed), the rest of these generations is ``cancelled`` (resumed later)."""
        mine = [trial for generation in generations for trial in self.state.trials_of(generation)]
        open_trials = [trial for trial in mine if not trial.state.is_finished()]
        self.record(*self.reconciler.reconcile(self.state, open_trials, poll=False))
        mine = [trial for generation in generations for trial in self.state.trials_of(generation)]
        stopped = [cancelled_by_campaign(trial.trial_id) for trial in mine if not trial.state.is_finished()]
        self.record(*stopped)
        which = ", ".join(str(generation) for generation in generations)
        self.reporter.warn(
            f"campaign cancelled: {len(stopped)} unfinished trial(s) of generation {which} stopped"
        )

    def report_progress(self, generation: int) -> None:
        """Generation g's trials by state and the best so far, to the reporter."""
        counts = self.reconciler.counts(self.state, generation)
        best = self.state.best(self.spec.campaign.mode)
        self.reporter.progress(generation, counts, best.objective if best else None)

    # ------------------------------------------------------------------ 5 gather
    def gather(self) -> None:
        """Every trial's metrics and the journal's records -> trials.parquet (unless it holds
        them already: no trial changed since this driver wrote it, and none runs)."""
        state = self.state
        if (
            self._gathered == state.trial_changes
            and self.paths.trials_table.exists()
            and state.unfinished() == 0
        ):
            return
        table = gather_table(
            self.paths, self.state, self.spec, known=self.reconciler.summaries, ended=self._ended_rows
        )
        write_table(table, self.paths.trials_table)
        self._gathered = self.state.trial_changes

    # ------------------------------------------------------------------ 6 analyze
    def analyze(self, generation: int) -> None:
        """The planner's analysis of generation g -> analysis.md. If the planner fails, or
        wrote the deterministic analysis itself (``Planner.analysis_fallback``), the
        ``analyzed`` event says so: author ``deterministic`` and why."""
        p = self.planning
        p.write_analysis(generation, *p.run_analysis(p.analysis_context(generation)))


def exit_message(result: RunResult) -> str:
    """What the CLI prints when a run ends."""
    lines = [f"{result.status}: {result.generations_done} generation(s) in {result.results}"]
    if result.failed:
        lines.append(
            "failed: no trial completed; see `hpc-agent status` for the reasons and the trials' stderr.log"
        )
    if result.best is not None:
        lines.append(
            f"best: {result.best.objective:.6g} (trial {result.best.trial_id}, {dict(result.best.params)})"
        )
    return "\n".join(lines)

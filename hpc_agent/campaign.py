"""The campaign loop: ``run`` and one method per phase, named as in docs/architecture.md.

::

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
and applies each event as it writes it (:meth:`Campaign._record`); what another process
appended (``hpc-agent cancel``) is read from the byte offset it had reached.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpc_agent import __version__
from hpc_agent._io import atomic_write_json, atomic_write_text
from hpc_agent.analysis import AnalysisContext, deterministic_analysis
from hpc_agent.defaults import STATUS_INTERVAL_S
from hpc_agent.errors import CampaignError, UserError
from hpc_agent.events import (
    Analyzed,
    Event,
    GenerationDone,
    Planned,
    PlanningStarted,
    Requeued,
    RunEnded,
    RunStarted,
    SubmitFailed,
    Submitted,
    Submitting,
    parse,
)
from hpc_agent.executors.base import SECRET_ENV_VARS, Executor, SubmitError, SubmitRequest
from hpc_agent.journal import FileLock, Journal, lock_holder
from hpc_agent.metrics import gather_table, write_table
from hpc_agent.paths import ResultsPaths
from hpc_agent.plan import baseline, fresh, history_keys, trials, validated
from hpc_agent.planners.base import Plan, PlanContext, Planner
from hpc_agent.prepare import base_files, prepare_trial
from hpc_agent.reconcile import Reconciler, cancelled_by_campaign
from hpc_agent.reporter import Reporter, SilentReporter
from hpc_agent.results import open_results
from hpc_agent.spec import CampaignSpec
from hpc_agent.state import CampaignState, TrialRecord, TrialState
from hpc_agent.trial import assign

DRIVER_LOCK_STALE_S = 900.0  # the driver touches its lock every poll; older than this, it died
SUBMIT_TIMEOUT_S = 130.0  # an executor's submit call (sbatch) never outlives this
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


class Campaign:
    """One campaign's driver: owns the results folder while it runs (one driver per folder).

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
    ) -> None:
        self.spec = spec
        self.paths = ResultsPaths(results.resolve())  # jobs run elsewhere: every path absolute
        self.journal = Journal(self.paths.journal)
        self.executor = executor
        self.planner = planner
        self.reporter: Reporter = reporter or SilentReporter()
        self.fallback_planner = fallback_planner
        self.force = force
        self.state = CampaignState()
        self.reconciler = Reconciler(self.paths, spec, executor)
        self._offset = 0  # how far into the journal the state has read
        self._lock = FileLock(self.paths.driver_lock, stale_s=DRIVER_LOCK_STALE_S, timeout_s=0.0)
        self._locked_at = time.time()
        self._touched_at = 0.0
        self._secret_env = tuple(dict.fromkeys((*SECRET_ENV_VARS, spec.planner.api_key_env)))

    # ------------------------------------------------------------------ journal + state
    def _record(self, *events: Event) -> None:
        """Write events and apply them; first apply what another process appended."""
        if not events:
            return
        written = self.journal.write(events)
        if written.start != self._offset:
            self._apply_records(self.journal.read_from(self._offset, until=written.start)[0])
        for e in written.events:
            self.state.apply(e)
        self._offset = written.end

    def _refresh(self) -> None:
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
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self._take_driver_lock()
        try:
            _journal, messages = open_results(self.spec, self.paths.root, self.force)
            for m in messages:
                self.reporter.info(m)
            self._refresh()
            return self._run(argv)
        except KeyboardInterrupt:
            self._record(RunEnded(status="interrupted"))
            raise
        except BaseException as e:
            if self._offset:
                self._record(RunEnded(status="failed", error=f"{type(e).__name__}: {e}"[:500]))
            raise
        finally:
            self.executor.close()
            self._lock.release()

    def _take_driver_lock(self) -> None:
        try:
            self._lock.acquire()
        except CampaignError:
            host, pid = lock_holder(self.paths.driver_lock) or ("?", "?")
            raise UserError(
                f"another hpc-agent driver (pid {pid} on {host}) is running this campaign "
                f"({self.paths.root})",
                fix="watch it with `hpc-agent status`, or stop it first; if it is dead, remove "
                f"{self.paths.driver_lock}",
            ) from None
        self._locked_at = time.time()  # the last driver, if it died, died before this

    def _run(self, argv: Sequence[str]) -> RunResult:
        self._record(
            RunStarted(
                pid=os.getpid(),
                host=socket.gethostname(),
                executor=self.executor.describe(),
                planner=self.planner.describe(),
                version=__version__,
                argv=tuple(argv),
            )
        )
        self._resume_after_cancel()
        self._resolve_pending_submissions()
        status = "done"
        while (g := self._next_generation()) is not None:
            gen = self.state.generations.get(g)
            if not (gen and gen.planned) and not self.propose(g):
                status = "exhausted"
                break
            self.prepare(g)
            if not self.wait(g):
                status = "cancelled"
                break
            self.gather()
            if not self.state.generations[g].analyzed:
                self.analyze(g)
            self._record(GenerationDone(generation=g))
        if status != "cancelled":
            self.gather()
        self._record(RunEnded(status=status))
        st = self.state
        return RunResult(
            status, self.paths.root, st.completed_generations(), st.best(self.spec.campaign.mode), st.counts()
        )

    def _next_generation(self) -> int | None:
        """The generation to work on, or None when the campaign has as many as it asks for."""
        g = self.state.next_generation()
        gen = self.state.generations.get(g)
        if g >= self.spec.campaign.generations and not (gen and gen.planned):
            return None
        return g

    # ------------------------------------------------------------------ 1 propose
    def propose(self, g: int) -> bool:
        """Ask the planner for generation g and record its trials (``planned``); False when
        nothing is left to propose (the campaign ends ``exhausted``)."""
        spec = self.spec
        seen = history_keys(self.state)
        head = baseline(spec, g, seen)
        planner_name = self.planner.describe()
        self._record(PlanningStarted(generation=g, planner=planner_name))
        ctx = self._plan_context(g, spec.campaign.batch_size - len(head), seen)
        notes: list[str] = []
        plan = self._ask_planner(ctx) if ctx.n > 0 else Plan(())
        notes.append(plan.note)
        proposals = head + fresh(validated(spec, plan.proposals, notes), set(seen), notes)
        note = "; ".join(n for n in notes if n)
        if not proposals:
            self.reporter.warn(
                f"generation {g}: nothing left to propose ({note or 'the planner proposed nothing'}); "
                "the campaign ends here"
            )
            return False
        planned = trials(g, proposals, spec.campaign.seeds)
        plan_json = {"generation": g, "planner": planner_name, "note": note, "rationale": plan.rationale}
        atomic_write_json(self.paths.plan(g), {**plan_json, "trials": [t.to_dict() for t in planned]})
        self._record(Planned(generation=g, planner=planner_name, note=note, trials=planned))
        if note:
            self.reporter.info(f"generation {g}: {note}")
        return True

    def _plan_context(self, g: int, n: int, seen: set[str]) -> PlanContext:
        spec, st = self.spec, self.state
        return PlanContext(
            spec=spec,
            generation=g,
            n=n,
            history=tuple(st.configs()),
            champion=st.champion(spec.campaign.mode),
            analyses=tuple(self._analyses(g)),
            generations_left=max(1, spec.campaign.generations - g),
            results_dir=self.paths.root,
            seed=spec.campaign.seed,
            extra_seen=frozenset(seen),
        )

    def _ask_planner(self, ctx: PlanContext) -> Plan:
        try:
            return self.planner.propose(ctx)
        except UserError:
            raise
        except Exception as e:  # a planner bug must not cost a night on the cluster
            if self.fallback_planner is None:
                raise
            self.reporter.warn(
                f"planner {self.planner.describe()} failed ({type(e).__name__}: {e}); using TPE"
            )
            plan = self.fallback_planner().propose(ctx)
            return Plan(
                plan.proposals, f"planner failed ({type(e).__name__}: {e}); TPE planned this generation"
            )

    def _analyses(self, before: int) -> list[tuple[int, str]]:
        out = []
        for g, rec in self.state.generations.items():
            if g < before and rec.analyzed:
                try:
                    out.append((g, self.paths.analysis(g).read_text(encoding="utf-8")))
                except FileNotFoundError:
                    pass
        return out

    # ------------------------------------------------------------------ 2 prepare
    def prepare(self, g: int) -> None:
        """A folder per trial of generation g (whatever a killed driver left unwritten)."""
        exp = self.spec.experiment
        base = base_files(self.paths, exp)
        for t in self.state.trials_of(g):
            prepare_trial(self.paths, t, exp, base, self._secret_env)

    # ------------------------------------------------------------------ 3 submit
    def submit(self, g: int, planned: Sequence[TrialRecord]) -> None:
        """Submit these trials of generation g as ONE submission under a new token. The trials
        are assigned to it before the executor is called (:func:`hpc_agent.trial.assign`)."""
        token = secrets.token_hex(4)
        req = self._request(g, token, [t.trial_id for t in planned])
        self._record(Submitting(generation=g, token=token, trials=req.trial_ids, executor=self.executor.name))
        self._assign(req.trial_ids, token)
        try:
            sub = self.executor.submit(req)
        except SubmitError as e:
            self._assign(req.trial_ids, None)  # a chunk that did go through must not run them
            self._record(SubmitFailed(token=token, error=e.message[:2000], job_ids=tuple(e.job_ids)))
            if e.job_ids:
                self.executor.cancel(e.job_ids)
            raise UserError(
                f"the scheduler refused generation {g}'s jobs: {e.message}",
                fix=e.fix
                or "fix the profile or [executor] values it names, then run again "
                "(nothing was lost: the trials are still planned)",
                log=e.script or None,
            ) from None
        self._record(Submitted(token=token, job_ids=tuple(sub.job_ids), trial_jobs=sub.trial_jobs))
        self.reconciler.submitted()
        arrays = sorted({j.split("_")[0] for j in sub.job_ids})
        jobs = "job " + ", ".join(arrays) if len(arrays) <= 3 else f"{len(arrays)} jobs"
        self.reporter.info(f"generation {g}: submitted {len(planned)} trial(s) as {jobs}")

    def _request(self, g: int, token: str, ids: Sequence[str]) -> SubmitRequest:
        return SubmitRequest(
            token=token,
            generation=g,
            campaign=self.spec.name,
            trial_ids=tuple(ids),
            trial_dirs=tuple(str(self.paths.trial(t).root) for t in ids),
            queue_dir=str(self.paths.submission(g, token)),
            submitit_dir=str(self.paths.submitit),
            timeout_min=self.spec.experiment.job_timeout_min,
            scrub_env=self._secret_env,
        )

    def _assign(self, trial_ids: Sequence[str], token: str | None) -> None:
        for tid in trial_ids:
            assign(self.paths.trial(tid).root, token)

    def _resolve_pending_submissions(self) -> None:
        """The driver died between 'submitting' and 'submitted': find what was submitted.

        "No job found" is believed only once no request of that submission can still reach
        the scheduler: the dead driver's sbatch died with it (PR_SET_PDEATHSIG), and a request
        it had sent is acted on within ``executor.settle_s`` of that death (at the latest when
        the next driver started). Then the trials are unassigned *before* a last look, so that
        a job that appears even later cannot run them, and a job that got in before the last
        look is adopted."""
        for sub in self.state.pending_submissions():
            req = self._request(sub.generation, sub.token, sub.trial_ids)
            found = self._find_settled(req, sub.at)
            if not found:
                self._assign(sub.trial_ids, None)
                found = self.executor.find(req)
                if found:
                    self._assign(sub.trial_ids, sub.token)
            if found:
                self.reporter.info(f"re-attached to {len(found)} job(s) of an interrupted submission")
                self._record(Submitted(token=sub.token, job_ids=tuple(found), recovered=True))
            else:
                error = "the driver stopped before the scheduler answered; no job found"
                self._record(SubmitFailed(token=sub.token, error=error))

    def _find_settled(self, req: SubmitRequest, submitting_at: float) -> list[str]:
        """``executor.find`` until it finds the jobs or the submission has settled."""
        later_runs = [t for t in self.state.run_times if t > submitting_at]
        died_by = min(later_runs[0] if later_runs else self._locked_at, submitting_at + SUBMIT_TIMEOUT_S)
        settle_until = died_by + self.executor.settle_s
        found = self.executor.find(req)
        if found or time.time() >= settle_until:
            return found
        self.reporter.info(
            f"an interrupted submission ({req.job_name}) has no job yet: looking again for "
            f"{settle_until - time.time():.0f} s before submitting its trials anew"
        )
        while not found and time.time() < settle_until:
            time.sleep(min(2.0, max(0.0, settle_until - time.time())))
            found = self.executor.find(req)
        return found

    def _resume_after_cancel(self) -> None:
        """Trials stopped by `hpc-agent cancel` in an unfinished generation run again."""
        again = [
            Requeued(trial=t.trial_id, reason="resumed after hpc-agent cancel", counted=False)
            for t in self.state.trials.values()
            if t.by_campaign_cancel
            and t.state is TrialState.CANCELLED
            and not self.state.generations[t.generation].done
        ]
        if again:
            self.reporter.info(f"resuming {len(again)} trial(s) stopped by `hpc-agent cancel`")
            self._record(*again)

    # ------------------------------------------------------------------ 4 wait
    def wait(self, g: int) -> bool:
        """Submit what of generation g is planned (and requeued), and reconcile until every
        trial of g is finished; False when the campaign was cancelled meanwhile.

        Two clocks: the trials' status files are cheap to read and are checked often (from
        50 ms, backing off to STATUS_INTERVAL_S while nothing changes); the scheduler is
        asked at most once per ``executor.poll_interval_s`` (:class:`Reconciler`)."""
        delay = 0.05
        while True:
            self._refresh()
            if self.state.cancelled:
                self._stop_cancelled(g)
                return False
            mine = self.state.trials_of(g)
            planned = [t for t in mine if t.state is TrialState.PLANNED]
            if planned:
                self.submit(g, planned)
                continue
            open_trials = [t for t in mine if not t.state.is_finished()]
            if not open_trials:
                self._report_progress(g)
                return True
            events = self.reconciler.reconcile(self.state, open_trials)
            if events:
                self._record(*events)  # a cancel appended meanwhile is applied first
                for e in events:
                    if isinstance(e, Requeued):
                        self.reporter.info(f"trial {e.trial} requeued: {e.reason}")
            self._report_progress(g)
            self._touch_lock()
            delay = 0.05 if events else min(delay * 1.5, STATUS_INTERVAL_S, self.executor.poll_interval_s)
            time.sleep(delay)

    def _touch_lock(self) -> None:
        now = time.monotonic()
        if now - self._touched_at > LOCK_TOUCH_S:
            os.utime(self.paths.driver_lock)  # the driver is alive: keep its lock fresh
            self._touched_at = now

    def _stop_cancelled(self, g: int) -> None:
        stopped = [
            cancelled_by_campaign(t.trial_id) for t in self.state.trials_of(g) if not t.state.is_finished()
        ]
        self._record(*stopped)
        self.reporter.warn(
            f"campaign cancelled: {len(stopped)} unfinished trial(s) of generation {g} stopped"
        )

    def _report_progress(self, g: int) -> None:
        counts = self.state.counts(g)
        running = self.reconciler.running(self.state.trials_of(g))
        counts["submitted"] -= running
        counts["running"] = running
        best = self.state.best(self.spec.campaign.mode)
        self.reporter.progress(g, counts, best.objective if best else None)

    # ------------------------------------------------------------------ 5 gather
    def gather(self) -> None:
        """Every trial's metrics and the journal's records -> trials.parquet."""
        write_table(gather_table(self.paths, self.state, self.spec), self.paths.trials_table)

    # ------------------------------------------------------------------ 6 analyze
    def analyze(self, g: int) -> None:
        """The planner's analysis of generation g (the deterministic one if it fails) ->
        analysis.md; the ``analyzed`` event names who wrote it."""
        import polars as pl  # the driver loads Polars for the analysis, not to plan or poll

        table = pl.read_parquet(self.paths.trials_table)
        ctx = AnalysisContext(self.spec, g, self.state, table, tuple(self._analyses(g)), self.paths.root)
        author = self.planner.describe()
        try:
            text = self.planner.analyze(ctx)
        except Exception as e:
            self.reporter.warn(f"analysis by {author} failed ({e}); writing the deterministic one")
            text, author = deterministic_analysis(ctx), "hpc-agent (deterministic)"
        atomic_write_text(self.paths.analysis(g), text.rstrip() + "\n")
        self._record(Analyzed(generation=g, author=author))
        self.reporter.generation_done(g, text)


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

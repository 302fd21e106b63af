"""The planner's side of the loop: planning a generation (phase 1) and analyzing one (phase 6),
and the stop rules that decide whether the search plans any more.

:class:`Planning` is what both schedules (``[campaign] schedule``) call: the sync loop in
:mod:`hpc_agent.loop.sync` one generation after another, the async one in
:mod:`hpc_agent.loop.overlap` with the planner's calls on a thread of their own, which is why a plan
is begun (:meth:`Planning.start`, journaled ``planning``), asked (:meth:`PlanRequest.ask`, no
side effect) and recorded (:meth:`Planning.finish`, ``planned``) in three steps, and an
analysis likewise (:meth:`Planning.analysis_context` copies the state it reads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hpc_agent.job.fileio import atomic_write_text, dumps_listing
from hpc_agent.loop.live import LiveDriver
from hpc_agent.loop.propose import (
    CONFIRM,
    EXPLORE,
    ask_planner,
    baseline,
    champion_controls,
    confirm_trials,
    control_trials,
    explored,
    fresh,
    generations_left,
    history_keys,
    next_kind,
    noise_seeds,
    replicate_trials,
    trials,
    validated,
)
from hpc_agent.loop.reporter import Reporter
from hpc_agent.planners.base import Plan, PlanContext, Planner, Proposal
from hpc_agent.science.analysis import AnalysisContext, deterministic_analysis
from hpc_agent.science.budget import (
    GpuMeter,
    Stop,
    Used,
    describe,
    hours_since_start,
    search_trials,
    stop_rule,
    trial_limit,
    used,
)
from hpc_agent.science.rigor import REPLICATE, noise
from hpc_agent.store import events as ev
from hpc_agent.store.events import Analyzed, Planned, PlannedTrial, Stopped
from hpc_agent.store.results import analyses_before
from hpc_agent.store.state import CampaignState


@dataclass(frozen=True)
class PlanRequest:
    """A generation being planned: what the planner is asked (``ctx``), and what the campaign
    adds to its proposals (the candidates' ``replicates`` first, the baseline ``head``, the
    first proposal's ``first_seeds`` (generation 0's noise runs), the champion's control)."""

    generation: int
    planner: str
    ctx: PlanContext
    head: tuple[Proposal, ...] = ()
    controls: bool = False
    replicates: tuple[PlannedTrial, ...] = ()
    first_seeds: tuple[int, ...] = ()

    def ask(self, planner: Planner, fallback: Callable[[], Planner] | None, reporter: Reporter) -> Plan:
        """The planner's plan (:func:`hpc_agent.loop.propose.ask_planner`); nothing to ask: an empty one."""
        return ask_planner(planner, self.ctx, fallback, reporter) if self.ctx.n > 0 else Plan(())


class Planning:
    """Plans and analyses of one campaign, on its driver: ``record`` journals events (the
    driver's live state follows), ``state`` reads the live state."""

    def __init__(self, driver: LiveDriver) -> None:
        self.driver = driver
        self.spec = driver.spec
        self.paths = driver.paths
        self.planner = driver.planner
        self.fallback_planner = driver.fallback_planner
        self.reporter = driver.reporter
        self.record = driver.record
        self.gpu = GpuMeter(driver.paths)
        self._analyses: dict[int, str] = {}  # generation -> its analysis.md, once read
        self._used_at: tuple[tuple[int, float], Used] | None = None  # (state.events, gpu), counts

    @property
    def state(self) -> CampaignState:
        """The campaign's live state."""
        return self.driver.state

    def check_stop(self) -> Stop | None:
        """The stop rule that holds now (:mod:`hpc_agent.science.budget`), journaled (``stopped``) the
        first time it holds in this run."""
        spec, state = self.spec, self.state
        gpu = self.gpu.hours(state) if spec.stop.max_gpu_hours else 0.0
        stop = stop_rule(spec, self._used(gpu), explored(state))
        if stop is not None and state.stopped != stop.rule:
            self.record(Stopped(rule=stop.rule, detail=stop.detail))
            if stop.rule != "generations":
                self.reporter.info(f"the search stops: {stop.detail}")
        return stop

    def start(self, generation: int, kind: str, size: int | None = None) -> PlanRequest | None:
        """Begin planning generation g (``planning``): a confirmation or replicate generation is
        planned at once (None); otherwise what the planner is to be asked, for the slots the
        candidates' replicates, the noise runs and the control leave."""
        spec, state = self.spec, self.state
        if kind in (CONFIRM, REPLICATE):
            self.record(ev.Planning(generation=generation, planner=kind))
            planned = (
                confirm_trials(state, spec, generation)
                if kind == CONFIRM
                else replicate_trials(state, spec, generation)
            )
            self._planned(generation, kind, planned, "", "")
            return None
        seen = history_keys(state)
        head = baseline(spec, generation, seen)
        room = spec.campaign.batch_trials if size is None else size
        limit = trial_limit(spec)
        if limit:
            room = min(room, limit - len(search_trials(state)))
        replicates = replicate_trials(state, spec, generation, room=room) if spec.rigor.replicate else ()
        first = noise_seeds(state, spec, generation)
        seeds = len(spec.campaign.seeds)
        slots = (room - len(replicates) - max(0, len(first) - seeds)) // seeds
        controls = slots >= 2 and bool(control_trials(state, spec, generation, 0))  # a control takes a slot
        planner_name = self.planner.describe()
        self.record(ev.Planning(generation=generation, planner=planner_name))
        ctx = self._context(generation, max(0, slots - len(head) - controls), seen)
        return PlanRequest(generation, planner_name, ctx, tuple(head), controls, replicates, first)

    def finish(self, req: PlanRequest, plan: Plan) -> bool:
        """Generation ``req.generation`` planned with ``plan`` (``planned``); False when
        nothing is left to propose."""
        spec, generation = self.spec, req.generation
        notes = [plan.note]
        proposals = list(req.head) + fresh(
            validated(spec, plan.proposals, notes), set(req.ctx.extra_seen), notes
        )
        note = "; ".join(n for n in notes if n)
        if not proposals and spec.code_first and not req.replicates:
            return self._champion_controls(req, note)
        if not proposals and not req.replicates:
            self.reporter.warn(
                f"generation {generation}: nothing left to propose "
                f"({note or 'the planner proposed nothing'}); the campaign ends here"
            )
            return False
        planned = req.replicates + trials(
            generation, proposals, spec.campaign.seeds, len(req.replicates), req.first_seeds
        )
        if req.controls and proposals:
            planned += control_trials(self.state, spec, generation, len(planned))
        return self._planned(generation, req.planner, planned, note, plan.rationale)

    def _champion_controls(self, req: PlanRequest, note: str) -> bool:
        """A code-first generation with no code change to run: the champion's code again
        (:func:`hpc_agent.loop.propose.champion_controls`), said in the plan's note and on the terminal;
        False (the campaign ends) when there is nothing to run again either."""
        generation, why = req.generation, note or f"{req.planner} proposed no code change"
        planned = champion_controls(self.state, self.spec, generation, max(1, req.ctx.n + req.controls), why)
        if not planned:
            self.reporter.warn(
                f"generation {generation}: no code change to run ({why}) and no configuration that "
                "completed to run again; the campaign ends here"
            )
            return False
        note = f"no code change to run ({why}): {len(planned)} control(s) of {planned[0].config}"
        return self._planned(generation, req.planner, planned, note, "")

    def _planned(
        self, generation: int, planner: str, planned: tuple[PlannedTrial, ...], note: str, why: str
    ) -> bool:
        plan_json = {"generation": generation, "planner": planner, "note": note, "rationale": why}
        atomic_write_text(
            self.paths.plan(generation),
            dumps_listing(plan_json, "trials", [trial.to_dict() for trial in planned]),
        )
        self.record(Planned(generation=generation, planner=planner, note=note, trials=planned))
        if note:
            self.reporter.info(f"generation {generation}: {note}")
        return True

    def _context(self, generation: int, n: int, seen: set[str]) -> PlanContext:
        spec, state = self.spec, self.state
        history = tuple(c for c in state.configs() if not c.purpose)  # confirmations: another budget
        return PlanContext(
            spec=spec,
            generation=generation,
            n=n,
            history=history,
            champion=state.champion(spec.campaign.mode),
            analyses=tuple(analyses_before(self.paths, self.state, generation, self._analyses)),
            generations_left=generations_left(state, spec, generation),
            results_dir=self.paths.root,
            seed=spec.campaign.seed,
            extra_seen=frozenset(seen),
            noise=noise(history),
            budget=self.budget_text(),
        )

    def budget_text(self) -> str:
        """The budget used and left, in words (:func:`hpc_agent.science.budget.describe`)."""
        gpu = self.gpu.hours(self.state) if self.spec.stop.max_gpu_hours else 0.0
        return describe(self.spec, self._used(gpu))

    def _used(self, gpu_hours: float) -> Used:
        """:func:`hpc_agent.science.budget.used`, its counts kept until the next event (the stop rules
        and the budget's words are asked for several times a generation; each count goes
        through every trial); the hours are always now's."""
        key = (self.state.events, gpu_hours)
        if self._used_at is None or self._used_at[0] != key:
            self._used_at = (key, used(self.state, self.spec, gpu_hours))
        return replace(self._used_at[1], hours=hours_since_start(self.state))

    # ------------------------------------------------------------------ analyses
    def analysis_context(self, generation: int, plan_for: int | None = None) -> AnalysisContext:
        """What the analysis of generation g is given (a copy of the state: an async schedule
        analyzes on the planner's thread while the loop goes on). ``plan_for``: the generation
        its proposals are for, when the next one is the search's (default: g + 1)."""
        import polars as pl  # the driver loads Polars for the analysis, not to plan or poll

        spec, state = self.spec, self.state
        holdout = list(spec.campaign.holdout_metrics)
        table = pl.read_parquet(self.paths.trials_table).drop(holdout, strict=False)  # never shown
        analyses = tuple(analyses_before(self.paths, state, generation, self._analyses))
        nxt = plan_for if plan_for is not None else generation + 1
        plans = nxt not in state.generations and next_kind(state, spec, self.check_stop()) == EXPLORE
        return AnalysisContext(
            spec,
            generation,
            state.snapshot(),
            table,
            analyses,
            self.paths.root,
            plan_for=nxt if plans else None,
            generations_left=generations_left(state, spec, nxt),
            budget=self.budget_text(),
        )

    def run_analysis(self, ctx: AnalysisContext) -> tuple[str, str, str]:
        """(text, why it is the deterministic one or "", author): the planner's analysis."""
        author = self.planner.describe()
        try:
            text = self.planner.analyze(ctx)
            fallback = self.planner.analysis_fallback
        except Exception as e:
            text, fallback = deterministic_analysis(ctx), f"analysis by {author} failed ({e})"
        return text, fallback, author

    def write_analysis(self, generation: int, text: str, fallback: str, author: str) -> None:
        """analysis.md of generation g, and ``analyzed``."""
        if fallback.startswith(f"analysis by {author} failed"):
            self.reporter.warn(f"{fallback}; writing the deterministic one")
        atomic_write_text(self.paths.analysis(generation), text.rstrip() + "\n")
        self.record(
            Analyzed(generation=generation, author="deterministic" if fallback else author, fallback=fallback)
        )
        self.reporter.generation_done(generation, text)

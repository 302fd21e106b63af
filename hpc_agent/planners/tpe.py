"""Optuna's TPE through ask/tell, a batch per generation, with a share of refinement.

The study is rebuilt in memory from the journal's history every generation (Optuna's own
storage is not a second source of truth): finished configurations are told with their mean
objective over seeds (or as FAIL), configurations still in flight are added as RUNNING so
that TPE's *constant liar* steers the new batch away from them, and the batch is asked one
by one, each ask lying about the previous ones. Every random choice is seeded from the
campaign seed and the generation, so the same history gives the same plan.

Two strategies (``[planner] tpe_strategy``), chosen by ``bench/bench_search.py``:

* ``refine`` (the default): once TPE has its start-up trials, part of each batch refines the
  best configurations (:mod:`hpc_agent.planners.refine`: a quarter of the batch in the first
  modelled generation, three quarters in the last) and TPE asks the rest. At 6 generations
  x 8 its regret is 0.78x sequential TPE's at the same 48 trials, averaged over 10
  benchmarks (``liar``: 1.02x; docs/benchmarks.md).
* ``liar``: TPE asks the whole batch (the planner before issue 13).

Duplicates (frequent in int and choice spaces) are re-asked a few times, then replaced by
unseen random configurations; a space with nothing left unseen gives a shorter batch.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState as OptunaState
from optuna.trial import create_trial

from hpc_agent.config.defaults import DEFAULT_TPE_STARTUP_TRIALS, DEFAULT_TPE_STRATEGY
from hpc_agent.config.schema import validated
from hpc_agent.config.space import ChoiceParam, FloatParam, IntParam, Space
from hpc_agent.config.spec import CampaignSpec, PlannerSection
from hpc_agent.planners.base import CANNOT_WRITE_CODE, Plan, PlanContext, Planner, Proposal, fill_random, fits
from hpc_agent.planners.refine import refine_count, refinements

REASKS = 8  # asks per slot before a duplicate is replaced by a random unseen configuration


def distributions(space: Space) -> dict[str, BaseDistribution]:
    """Optuna's distribution for every parameter of the space, by name."""
    out: dict[str, BaseDistribution] = {}
    for p in space.params:
        if isinstance(p, FloatParam):
            out[p.name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            out[p.name] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, ChoiceParam):
            out[p.name] = CategoricalDistribution(list(p.values))
    return out


class TPEPlanner(Planner):
    """Multivariate TPE with constant liar, plus the ``refine`` share (see the module docstring).
    Deterministic given the history, the seed and the generation."""

    name = "tpe"

    def __init__(
        self, startup_trials: int = DEFAULT_TPE_STARTUP_TRIALS, strategy: str = DEFAULT_TPE_STRATEGY
    ) -> None:
        # what is valid is said once, by [planner]'s declaration (a spec's values pass it already)
        validated(
            PlannerSection, {"tpe_startup_trials": startup_trials, "tpe_strategy": strategy}, "[planner]"
        )
        self.startup_trials = startup_trials
        self.strategy = strategy

    def describe(self) -> str:
        return self.name if self.strategy == DEFAULT_TPE_STRATEGY else f"{self.name} ({self.strategy})"

    @classmethod
    def for_spec(cls, spec: CampaignSpec) -> TPEPlanner:
        """A TPE planner with the campaign's ``tpe_startup_trials`` and ``tpe_strategy``."""
        return cls(spec.planner.tpe_startup_trials, spec.planner.tpe_strategy)

    def propose(self, ctx: PlanContext) -> Plan:
        """``ctx.n`` unseen configurations: the history told to an in-memory study (in flight as
        RUNNING: constant liar), then asked one by one; duplicates re-asked, then
        replaced by random unseen ones."""
        if not ctx.space.params:
            return Plan((), CANNOT_WRITE_CODE.format(self.name))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dists = distributions(ctx.space)
        seed = (ctx.seed * 1_000_003 + ctx.generation) % (2**32)
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=self.startup_trials,
            constant_liar=True,
            multivariate=True,
        )
        direction: Literal["minimize", "maximize"] = (
            "minimize" if ctx.spec.campaign.mode == "min" else "maximize"
        )
        study = optuna.create_study(direction=direction, sampler=sampler)
        study.add_trials(self._history(ctx, dists))
        seen = ctx.seen_keys()
        rng = random.Random(seed)
        n_refine = self._refine_count(ctx)
        proposals, replaced = self._ask(ctx, study, dists, ctx.n - n_refine, seen, rng)
        refined = refinements(ctx, n_refine, seen, proposals, rng) if n_refine else []
        for p in refined:
            _pending(study, p, dists)
        proposals += refined
        if len(proposals) < ctx.n:  # the neighbourhood ran out: TPE fills the batch
            more, more_replaced = self._ask(ctx, study, dists, ctx.n - len(proposals), seen, rng)
            proposals += more
            replaced += more_replaced
        notes = []
        if refined:
            notes.append(f"{len(refined)} of {len(proposals)} refine the best configurations")
        if replaced:
            notes.append(f"{replaced} duplicate TPE suggestion(s) replaced by unseen random configurations")
        if len(proposals) < ctx.n:
            notes.append(f"the space has no more unseen configurations: proposed {len(proposals)} of {ctx.n}")
        return Plan(tuple(proposals), "; ".join(notes))

    def _refine_count(self, ctx: PlanContext) -> int:
        if self.strategy != "refine":
            return 0
        finished = sum(1 for c in ctx.history if c.objective is not None and not c.pending)
        if finished < max(2, self.startup_trials):
            return 0  # TPE is still sampling at random: nothing to refine yet
        return refine_count(ctx.n, ctx.generation, ctx.generation + ctx.generations_left)

    def _ask(
        self,
        ctx: PlanContext,
        study: optuna.Study,
        dists: dict[str, BaseDistribution],
        n: int,
        seen: set[str],
        rng: random.Random,
    ) -> tuple[list[Proposal], int]:
        """Up to ``n`` unseen TPE suggestions (each asked trial stays RUNNING in the study: the
        liar), and how many had to be replaced by random unseen configurations."""
        proposals: list[Proposal] = []
        replaced = 0
        for _ in range(n):
            chosen = None
            for _ in range(REASKS):
                trial = study.ask(dists)
                params, errors = ctx.space.validate(trial.params)
                if errors:  # pragma: no cover - optuna samples inside the distributions
                    continue
                key = Space.key(params)
                if key not in seen:
                    seen.add(key)
                    chosen = Proposal(params, hypothesis=_hypothesis(ctx), source="tpe")
                    break
            if chosen is None:
                extra = fill_random(ctx.space, 1, seen, rng, source="tpe-random")
                if not extra:
                    break
                chosen = extra[0]
                replaced += 1
                _pending(study, chosen, dists)
            proposals.append(chosen)
        return proposals, replaced

    def _history(self, ctx: PlanContext, dists: dict[str, BaseDistribution]) -> list[Any]:
        trials = []
        for c in ctx.history:
            if not fits(ctx.space, c.params):
                continue  # from before a --force change of the space
            params = {k: c.params[k] for k in dists}
            if c.pending:
                trials.append(create_trial(state=OptunaState.RUNNING, params=params, distributions=dists))
            elif c.objective is not None:
                trials.append(create_trial(params=params, distributions=dists, value=float(c.objective)))
            else:
                trials.append(create_trial(state=OptunaState.FAIL, params=params, distributions=dists))
        return trials


def _pending(study: optuna.Study, p: Proposal, dists: dict[str, BaseDistribution]) -> None:
    """Tell the study about a proposal it did not ask for, as running: the liar covers it too."""
    study.add_trial(create_trial(state=OptunaState.RUNNING, params=dict(p.params), distributions=dists))


def _hypothesis(ctx: PlanContext) -> str:
    done = sum(1 for c in ctx.history if c.objective is not None)
    if done == 0:
        return "TPE: initial exploration (no finished trials yet)"
    best = ctx.champion
    tail = f" (best so far {best.objective:.4g})" if best and best.objective is not None else ""
    return f"TPE: expected improvement given {done} finished configurations{tail}"

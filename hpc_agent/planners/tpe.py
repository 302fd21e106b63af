"""Optuna's TPE through ask/tell, a batch per generation.

The study is rebuilt in memory from the journal's history every generation (Optuna's own
storage is not a second source of truth): finished configurations are told with their mean
objective over seeds (or as FAIL), configurations still in flight are added as RUNNING so
that TPE's *constant liar* steers the new batch away from them, and the batch is asked one
by one, each ask lying about the previous ones. The sampler is seeded from the campaign seed
and the generation, so the same history gives the same plan.

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

from hpc_agent.planners.base import Plan, PlanContext, Planner, Proposal, fill_random, fits
from hpc_agent.space import ChoiceParam, FloatParam, IntParam, Space

REASKS = 8  # asks per slot before a duplicate is replaced by a random unseen configuration


def distributions(space: Space) -> dict[str, BaseDistribution]:
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
    name = "tpe"

    def __init__(self, startup_trials: int = 8) -> None:
        self.startup_trials = startup_trials

    def propose(self, ctx: PlanContext) -> Plan:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = ctx.space
        dists = distributions(space)
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
        proposals: list[Proposal] = []
        replaced = 0
        for _ in range(ctx.n):
            chosen = None
            for _ in range(REASKS):
                trial = study.ask(dists)
                params, errors = space.validate(trial.params)
                if errors:  # pragma: no cover - optuna samples inside the distributions
                    continue
                key = Space.key(params)
                if key not in seen:
                    seen.add(key)
                    chosen = Proposal(params, hypothesis=_hypothesis(ctx), source="tpe")
                    break
            if chosen is None:
                extra = fill_random(space, 1, seen, rng, source="tpe-random")
                if not extra:
                    break
                chosen = extra[0]
                replaced += 1
                study.add_trial(
                    create_trial(state=OptunaState.RUNNING, params=dict(chosen.params), distributions=dists)
                )
            proposals.append(chosen)
        notes = []
        if replaced:
            notes.append(f"{replaced} duplicate TPE suggestion(s) replaced by unseen random configurations")
        if len(proposals) < ctx.n:
            notes.append(f"the space has no more unseen configurations: proposed {len(proposals)} of {ctx.n}")
        return Plan(tuple(proposals), "; ".join(notes))

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


def _hypothesis(ctx: PlanContext) -> str:
    done = sum(1 for c in ctx.history if c.objective is not None)
    if done == 0:
        return "TPE: initial exploration (no finished trials yet)"
    best = ctx.champion
    tail = f" (best so far {best.objective:.4g})" if best and best.objective is not None else ""
    return f"TPE: expected improvement given {done} finished configurations{tail}"

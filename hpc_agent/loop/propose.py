"""Turning a planner's proposals into a generation's trials.

Whatever the planner, its proposals are held to the same rules here: every configuration is
validated by :meth:`Space.validate` (the invalid ones are dropped, with their reason in the
plan's note), duplicates of the history and of each other are dropped, generation 0 starts
with the baseline (the space's defaults) when there is one, and each proposal becomes one
trial per seed of ``[campaign] seeds``, sharing a config id. The campaign's own trials are
planned here too: generation 0's noise runs and the champion's controls (the noise floor), the
candidates' replicates, and the confirmation generations (:mod:`hpc_agent.science.rigor`, ``[rigor]``
and ``[confirm]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from hpc_agent.config.space import Space
from hpc_agent.config.spec import CampaignSpec
from hpc_agent.errors import UserError
from hpc_agent.job.trial import trial_id
from hpc_agent.loop.reporter import Reporter
from hpc_agent.planners.base import Plan, PlanContext, Planner, Proposal, unique
from hpc_agent.science.budget import SEARCH_PURPOSES, Stop, search_trials, trial_limit
from hpc_agent.science.rigor import REPLICATE
from hpc_agent.store.events import PlannedTrial
from hpc_agent.store.state import CampaignState, ConfigResult


def ask_planner(
    planner: Planner, ctx: PlanContext, fallback: Callable[[], Planner] | None, reporter: Reporter
) -> Plan:
    """``planner.propose(ctx)``; a planner that crashes (a bug, not a user error) is replaced
    for this generation by ``fallback`` (TPE), and the plan's note says why: a planner's bug
    must not cost a night on the cluster."""
    try:
        return planner.propose(ctx)
    except UserError:
        raise
    except Exception as e:
        if fallback is None:
            raise
        reporter.warn(f"planner {planner.describe()} failed ({type(e).__name__}: {e}); using TPE")
        plan = fallback().propose(ctx)
        return Plan(plan.proposals, f"planner failed ({type(e).__name__}: {e}); TPE planned this generation")


def history_keys(state: CampaignState) -> set[str]:
    """Every experiment already planned, as config keys (params, parent lineage and patch)."""
    return state.config_keys()


def baseline(spec: CampaignSpec, generation: int, seen: set[str]) -> list[Proposal]:
    """Generation 0's first proposal: the defaults declared in ``[space]`` (when every
    parameter has one, the spec asks for it, and it has not run)."""
    defaults = spec.space.defaults()
    if generation != 0 or not spec.campaign.baseline or defaults is None or Space.key(defaults) in seen:
        return []
    seen.add(Space.key(defaults))
    why = "the unmodified code" if spec.code_first else "the defaults declared in [space]"
    return [Proposal(defaults, hypothesis=f"baseline: {why}", source="baseline")]


def validated(spec: CampaignSpec, proposals: Sequence[Proposal], notes: list[str]) -> list[Proposal]:
    """The proposals inside the space (canonical values); each dropped one is noted."""
    out = []
    for p in proposals:
        params, errors = spec.space.validate(p.params)
        if errors:
            notes.append(f"dropped an invalid proposal ({'; '.join(errors)})")
            continue
        out.append(Proposal(params, p.hypothesis, p.patch, p.parent, p.source))
    return out


def fresh(proposals: Sequence[Proposal], seen: set[str], notes: list[str]) -> list[Proposal]:
    """The proposals that repeat nothing in ``seen`` (nor each other)."""
    kept, dups = unique(proposals, seen)
    if dups:
        notes.append(f"dropped {len(dups)} duplicate proposal(s)")
    return kept


def trials(
    generation: int,
    proposals: Sequence[Proposal],
    seeds: Sequence[int],
    start: int = 0,
    first_seeds: Sequence[int] = (),
) -> tuple[PlannedTrial, ...]:
    """One trial per proposal and seed, numbered from ``start``; the proposal's first trial id
    is its config id. ``first_seeds``: the first proposal's seeds instead (the noise runs)."""
    out = []
    index = start
    for i, p in enumerate(proposals):
        config = trial_id(generation, index)
        for seed in first_seeds if i == 0 and first_seeds else seeds:
            out.append(
                PlannedTrial(
                    trial_id=trial_id(generation, index),
                    index=index,
                    config=config,
                    seed=seed,
                    params=dict(p.params),
                    hypothesis=p.hypothesis,
                    parent=p.parent,
                    source=p.source,
                    patch=tuple(dict(e) for e in p.patch) if p.patch else None,
                )
            )
            index += 1
    return tuple(out)


def noise_seeds(state: CampaignState, spec: CampaignSpec, generation: int) -> tuple[int, ...]:
    """With one seed, the seeds of generation 0's first configuration: ``[rigor] noise_runs``
    of them, so that its runs estimate the noise by the end of generation 0 and verdicts start
    with the first results. None (()) after generation 0's plan, or when the batch has no room
    for them and one more configuration (then the champion's control measures the noise)."""
    seeds, runs = spec.campaign.seeds, spec.rigor.noise_runs
    if len(seeds) > 1 or runs < 2 or generation != 0 or search_trials(state):
        return ()
    if spec.campaign.batch_trials < runs + 1:
        return ()
    return tuple(range(seeds[0], seeds[0] + runs))


# ------------------------------------------------------------------------------- rigor

EXPLORE, CONFIRM, RERUN = "explore", "confirm", "rerun"
OWN_GENERATIONS = (CONFIRM, RERUN, REPLICATE)  # generations the campaign plans, not the planner


def explored(state: CampaignState, before: int | None = None) -> int:
    """How many exploration generations (not confirmations) are planned (before ``before``)."""
    return sum(
        1
        for r in state.generations.values()
        if r.planned and r.planner not in OWN_GENERATIONS and (before is None or r.generation < before)
    )


def explored_units(state: CampaignState, spec: CampaignSpec, before: int | None = None) -> int:
    """How far the exploration has come (before generation ``before``), in generations: sync,
    the exploration generations planned; async (generations sized to free slots), the search
    trials planned in full batches."""
    if spec.campaign.schedule != "async":
        return explored(state, before)
    n = sum(
        1
        for trial in state.trials.values()
        if trial.purpose in SEARCH_PURPOSES and (before is None or trial.generation < before)
    )
    return n // spec.campaign.batch_trials


def generations_left(state: CampaignState, spec: CampaignSpec, generation: int) -> int:
    """Exploration generations left, the one to plan included (what a planner is told)."""
    if spec.campaign.schedule != "async":
        return max(1, spec.campaign.generations - explored(state, generation))
    left = trial_limit(spec) - len(search_trials(state))
    return max(1, math.ceil(left / spec.campaign.batch_trials))


def next_kind(state: CampaignState, spec: CampaignSpec, stop: Stop | None = None) -> str | None:
    """What the next unplanned generation is: ``explore`` (the planner's), ``replicate`` (once
    the exploration has ended, the candidates not run again yet: :func:`replicate_trials`),
    ``confirm`` (the best configurations run again, ``[confirm]``), or None (the campaign is
    complete).

    ``stop`` is the stop rule that holds (:func:`hpc_agent.science.budget.stop_rule`): a soft one ends
    the exploration (then the final confirmation is due), a hard one ends everything."""
    if stop is not None and stop.hard:
        return None
    exploring = stop is None
    if not exploring and unreplicated(state):
        return REPLICATE
    conf = spec.confirm
    if conf.top_k:
        done = explored_units(state, spec)
        gens = [r for r in state.generations.values() if r.planned and r.planner == CONFIRM]
        done_at = {explored_units(state, spec, r.generation) for r in gens}
        if exploring:
            total = spec.campaign.generations
            due = set(range(conf.every, total, conf.every)) if conf.every else set()
        else:
            due = {done}  # the final confirmation
        if done in due and done not in done_at and confirmable(state, spec):
            return CONFIRM
    return EXPLORE if exploring else None


def confirmable(state: CampaignState, spec: CampaignSpec) -> list[ConfigResult]:
    """The configurations a confirmation runs again: the ``top_k`` best completed
    configurations of the search (by their screening mean) not confirmed yet."""
    confirmed = {c.of for c in state.configs() if c.purpose == CONFIRM}
    sign = 1.0 if spec.campaign.mode == "min" else -1.0
    done = [c for c in state.configs() if not c.purpose and not c.pending and c.objective is not None]
    ranked = sorted(done, key=lambda c: (sign * float(c.objective or 0.0), c.config_id))
    return [c for c in ranked if c.config_id not in confirmed][: spec.confirm.top_k]


def confirm_trials(state: CampaignState, spec: CampaignSpec, generation: int) -> tuple[PlannedTrial, ...]:
    """A confirmation generation: each configuration of :func:`confirmable`, run
    ``[confirm] seeds`` times on its own code at ``budget_multiplier`` times the budget."""
    conf = spec.confirm
    out = []
    for i, c in enumerate(confirmable(state, spec)):
        config = trial_id(generation, i * conf.seeds)
        why = f"confirm {c.config_id}: {conf.seeds} seed(s) at {conf.budget_multiplier:g}x the budget"
        for k in range(conf.seeds):
            out.append(
                PlannedTrial(
                    trial_id=trial_id(generation, i * conf.seeds + k),
                    index=i * conf.seeds + k,
                    config=config,
                    seed=k,
                    params=dict(c.params),
                    hypothesis=why,
                    parent=c.config_id,
                    source=CONFIRM,
                    purpose=CONFIRM,
                    of=c.config_id,
                    budget_multiplier=conf.budget_multiplier,
                )
            )
    return tuple(out)


def control_trials(
    state: CampaignState, spec: CampaignSpec, generation: int, start: int
) -> tuple[PlannedTrial, ...]:
    """With one seed, the champion once more with a new seed (a "control"), while it has a
    single completed run and no control in flight: its two runs estimate the noise floor. It
    takes one slot of the batch, so only batches of two or more get one."""
    champion = state.champion(spec.campaign.mode)
    if len(spec.campaign.seeds) > 1 or not spec.rigor.control or spec.campaign.batch_size < 2:
        return ()  # (a batch of one is the search's alone)
    if champion is None or champion.n_completed != 1:
        return ()
    runs = [state.trials[trial] for trial in champion.trial_ids]
    if any(trial.purpose == "control" and not trial.state.is_finished() for trial in runs):
        return ()
    first = runs[0]
    return (
        PlannedTrial(
            trial_id=trial_id(generation, start),
            index=start,
            config=champion.config_id,
            seed=max(trial.seed for trial in runs) + 1,
            params=dict(champion.params),
            hypothesis=f"control: the champion {champion.config_id} again with a new seed (the noise floor)",
            parent=first.parent,
            source="control",
            patch=first.patch,
            purpose="control",
        ),
    )


def champion_controls(
    state: CampaignState, spec: CampaignSpec, generation: int, n: int, why: str
) -> tuple[PlannedTrial, ...]:
    """A code-first generation without a code change to run (the LLM down or its replies
    invalid, or a planner that cannot write code: ``why``): ``n`` runs of the champion's code
    again with new seeds (controls of the champion), which sharpen the noise
    estimate the next change will be judged by. Without a champion, the baseline's
    configuration while it has not crashed; nothing (the campaign ends) otherwise."""
    target = state.champion(spec.campaign.mode)
    if target is None:
        target = next((c for c in state.configs() if c.source == "baseline" and c.verdict != "crash"), None)
    if target is None or n <= 0:
        return ()
    runs = [state.trials[trial] for trial in target.trial_ids]
    first, seed = runs[0], max(trial.seed for trial in runs) + 1
    return tuple(
        PlannedTrial(
            trial_id=trial_id(generation, i),
            index=i,
            config=target.config_id,
            seed=seed + i,
            params=dict(target.params),
            hypothesis=f"control: {target.config_id}'s code again with a new seed, no code change to run "
            f"({why}); a sharper noise estimate",
            parent=first.parent,
            source="control",
            patch=first.patch,
            purpose="control",
        )
        for i in range(n)
    )


def unreplicated(state: CampaignState) -> list[ConfigResult]:
    """The candidates (:mod:`hpc_agent.science.rigor`) with no replicate planned yet, in plan order."""
    out = []
    for cid in state.candidates:
        c = state.config(cid)
        if c is not None and all(state.trials[trial].purpose != REPLICATE for trial in c.trial_ids):
            out.append(c)
    return out


def replicate_trials(
    state: CampaignState, spec: CampaignSpec, generation: int, start: int = 0, room: int | None = None
) -> tuple[PlannedTrial, ...]:
    """Each candidate not run again yet, run again: as many trials as its screening had
    (``[campaign] seeds``), new seeds, same budget and code, numbered from ``start``; at most
    ``room`` trials (the rest wait for the next plan). They come first in a batch: a keep is
    confirmed before the lineage, the incumbent or the stop rules build on it."""
    n = len(spec.campaign.seeds)
    out: list[PlannedTrial] = []
    for c in unreplicated(state):
        if room is not None and len(out) + n > room:
            break
        runs = [state.trials[trial] for trial in c.trial_ids]
        first, top = runs[0], max(trial.seed for trial in runs)
        why = f"replicate: candidate {c.config_id} again with a new seed (a keep is confirmed first)"
        for k in range(n):
            index = start + len(out)
            out.append(
                PlannedTrial(
                    trial_id=trial_id(generation, index),
                    index=index,
                    config=c.config_id,
                    seed=top + 1 + k,
                    params=dict(c.params),
                    hypothesis=why,
                    parent=first.parent,
                    source=REPLICATE,
                    patch=first.patch,
                    purpose=REPLICATE,
                )
            )
    return tuple(out)

"""Turning a planner's proposals into a generation's trials.

Whatever the planner, its proposals are held to the same rules here: every configuration is
validated by :meth:`Space.validate` (the invalid ones are dropped, with their reason in the
plan's note), duplicates of the history and of each other are dropped, generation 0 starts
with the baseline (the space's defaults) when there is one, and each proposal becomes one
trial per seed of ``[campaign] seeds``, sharing a config id.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpc_agent.events import PlannedTrial
from hpc_agent.planners.base import Proposal, unique
from hpc_agent.space import Space
from hpc_agent.spec import CampaignSpec
from hpc_agent.state import CampaignState
from hpc_agent.trial import trial_id


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
    return [Proposal(defaults, hypothesis="baseline: the defaults declared in [space]", source="baseline")]


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


def trials(generation: int, proposals: Sequence[Proposal], seeds: Sequence[int]) -> tuple[PlannedTrial, ...]:
    """One trial per proposal and seed; the proposal's first trial id is its config id."""
    out = []
    for i, p in enumerate(proposals):
        config = trial_id(generation, i * len(seeds))
        for k, seed in enumerate(seeds):
            index = i * len(seeds) + k
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
    return tuple(out)

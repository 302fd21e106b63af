"""Uniform random search: the baseline every other planner must beat."""

from __future__ import annotations

import random as _random

from hpc_agent.planners.base import CANNOT_WRITE_CODE, Plan, PlanContext, Planner, fill_random


class RandomPlanner(Planner):
    """Uniform random configurations (log scales respected), seeded by the campaign seed and the
    generation."""

    name = "random"

    def propose(self, ctx: PlanContext) -> Plan:
        """``ctx.n`` unseen random configurations (fewer when the space runs out)."""
        if not ctx.space.params:
            return Plan((), CANNOT_WRITE_CODE.format(self.name))
        rng = _random.Random(f"{ctx.seed}:{ctx.generation}")
        seen = ctx.seen_keys()
        proposals = fill_random(ctx.space, ctx.n, seen, rng, source="random")
        note = ""
        if len(proposals) < ctx.n:
            note = f"the space has no more unseen configurations: proposed {len(proposals)} of {ctx.n}"
        return Plan(tuple(proposals), note)

"""``hpc-agent rerun RESULTS TRIAL``: the exact trial again, journaled as its reproduction.

The same code snapshot (the trial's own ``code/`` files: its parent's code and its patch) and
the same parameters, with the trial's own seed (``seeds=1``) or that many seeds from it; at
``budget_multiplier`` times the budget if asked (``HPC_AGENT_FIDELITY``). The reproduction is
one generation of its own (planner ``rerun``), one job array, with ``purpose = "rerun"`` and
``of`` naming the configuration it reproduces: the tables show the reproduced value and its
difference next to the original (``reproduced``, ``reproduced_delta``), and no reproduction
ever takes part in the search (no verdict, not in a planner's history).
"""

from __future__ import annotations

from pathlib import Path

from hpc_agent.errors import UserError
from hpc_agent.job.fileio import atomic_write_json
from hpc_agent.job.trial import trial_id
from hpc_agent.loop.propose import RERUN
from hpc_agent.store import events as ev
from hpc_agent.store.events import Planned, PlannedTrial
from hpc_agent.store.journal import Journal
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import acquire_driver_lock, load_state, resolve_trial
from hpc_agent.store.state import CampaignState


def plan_rerun(results: Path, trial: str, seeds: int = 1, budget_multiplier: float = 1.0) -> int:
    """Record a generation that reruns ``trial`` (``seeds`` runs from its own seed) and
    return it; the campaign's driver runs it (:class:`hpc_agent.loop.campaign.Campaign` with
    ``stop_after``). UserError while a driver runs the folder or a generation is unfinished."""
    if seeds < 1 or budget_multiplier <= 0:
        raise UserError(
            f"--seeds {seeds} / --budget-multiplier {budget_multiplier:g}: expected >= 1 and > 0",
            fix="e.g. --seeds 3 --budget-multiplier 2",
        )
    paths = ResultsPaths(results)
    lock = acquire_driver_lock(paths)
    try:
        state = load_state(results)
        _check_idle(state)
        mode = str(state.spec.get("campaign", {}).get("mode", "min"))
        original = state.trials[resolve_trial(state, trial, mode)]
        generation = max(state.generations, default=-1) + 1
        why = f"reproduce {original.trial_id} (config {original.config_id})"
        planned = tuple(
            PlannedTrial(
                trial_id=trial_id(generation, k),
                index=k,
                config=trial_id(generation, 0),
                seed=original.seed + k,
                params=dict(original.params),
                hypothesis=why + (f" at {budget_multiplier:g}x the budget" if budget_multiplier != 1 else ""),
                parent=original.trial_id,  # its own code/: the parent's code and its patch
                source=RERUN,
                purpose=RERUN,
                of=original.config_id,
                budget_multiplier=budget_multiplier,
            )
            for k in range(seeds)
        )
        atomic_write_json(
            paths.plan(generation),
            {
                "generation": generation,
                "planner": RERUN,
                "note": why,
                "trials": [t.to_dict() for t in planned],
            },
        )
        Journal(paths.journal).write(
            [
                ev.Planning(generation=generation, planner=RERUN),
                Planned(generation=generation, planner=RERUN, note=why, trials=planned),
            ]
        )
        return generation
    finally:
        lock.release()


def _check_idle(state: CampaignState) -> None:
    unfinished = [generation for generation, r in state.generations.items() if r.planned and not r.done]
    if unfinished:
        raise UserError(
            f"generation {unfinished[0]} of this campaign is not finished: a rerun waits for it",
            fix="let `hpc-agent run` finish the campaign (or `hpc-agent cancel` it), then rerun",
        )

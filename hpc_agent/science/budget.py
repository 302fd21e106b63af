"""Budgets and stop rules: when the search ends, and what it has used.

A campaign's search ends by the first rule that holds (``[stop]``, and its generations):

==================  ==========================================================  =======
rule                holds when                                                  kind
==================  ==========================================================  =======
``max_hours``       the campaign began (its first run) this many hours ago      hard
``max_gpu_hours``   finished trials' hours times their GPUs reach it            hard
``target``          the champion (a *kept* configuration) reached the value     soft
``plateau``         this many search trials finished since the last champion    soft
``max_trials``      this many search trials are planned (controls, replicates   soft
                    included)
``generations``     sync: every generation is planned; async: generations x     soft
                    batch trials are (a generation is sized to free slots)
==================  ==========================================================  =======

A *soft* rule ends the exploration: nothing more is planned for the search, and the final
confirmation (``[confirm]``) still runs. A *hard* rule ends everything new, confirmation
included. Either way the trials in flight finish (they are paid for; ``hpc-agent cancel``
stops them) and the journal records the rule (``stopped``). Each run judges the rules anew:
raise a limit and run again, and the campaign continues.

"The champion" is the noise-aware one of :mod:`hpc_agent.science.rigor` (the last configuration the
promotion rule kept), so a lucky seed neither reaches the target nor resets the plateau.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.job.provenance import read_trial_provenance
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.state import CampaignState, TrialRecord

# the search's trials: its proposals, the champion's controls and the candidates' replicates
# (confirmations and reruns are not)
SEARCH_PURPOSES = ("", "control", "replicate")
HARD_RULES = ("max_hours", "max_gpu_hours")


@dataclass(frozen=True)
class Stop:
    """The rule that ends the search, and why in words."""

    rule: str
    detail: str

    @property
    def hard(self) -> bool:
        """Nothing new at all (not even the confirmation) may start."""
        return self.rule in HARD_RULES


@dataclass(frozen=True)
class Used:
    """What the campaign has used of its budget, and its limits (0: none)."""

    trials: int  # search trials planned
    finished: int  # search trials finished
    trial_limit: int  # max_trials, or async: generations x batch trials; 0 = none
    hours: float  # since the campaign began
    gpu_hours: float
    since_champion: int  # search trials finished since the last champion was kept
    champion: float | None  # the champion's objective

    def to_dict(self) -> dict[str, float | int | None]:
        """As plain data (``hpc-agent status --json``)."""
        return {
            "trials": self.trials,
            "finished": self.finished,
            "trial_limit": self.trial_limit,
            "hours": round(self.hours, 4),
            "gpu_hours": round(self.gpu_hours, 4),
            "since_champion": self.since_champion,
            "champion": self.champion,
        }


def search_trials(state: CampaignState) -> list[TrialRecord]:
    """The search's trials (its proposals and the champion's controls), planned so far."""
    return [t for t in state.trials.values() if t.purpose in SEARCH_PURPOSES]


def trial_limit(spec: CampaignSpec) -> int:
    """The most search trials the campaign plans: ``max_trials``; in async mode without it,
    ``generations`` full batches (0: no limit in trials)."""
    if spec.stop.max_trials:
        return spec.stop.max_trials
    if spec.campaign.schedule == "async":
        return spec.campaign.generations * spec.campaign.batch_trials
    return 0


def used(state: CampaignState, spec: CampaignSpec, gpu_hours: float = 0.0, now: float | None = None) -> Used:
    """The budget used so far (``gpu_hours`` from a :class:`GpuMeter`)."""
    champ = state.champion(spec.campaign.mode)
    kept_at = state.verdicts.get(champ.config_id, {}).get("at") if champ is not None else None
    after = -float("inf") if kept_at is None else float(kept_at)
    n_search = n_finished = n_since = 0
    for t in state.trials.values():  # one pass: the stop rules are checked several times a generation
        if t.purpose not in SEARCH_PURPOSES:
            continue
        n_search += 1
        if t.ended_at is not None and t.state.is_finished():
            n_finished += 1
            n_since += t.ended_at > after
    return Used(
        trials=n_search,
        finished=n_finished,
        trial_limit=trial_limit(spec),
        hours=hours_since_start(state, now),
        gpu_hours=gpu_hours,
        since_champion=n_since,
        champion=champ.objective if champ is not None else None,
    )


def hours_since_start(state: CampaignState, now: float | None = None) -> float:
    """Hours since the campaign began (its first run), 0 before."""
    began = state.started_at or (state.run_times[0] if state.run_times else 0.0)
    now = time.time() if now is None else now
    return max(0.0, now - began) / 3600 if began else 0.0


def stop_rule(spec: CampaignSpec, u: Used, generations_planned: int) -> Stop | None:
    """The first rule of the module docstring's table that holds, or None: the search goes on.
    ``generations_planned``: the exploration generations planned (the sync schedule's count)."""
    st, camp = spec.stop, spec.campaign
    if st.max_hours and u.hours >= st.max_hours:
        return Stop("max_hours", f"{u.hours:.2f} h since the campaign began (max_hours = {st.max_hours:g})")
    if st.max_gpu_hours and u.gpu_hours >= st.max_gpu_hours:
        return Stop(
            "max_gpu_hours", f"{u.gpu_hours:.2f} GPU-hours used (max_gpu_hours = {st.max_gpu_hours:g})"
        )
    if st.target is not None and u.champion is not None and math.isfinite(u.champion):
        reached = u.champion <= st.target if camp.mode == "min" else u.champion >= st.target
        if reached:
            return Stop(
                "target", f"the champion's {camp.metric} {u.champion:.6g} reached target {st.target:g}"
            )
    if st.plateau_trials and u.since_champion >= st.plateau_trials:
        return Stop(
            "plateau",
            f"{u.since_champion} search trials finished without a new champion "
            f"(plateau_trials = {st.plateau_trials})",
        )
    if u.trial_limit and u.trials + len(camp.seeds) > u.trial_limit:  # no room for one more proposal
        rule = "max_trials" if st.max_trials else "generations"
        return Stop(rule, f"{u.trials} of {u.trial_limit} search trials planned")
    if camp.schedule == "sync" and generations_planned >= camp.generations:
        return Stop("generations", f"all {camp.generations} generations planned")
    return None


def describe(spec: CampaignSpec, u: Used) -> str:
    """The budget in a line or two: used, left, and the rules that can end the search (for the
    LLM's prompt and ``hpc-agent status``)."""
    st = spec.stop
    parts = []
    if u.trial_limit:
        parts.append(
            f"{u.trials} of {u.trial_limit} trials planned ({max(0, u.trial_limit - u.trials)} left)"
        )
    else:
        parts.append(f"{u.trials} trials planned")
    if st.max_hours:
        parts.append(f"{u.hours:.2f} of {st.max_hours:g} h ({max(0.0, st.max_hours - u.hours):.2f} h left)")
    if st.max_gpu_hours:
        left = max(0.0, st.max_gpu_hours - u.gpu_hours)
        parts.append(f"{u.gpu_hours:.2f} of {st.max_gpu_hours:g} GPU-hours ({left:.2f} left)")
    rules = []
    if st.target is not None:
        rules.append(f"the champion reaches {spec.campaign.metric} {st.target:g}")
    if st.plateau_trials:
        rules.append(f"{st.plateau_trials} trials finish without a new champion ({u.since_champion} so far)")
    text = "Budget used: " + "; ".join(parts) + "."
    if rules:
        text += " The search also stops when " + ", or when ".join(rules) + "."
    return text


class GpuMeter:
    """GPU-hours of the finished trials: each one's hours over every attempt times the GPUs
    its last attempt saw (its ``provenance.json``, read once per attempt)."""

    def __init__(self, paths: ResultsPaths) -> None:
        self.paths = paths
        self._gpus: dict[tuple[str, int], int] = {}

    def hours(self, state: CampaignState) -> float:
        """GPU-hours so far."""
        total = 0.0
        for t in state.trials.values():
            if not t.state.is_finished() or not t.total_duration_s:
                continue
            key = (t.trial_id, t.attempt)
            if key not in self._gpus:
                attempts = read_trial_provenance(self.paths.trial(t.trial_id).root)
                self._gpus[key] = int(attempts[-1].get("gpu_count") or 0) if attempts else 0
            total += self._gpus[key] * t.total_duration_s / 3600
        return total


def budget_summary(state: CampaignState, spec: CampaignSpec, gpu_hours: float) -> dict[str, Any]:
    """What a campaign used, its ``[stop]`` limits and the sentence that says both, as
    ``hpc-agent status`` and the live page show them."""
    u = used(state, spec, gpu_hours)
    limits = {k: v for k, v in asdict(spec.stop).items() if v is not None and (v or k == "target")}
    return {**u.to_dict(), "limits": limits, "text": describe(spec, u)}

"""What a campaign used: compute (GPU-hours, CPU-hours) and the LLM's tokens and cost.

Compute is each trial's time over all its attempts (the journal's
``TrialRecord.total_duration_s``) times the GPUs it saw (its ``provenance.json``: the last
attempt's); a trial that saw none counts as CPU-hours, times the CPUs allotted to it. A
trial without a provenance record (run by an older hpc-agent) is counted apart, as hours of
unknown resources. The LLM's totals are those of ``hpc-agent logs``
(:func:`hpc_agent.llm.log.usage`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hpc_agent.job.provenance import read_trial_provenance
from hpc_agent.llm.log import Usage, read_log, usage
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.state import CampaignState


@dataclass(frozen=True)
class Compute:
    """Hours used, by kind: GPU-hours (and the GPU models, by trials), CPU-hours, and hours
    of trials whose resources were not recorded; ``trials`` counted for each."""

    gpu_hours: float = 0.0
    gpu_trials: int = 0
    gpu_models: Mapping[str, int] = field(default_factory=dict)
    cpu_hours: float = 0.0
    cpu_trials: int = 0
    unknown_hours: float = 0.0
    unknown_trials: int = 0
    gpu_hours_wall: float = 0.0  # the GPU trials' own hours (not times their GPUs)
    cpu_hours_wall: float = 0.0

    @property
    def trial_hours(self) -> float:
        """Wall-clock hours of every trial's attempts added up (not of the campaign)."""
        return self.gpu_hours_wall + self.cpu_hours_wall + self.unknown_hours


def compute_used(paths: ResultsPaths, state: CampaignState) -> Compute:
    """GPU-hours and CPU-hours over every trial that ran (see the module docstring)."""
    gpu_h = cpu_h = unknown_h = gpu_wall = cpu_wall = 0.0
    gpu_n = cpu_n = unknown_n = 0
    models: dict[str, int] = {}
    for t in state.trials.values():
        hours = (t.total_duration_s or 0.0) / 3600
        if hours <= 0:
            continue
        attempts = read_trial_provenance(paths.trial(t.trial_id).root)
        if not attempts:
            unknown_h, unknown_n = unknown_h + hours, unknown_n + 1
            continue
        last = attempts[-1]
        gpus = int(last.get("gpu_count") or 0)
        if gpus:
            gpu_h, gpu_wall, gpu_n = gpu_h + hours * gpus, gpu_wall + hours, gpu_n + 1
            for g in last.get("gpus") or [{"name": "unnamed GPU"}] * gpus:
                models[str(g.get("name"))] = models.get(str(g.get("name")), 0) + 1
        else:
            cpu_h, cpu_wall, cpu_n = cpu_h + hours * int(last.get("cpus") or 1), cpu_wall + hours, cpu_n + 1
    return Compute(
        gpu_h, gpu_n, dict(sorted(models.items())), cpu_h, cpu_n, unknown_h, unknown_n, gpu_wall, cpu_wall
    )


def llm_used(paths: ResultsPaths) -> Usage:
    """The LLM's round trips, tokens and cost from ``llm.jsonl`` (zeros without one)."""
    return usage(list(read_log(paths.llm_log)))

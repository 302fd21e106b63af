"""The registries of kinds, in one place: planner and executor kinds by name, each with the
module and class that make it. The spec validates ``[planner] kind`` and ``[executor] kind``
against them; :mod:`hpc_agent.planners` and :mod:`hpc_agent.executors` import a kind's module
only when one is made (a TPE campaign never loads the LLM client). They live in the
configuration so that the spec needs neither package (no import circle)."""

from __future__ import annotations

# kind -> (module, class); the class is built by its ``for_spec(spec)``
PLANNER_KINDS: dict[str, tuple[str, str]] = {
    "llm": ("hpc_agent.planners.llm", "LLMPlanner"),
    "tpe": ("hpc_agent.planners.tpe", "TPEPlanner"),
    "random": ("hpc_agent.planners.random", "RandomPlanner"),
}

# kind -> (module, class); the class takes (parallelism, poll_interval_s, profile, overrides)
EXECUTOR_KINDS: dict[str, tuple[str, str]] = {
    "local": ("hpc_agent.executors.local", "LocalExecutor"),
    "slurm": ("hpc_agent.executors.slurm.executor", "SlurmExecutor"),
}

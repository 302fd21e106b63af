"""hpc-agent: an autonomous ML research agent for SLURM clusters.

Importing ``hpc_agent`` is cheap on purpose: experiment code imports it for the tracking API
(:mod:`hpc_agent.track`) and must not pay for polars, optuna or openai. The driver's parts
live in folders by concept (``job``, ``config``, ``store``, ``edits``, ``science``,
``planners``, ``executors``, ``llm``, ``loop``, ``outputs``, ``cli``): docs/architecture.md is
the map, and each folder's ``__init__`` says what it owns and what it may import.
"""

from hpc_agent.track import (
    checkpoint_dir,
    fidelity,
    log,
    params,
    seed,
    time_budget_s,
    time_left,
    trial_dir,
)

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "checkpoint_dir",
    "fidelity",
    "log",
    "params",
    "seed",
    "time_budget_s",
    "time_left",
    "trial_dir",
]

"""Cluster profiles: where and how a generation's job array runs on SLURM.

A profile is a small TOML file in ``slurm_templates/`` (or any path). Its keys are the
parameters below; ``[executor]`` in campaign.toml may override any single one.
"""

from __future__ import annotations

# Every key a profile (or [executor] in campaign.toml) may set. Unknown keys fail listing these.
PROFILE_KEYS: tuple[str, ...] = (
    "description",
    "partition",
    "account",
    "qos",
    "gres",
    "gpus_per_node",
    "cpus_per_task",
    "mem_gb",
    "constraint",
    "exclude",
    "reservation",
    "timeout_min",
    "setup",
    "requeue",
    "signal_delay_s",
    "array_parallelism",
    "max_array_size",
    "additional_parameters",
    "python",
)

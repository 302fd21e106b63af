"""The configuration: what a campaign declares and what it defaults to, each input declared
once (:mod:`~hpc_agent.config.schema`: a frozen dataclass read through pydantic, its errors in
the project's words). ``campaign.toml`` into frozen dataclasses (:mod:`~hpc_agent.config.spec`),
the search space (:mod:`~hpc_agent.config.space`), every default in one block
(:mod:`~hpc_agent.config.defaults`), the SLURM profiles (:mod:`~hpc_agent.config.profiles`), the
registries of planner and executor kinds (:mod:`~hpc_agent.config.kinds`) and ``hpc-agent
init``'s templates (:mod:`~hpc_agent.config.scaffold`).

It may import :mod:`hpc_agent.errors` and the in-job code (:mod:`hpc_agent.job`) only (and
pydantic, imported on the first validation): it never knows how a campaign is run, stored or
planned.
"""

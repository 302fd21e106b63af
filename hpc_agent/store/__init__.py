"""The store: a results folder and what it holds. The journal's events
(:mod:`~hpc_agent.store.events`), the append-only journal and its lock
(:mod:`~hpc_agent.store.journal`), the fold over the events into a campaign's state
(:mod:`~hpc_agent.store.state`), every path of a results folder (:mod:`~hpc_agent.store.paths`),
the folder's ownership and the driver's lock (:mod:`~hpc_agent.store.results`), and the trials'
metrics gathered with Polars (:mod:`~hpc_agent.store.metrics`).

It may import the configuration (:mod:`hpc_agent.config`) and the in-job code; it never
imports the loop, the planners, the executors or the outputs.
"""

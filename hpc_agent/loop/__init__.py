"""The loop: the driver and its phases. The driver (:mod:`~hpc_agent.loop.driver`), the two
schedules built on it (:mod:`~hpc_agent.loop.sync`, :mod:`~hpc_agent.loop.overlap`) and the
campaign that picks one (:mod:`~hpc_agent.loop.campaign`), the planner's side of a generation
and the stop rules journaled (:mod:`~hpc_agent.loop.planning`), and one module a phase: proposals into trials
(:mod:`~hpc_agent.loop.propose`), trial folders (:mod:`~hpc_agent.loop.prepare`), submissions
exactly once (:mod:`~hpc_agent.loop.submit`), open trials reconciled with their status files and
the scheduler (:mod:`~hpc_agent.loop.reconcile`); plus what changes a campaign from outside its
driver (:mod:`~hpc_agent.loop.cancel`, :mod:`~hpc_agent.loop.rerun`) and the reporter seam.

It may import everything below it (planners, executors, science, store, config, edits, llm, the
in-job code); it never imports the outputs or the CLI.
"""

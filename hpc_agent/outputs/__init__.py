"""The outputs: what only reads a results folder. Paper tables
(:mod:`~hpc_agent.outputs.tables`), figures (:mod:`~hpc_agent.outputs.figures`), the campaign
report (:mod:`~hpc_agent.outputs.report`), ``hpc-agent show`` (:mod:`~hpc_agent.outputs.show`),
``hpc-agent status`` (:mod:`~hpc_agent.outputs.status`) and the terminal rendering
(:mod:`~hpc_agent.outputs.terminal`).

It may import everything but the CLI; nothing but the CLI imports it. It never writes the
journal.
"""

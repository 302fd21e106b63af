"""The science: what a campaign's results mean. The noise floor, the promotion rule and its
verdicts (:mod:`~hpc_agent.science.rigor`), the ledger export (:mod:`~hpc_agent.science.ledger`),
a trial's code lineage (:mod:`~hpc_agent.science.lineage`), the deterministic analysis
(:mod:`~hpc_agent.science.analysis`), the compute and tokens used
(:mod:`~hpc_agent.science.usage`), what a campaign used against its budget and the stop rules
(:mod:`~hpc_agent.science.budget`), and a driver run's code provenance
(:mod:`~hpc_agent.science.provenance`).

Pure functions over the store's state: it may import the store, the configuration, the edits,
the LLM's log and the in-job code; never the loop or the outputs.
"""

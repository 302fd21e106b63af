"""The sync schedule (``[campaign] schedule = "sync"``, the default): one generation at a time,
each a barrier. Planned, prepared, submitted as one array, waited for, gathered, analyzed; then
the next. Simple to reason about, and what a paper's "generation" means; the async schedule
(:mod:`hpc_agent.loop.overlap`) keeps the slots busier."""

from __future__ import annotations

from hpc_agent.loop.driver import Driver
from hpc_agent.store.events import GenerationDone


class SyncSchedule:
    """One generation at a time on one driver (see the module docstring)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def run(self) -> str:
        """Run generation after generation until none is left: ``done``, ``exhausted`` (the
        planner had nothing more to propose) or ``cancelled``."""
        driver = self.driver
        while (generation := driver.next_generation()) is not None:
            record = driver.state.generations.get(generation)
            if not (record and record.planned) and not driver.propose(generation):
                return "exhausted"
            driver.prepare(generation)
            if not driver.wait(generation):
                return "cancelled"
            driver.gather()
            if not driver.state.generations[generation].analyzed:
                driver.analyze(generation)
            driver.record(GenerationDone(generation=generation))
        return "done"

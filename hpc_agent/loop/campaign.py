"""A campaign: the driver under the schedule its spec asks for (``[campaign] schedule``).

:class:`Campaign` is what the CLI, the tests and the benchmarks run:
``Campaign(spec, results, executor, planner).run()``. The driver
(:class:`~hpc_agent.loop.driver.Driver`) holds the state, the journal and the phases; the two
schedules are peers built on it (:mod:`hpc_agent.loop.sync`, :mod:`hpc_agent.loop.overlap`)."""

from __future__ import annotations

from collections.abc import Callable

from hpc_agent.loop.driver import Driver, Schedule
from hpc_agent.loop.overlap import AsyncSchedule
from hpc_agent.loop.sync import SyncSchedule

SCHEDULES: dict[str, Callable[[Driver], Schedule]] = {"sync": SyncSchedule, "async": AsyncSchedule}


class Campaign(Driver):
    """One campaign's driver, run under the schedule of ``[campaign] schedule``."""

    def schedule(self) -> Schedule:
        """``sync`` or ``async``, built on this driver."""
        return SCHEDULES[self.spec.campaign.schedule](self)

"""What the driver's helpers see of the driver (:class:`LiveDriver`).

:class:`~hpc_agent.loop.planning.Planning` and :class:`~hpc_agent.loop.submit.Submissions` take
the driver itself, not loose callbacks: they read its live state and write through its
``record`` (the journal first, then the state). They are typed against this protocol rather
than :class:`~hpc_agent.loop.driver.Driver`, which builds them: no import circle, not even one
for the type checker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.executors.base import Executor
from hpc_agent.loop.reporter import Reporter
from hpc_agent.planners.base import Planner
from hpc_agent.store.events import Event
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.state import CampaignState


class LiveDriver(Protocol):
    """A campaign's driver while it runs: its spec, results folder, planner (and the fallback
    that plans when it fails), executor and reporter, the live state, and ``record``."""

    spec: CampaignSpec
    paths: ResultsPaths
    planner: Planner
    fallback_planner: Callable[[], Planner] | None
    executor: Executor
    reporter: Reporter
    state: CampaignState

    def record(self, *events: Event) -> None:
        """Write the events to the journal, then apply them to :attr:`state`."""
        ...

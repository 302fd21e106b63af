"""Shared fixtures of the package-by-package tests: one finished campaign, played once per
session by the scripted in-process executor (no process runs), for the tests that only read a
results folder. Tests that write copy nothing from it: they build their own in ``tmp_path``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_campaign

from hpc_agent.config.spec import CampaignSpec, load_spec
from hpc_agent.loop.campaign import Campaign
from hpc_agent.planners.random import RandomPlanner
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import load_state
from hpc_agent.store.state import CampaignState
from hpc_agent.testing import Fate, ScriptedExecutor


def objective(params: dict) -> float:
    """What a completed trial logs: the tiny experiment's loss, smooth in ``x``."""
    return (float(params["x"]) - 0.3) ** 2 + (0.0 if params["mode"] == "a" else 0.1)


@dataclass(frozen=True)
class Finished:
    """A campaign run to its end: 2 generations of 3 trials, trial 0000-0001 failed once
    (max_retries = 0: it stays failed)."""

    camp: Path
    results: Path
    spec: CampaignSpec
    state: CampaignState
    paths: ResultsPaths


@pytest.fixture(scope="session")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    root = tmp_path_factory.mktemp("finished")
    camp = write_campaign(root / "camp", generations=2, batch_size=3, experiment="max_retries = 0")
    results = root / "results-camp"
    ex = ScriptedExecutor(objective=objective, fates={"0000-0001": [Fate("fail")]})
    spec = load_spec(camp)
    assert Campaign(spec, results, ex, RandomPlanner()).run().status == "done"
    return Finished(camp, results, spec, load_state(results), ResultsPaths(results))


def interrupted(root: Path) -> Finished:
    """A campaign whose driver was killed (``kill -9``) just after the scheduler took its first
    generation: 3 trials submitted, none finished, no driver running."""
    from hpc_agent.testing import DriverKilled

    camp = write_campaign(root / "camp", generations=1, batch_size=3)
    results = root / "results-camp"
    spec = load_spec(camp)
    with pytest.raises(DriverKilled):
        Campaign(spec, results, ScriptedExecutor(kill_in_submit="after"), RandomPlanner()).run()
    return Finished(camp, results, spec, load_state(results), ResultsPaths(results))


class BareDriver:
    """A :class:`hpc_agent.loop.live.LiveDriver` and nothing more: the spec, the results folder
    opened as a run does (:func:`open_results`), a planner, the scripted executor, and
    ``record`` that writes the real journal and then applies the events to the state. What
    :class:`~hpc_agent.loop.planning.Planning` and :class:`~hpc_agent.loop.submit.Submissions`
    are built on, without the driver's loop."""

    def __init__(self, camp: Path, results: Path, executor: ScriptedExecutor | None = None) -> None:
        from hpc_agent.loop.reporter import SilentReporter
        from hpc_agent.store.results import open_results

        self.spec = load_spec(camp)
        self.paths = ResultsPaths(results)
        self.journal, _ = open_results(self.spec, results)
        self.state = load_state(results)
        self.planner = RandomPlanner()
        self.fallback_planner = None
        self.executor = executor or ScriptedExecutor(objective=objective)
        self.reporter = SilentReporter()

    def record(self, *events) -> None:  # type: ignore[no-untyped-def]
        """Journal first, then the state."""
        for e in self.journal.write(events).events:
            self.state.apply(e)


@pytest.fixture
def bare_driver(tmp_path: Path) -> BareDriver:
    camp = write_campaign(tmp_path / "camp", generations=2, batch_size=3)
    return BareDriver(camp, tmp_path / "results-camp")


def planned_and_prepared(driver: BareDriver, generation: int = 0) -> list[str]:
    """Plan ``generation`` with the driver's planner and prepare its trials' folders (as the
    driver's first two phases do); their folders, in order."""
    from hpc_agent.loop.planning import Planning
    from hpc_agent.loop.prepare import base_files, prepare_trial

    planning = Planning(driver)
    req = planning.start(generation, "explore")
    assert req is not None
    planning.finish(req, req.ask(driver.planner, None, driver.reporter))
    base = base_files(driver.paths, driver.spec.experiment)
    trials = driver.state.trials_of(generation)
    for t in trials:
        prepare_trial(driver.paths, t, driver.spec.experiment, base, unset_env=[])
    return [str(driver.paths.trial(t.trial_id).root) for t in trials]

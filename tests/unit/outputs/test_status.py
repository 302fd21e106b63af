"""hpc_agent.outputs.status: ``hpc-agent status`` gathered from a results folder."""

from __future__ import annotations

import json

from hpc_agent.outputs.status import job_log, live_counts, status_report
from unit.conftest import Finished


def test_the_status_of_a_finished_campaign(finished: Finished) -> None:
    r = status_report(finished.results, queue=False)
    assert (r.name, r.metric, r.mode) == ("tiny", "loss", "min")
    assert (r.generations_planned, r.generations_target, r.generations_done) == (2, 2, 2)
    assert r.counts["completed"] == 5 and r.counts["failed"] == 1 and r.driver is None
    best = finished.state.best("min")
    assert best is not None and r.best is not None and r.best["objective"] == best.objective
    assert [g.generation for g in r.generations] == [0, 1] and all(
        g.done and g.analyzed for g in r.generations
    )
    assert r.generations[0].trials == 3 and r.generations[0].counts["failed"] == 1
    (failure,) = r.failures
    assert failure["trial_id"] == "0000-0001" and "scripted failure" in failure["reason"]
    assert sum(r.verdicts.values()) >= 1 and not r.cancelled
    data = r.to_dict()
    assert json.loads(json.dumps(data))["generations"][0]["generation"] == 0


def test_live_counts_and_a_missing_job_log(finished: Finished) -> None:
    counts = live_counts(finished.paths, finished.state, 0)
    assert counts["completed"] == 2 and counts["failed"] == 1 and counts.get("running", 0) == 0
    assert job_log(finished.paths, 0, None, None) is None

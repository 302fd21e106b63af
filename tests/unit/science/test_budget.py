"""hpc_agent.science.budget: what a campaign used and the stop rules, soft and hard."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from hpc_agent.config.spec import CampaignSpec
from hpc_agent.job.provenance import PROVENANCE
from hpc_agent.science.budget import (
    GpuMeter,
    Used,
    describe,
    hours_since_start,
    search_trials,
    stop_rule,
    trial_limit,
    used,
)
from hpc_agent.store.paths import ResultsPaths
from unit.conftest import Finished


def with_stop(spec: CampaignSpec, **stop: object) -> CampaignSpec:
    return replace(spec, stop=replace(spec.stop, **stop))


def test_used_counts_the_search_and_the_champion(finished: Finished) -> None:
    state, spec = finished.state, finished.spec
    u = used(state, spec, gpu_hours=0.5, now=(state.started_at or 0) + 1800)
    assert len(search_trials(state)) == u.trials == 6 and u.finished == 6
    champ = state.champion("min")
    assert champ is not None and u.champion == champ.objective
    assert u.hours == pytest.approx(0.5) and u.gpu_hours == 0.5 and u.trial_limit == 0
    assert u.to_dict()["hours"] == 0.5
    assert hours_since_start(state, now=state.started_at) == 0.0


@pytest.mark.parametrize(
    ("stop", "rule", "hard"),
    [
        ({"max_hours": 1.0}, "max_hours", True),
        ({"max_gpu_hours": 2.0}, "max_gpu_hours", True),
        ({"target": 0.5}, "target", False),
        ({"plateau_trials": 3}, "plateau", False),
        ({"max_trials": 4}, "max_trials", False),
    ],
)
def test_each_stop_rule_holds_when_its_limit_is_reached(
    finished: Finished, stop: dict, rule: str, hard: bool
) -> None:
    spec = with_stop(finished.spec, **stop)
    u = Used(
        trials=4,
        finished=4,
        trial_limit=trial_limit(spec),
        hours=1.5,
        gpu_hours=3.0,
        since_champion=3,
        champion=0.1,
    )
    s = stop_rule(spec, u, generations_planned=0)
    assert s is not None and (s.rule, s.hard) == (rule, hard)


def test_no_rule_holds_below_every_limit_and_the_generations_end_a_sync_search(finished: Finished) -> None:
    spec = with_stop(finished.spec, max_hours=10.0, target=0.0, plateau_trials=50)
    u = Used(trials=2, finished=2, trial_limit=0, hours=1.0, gpu_hours=0.0, since_champion=1, champion=0.2)
    assert stop_rule(spec, u, generations_planned=1) is None
    s = stop_rule(spec, u, generations_planned=2)
    assert s is not None and (s.rule, s.detail) == ("generations", "all 2 generations planned")
    text = describe(spec, u)
    assert text.startswith("Budget used: 2 trials planned; 1.00 of 10 h (9.00 h left).")
    assert (
        "the champion reaches loss 0" in text and "50 trials finish without a new champion (1 so far)" in text
    )


def test_the_gpu_meter_counts_hours_times_gpus(finished: Finished, tmp_path: Path) -> None:
    shutil.copytree(finished.results, tmp_path / "r")
    paths = ResultsPaths(tmp_path / "r")
    assert GpuMeter(paths).hours(finished.state) == 0.0
    t = finished.state.trials["0000-0000"]
    (paths.trial(t.trial_id).root / PROVENANCE).write_text(
        json.dumps({"v": 1, "attempts": [{"gpu_count": 4}]})
    )
    assert GpuMeter(paths).hours(finished.state) == pytest.approx(4 * (t.total_duration_s or 0) / 3600)

"""hpc_agent.science.usage: GPU-hours and CPU-hours from each trial's provenance.json, the LLM's
round trips, tokens and cost from llm.jsonl."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hpc_agent.job.provenance import PROVENANCE
from hpc_agent.science.usage import compute_used, llm_used
from hpc_agent.store.paths import ResultsPaths
from unit.conftest import Finished


def test_trials_without_provenance_count_as_unknown_hours(finished: Finished) -> None:
    c = compute_used(finished.paths, finished.state)
    ran = [t for t in finished.state.trials.values() if (t.total_duration_s or 0) > 0]
    assert c.unknown_trials == len(ran) == 6
    assert c.gpu_trials == c.cpu_trials == 0 and c.gpu_hours == c.cpu_hours == 0.0
    assert c.unknown_hours == pytest.approx(sum(t.total_duration_s or 0 for t in ran) / 3600)
    assert c.trial_hours == pytest.approx(c.unknown_hours)


def test_gpu_hours_count_each_gpu_and_cpu_hours_each_core(finished: Finished, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(finished.results, results)
    paths = ResultsPaths(results)
    gpu = {"gpu_count": 2, "gpus": [{"name": "H100"}, {"name": "H100"}], "cpus": 8}
    cpu = {"gpu_count": 0, "gpus": None, "cpus": 4}
    for tid, attempt in (("0000-0000", gpu), ("0000-0002", cpu)):
        (paths.trial(tid).root / PROVENANCE).write_text(json.dumps({"v": 1, "attempts": [attempt]}))
    trials = finished.state.trials
    hours = {tid: (trials[tid].total_duration_s or 0) / 3600 for tid in ("0000-0000", "0000-0002")}
    c = compute_used(paths, finished.state)
    assert (c.gpu_trials, c.cpu_trials, c.unknown_trials) == (1, 1, 4)
    assert c.gpu_hours == pytest.approx(2 * hours["0000-0000"])
    assert c.gpu_hours_wall == pytest.approx(hours["0000-0000"])
    assert c.cpu_hours == pytest.approx(4 * hours["0000-0002"])
    assert dict(c.gpu_models) == {"H100": 2}


def test_llm_used_adds_up_the_exchanges_and_leaves_preflight_out(tmp_path: Path) -> None:
    paths = ResultsPaths(tmp_path)
    assert llm_used(paths).round_trips == 0  # no llm.jsonl: zeros
    records = [
        {"purpose": "preflight", "tokens_in": 99, "model": "m0"},
        {"purpose": "propose", "tokens_in": 100, "tokens_out": 20, "cost": 0.5, "model": "m1"},
        {
            "purpose": "propose",
            "tokens_in": 10,
            "tokens_out": 2,
            "error": "timeout",
            "model": "m1",
            "retries": [{"wait_s": 1.0}, {"wait_s": None}],
        },
        {"purpose": "analyze", "tokens_in": 1, "tokens_out": 1, "cost": 0.25, "model": "m2"},
    ]
    paths.llm_log.write_text("".join(json.dumps(r) + "\n" for r in records))
    u = llm_used(paths)
    assert (u.round_trips, u.failed, u.retries) == (3, 1, 1)
    assert (u.tokens_in, u.tokens_out, u.cost) == (111, 23, 0.75)
    assert dict(u.by_purpose) == {"analyze": 1, "propose": 2} and u.models == ("m1", "m2")

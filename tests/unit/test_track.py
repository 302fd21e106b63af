"""hpc_agent.track and the package root (hpc_agent): the API experiment code calls, inside a
trial (the runner's environment) and outside one (the defaults)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hpc_agent
from hpc_agent import track


@pytest.fixture(autouse=True)
def _no_open_metrics() -> Iterator[None]:
    yield
    if track._metrics_file is not None:
        track._metrics_file.close()
    track._metrics_file = track._metrics_path = None


def test_the_package_exports_the_tracking_api() -> None:
    assert hpc_agent.params is track.params and hpc_agent.log is track.log
    assert set(hpc_agent.__all__) >= {"params", "log", "checkpoint_dir", "time_left", "__version__"}


def test_outside_a_campaign_the_calls_still_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in (
        "HPC_AGENT_PARAMS",
        "HPC_AGENT_METRICS",
        "HPC_AGENT_CHECKPOINT_DIR",
        "HPC_AGENT_TRIAL_DIR",
        "HPC_AGENT_TIME_BUDGET_S",
        "HPC_AGENT_START_TIME",
        "HPC_AGENT_SEED",
        "HPC_AGENT_FIDELITY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    assert track.params({"lr": 0.1}) == {"lr": 0.1}
    track.log(step=1, loss=0.5)
    assert capsys.readouterr().out.startswith('metrics {"step": 1, "loss": 0.5, "time": ')
    assert track.checkpoint_dir() == Path("checkpoint") and (tmp_path / "checkpoint").is_dir()
    assert track.trial_dir() is None and track.seed() == 0 and track.fidelity() == 1.0
    assert track.time_budget_s() is None and track.time_left() == math.inf


def test_inside_a_trial_the_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text(json.dumps({"lr": 0.01, "seed": 3}))
    monkeypatch.setenv("HPC_AGENT_PARAMS", str(tmp_path / "params.json"))
    monkeypatch.setenv("HPC_AGENT_METRICS", str(tmp_path / "metrics.jsonl"))
    monkeypatch.setenv("HPC_AGENT_TIME_BUDGET_S", "100")
    monkeypatch.setenv("HPC_AGENT_START_TIME", str(time.time() - 40))
    monkeypatch.setenv("HPC_AGENT_SEED", "3")
    monkeypatch.setenv("HPC_AGENT_FIDELITY", "2.5")
    assert track.params({"lr": 0.1, "hidden": 8}) == {"lr": 0.01, "hidden": 8, "seed": 3}
    track.log(step=0, loss=float("nan"), acc=True)
    track.log(loss=0.25)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 0 and math.isnan(lines[0]["loss"]) and lines[0]["acc"] == 1
    assert "step" not in lines[1] and lines[1]["loss"] == 0.25
    assert track.seed() == 3 and track.fidelity() == 2.5 and track.time_budget_s() == 100.0
    assert 55 < track.time_left() <= 60
    with pytest.raises(TypeError, match=r"hpc_agent\.log: loss='high' is not a number"):
        track.log(loss="high")

"""hpc_agent.cli.results, .cli.admin and .cli.run: each module's commands invoked directly
(Click's runner, in process) on real results folders; the whole group with its error handling
is driven in tests/test_cli.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import write_campaign

from hpc_agent.cli import admin, results
from hpc_agent.cli import run as run_commands
from hpc_agent.store.results import load_state
from hpc_agent.store.state import TrialState
from unit.conftest import Finished, interrupted


@pytest.fixture(autouse=True)
def _no_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "HPC_AGENT_MODEL"):
        monkeypatch.delenv(var, raising=False)
    yield


def invoke(command: object, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)  # type: ignore[arg-type]
    assert result.exit_code == code, result.output
    return result


def test_the_results_commands_read_a_finished_campaign(finished: Finished, tmp_path: Path) -> None:
    data = json.loads(invoke(results.status, str(finished.results), "--json").output)
    assert data["name"] == "tiny" and data["counts"]["completed"] == 5
    best = finished.state.best("min")
    assert best is not None
    shown = invoke(results.show, str(finished.results), "best").output
    assert shown.startswith(f"trial {best.trial_id} · generation {best.generation} · completed")
    csv = invoke(results.export, str(finished.results), "--format", "csv").output
    assert csv.splitlines()[0] == "x,mode,loss" and len(csv.splitlines()) == 6
    ledger = invoke(results.export, str(finished.results), "--format", "ledger").output
    assert ledger.startswith("config\tgeneration\tsource\tloss\truns")
    figure = tmp_path / "p.png"
    invoke(results.plot, str(finished.results), "progress", "-o", str(figure))
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert "no LLM exchanges" in invoke(results.logs, str(finished.results)).output


def test_the_admin_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = interrupted(tmp_path / "i")
    out = invoke(admin.cancel, str(run.results)).output
    assert out == f"cancelled {run.results}: 0 job(s) signalled, 3 unfinished trial(s) stopped\n"
    assert all(t.state is TrialState.CANCELLED for t in load_state(run.results).trials.values())
    monkeypatch.chdir(tmp_path)
    invoke(admin.init, "fresh", "--template", "quickstart")
    assert (tmp_path / "fresh" / "campaign.toml").is_file()
    listing = invoke(admin.profiles).output
    assert listing.startswith("SLURM cluster profiles") and "  local" in listing
    shown = invoke(admin.profiles, "--show", "cpu").output
    assert shown.startswith("# profile cpu: ") and 'partition = "cpu"' in shown


def test_run_then_rerun_on_local_processes(tmp_path: Path) -> None:
    camp = write_campaign(tmp_path / "c", generations=1, batch_size=2)
    out = tmp_path / "r"
    common = ["--executor", "local", "--planner", "random", "-q"]
    done = invoke(run_commands.run, str(camp), "--results", str(out), *common)
    assert done.output.startswith(f"done: 1 generation(s) in {out}")
    state = load_state(out)
    assert state.counts()["completed"] == 2
    again = invoke(run_commands.rerun, str(out), "best", "--seeds", "2", "--executor", "local", "-q")
    assert "done" in again.output
    reruns = [t for t in load_state(out).trials.values() if t.purpose == "rerun"]
    assert len(reruns) == 2 and all(t.state is TrialState.COMPLETED for t in reruns)

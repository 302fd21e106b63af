"""The CLI boundary: help with examples, exit codes, and messages without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpc_agent.cli import cli

COMMANDS = sorted(cli.commands)


def test_every_command_has_help_with_an_example() -> None:
    assert {"run", "status", "export", "cancel", "init", "profiles", "logs"} <= set(COMMANDS)
    for name in COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example" in result.output, f"`hpc-agent {name} --help` shows no example"
    top = CliRunner().invoke(cli, ["--help"])
    assert "Example" in top.output


def test_module_entry_point_and_version() -> None:
    out = subprocess.run([sys.executable, "-m", "hpc_agent", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "hpc-agent" in out.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "nowhere"], "campaign spec not found"),
        (["run"], "Missing argument"),
        (["run", ".", "--executor", "cloud"], "Invalid value for '--executor'"),
        (["run", ".", "--generations", "0"], "Invalid value for '--generations'"),
        (["status", "nowhere"], "results folder not found"),
        (["export", "nowhere"], "results folder not found"),
        (["frobnicate"], "No such command"),
    ],
)
def test_user_errors_exit_2_without_traceback(cli_run, args: list[str], fragment: str) -> None:  # type: ignore[no-untyped-def]
    result = cli_run(*args, code=2)
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_status_of_a_folder_that_is_not_results(cli_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").mkdir()
    result = cli_run("status", str(tmp_path / "empty"), code=2)
    assert "not a campaign results folder" in result.output and "fix:" in result.output


def test_export_group_by_unknown_column(cli_run, make_campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(batch_size=1)
    cli_run("run", str(camp), "--executor", "local", "-q")
    result = cli_run("export", "results/tiny", "--group-by", "colour", code=2)
    assert "--group-by 'colour': no such column" in result.output and "use one of:" in result.output
    result = cli_run("export", "results/tiny", "--format", "parquet", code=2)
    assert "add -o FILE.parquet" in result.output


def test_status_accepts_the_campaign_folder(cli_run, make_campaign) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(batch_size=1)
    cli_run("run", str(camp), "--executor", "local", "-q")
    assert "tiny" in cli_run("status", str(camp)).output


def test_init_scaffolds_a_runnable_campaign(cli_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli_run("init", "my-mlp")
    assert "created" in result.output
    spec = (tmp_path / "my-mlp" / "campaign.toml").read_text()
    assert 'name = "my-mlp"' in spec and (tmp_path / "my-mlp" / "train.py").exists()
    again = cli_run("init", "my-mlp", code=2)
    assert "already exists" in again.output
    from hpc_agent.config.spec import load_spec

    assert load_spec(tmp_path / "my-mlp").name == "my-mlp"


def test_auto_executor_refuses_a_silent_controller(
    cli_run, make_campaign, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """sbatch on PATH but the controller down: an error, never a quiet run on a login node."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "scontrol").write_text("#!/bin/sh\necho 'Slurmctld(primary) at head is DOWN'\n")
    for f in fake_bin.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    camp = make_campaign()
    result = cli_run("run", str(camp), code=2)
    assert "no SLURM controller answers" in result.output and "--executor local" in result.output
    assert not (tmp_path / "results").exists()

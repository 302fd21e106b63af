"""hpc_agent.cli and hpc_agent.cli.group: the command group turns hpc-agent's errors into a
message and an exit code (2 bad input, 1 failure, 130 interrupted), never a traceback; RESULTS
may name the results folder or the campaign. (The commands themselves, in cli/run.py,
cli/results.py and cli/admin.py, are driven through the whole CLI in tests/test_cli.py.)"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hpc_agent import __version__
from hpc_agent.cli import cli as package_cli
from hpc_agent.cli.group import _results_dir, cli
from hpc_agent.errors import CampaignError, UserError
from unit.conftest import Finished


@pytest.fixture
def group() -> click.Group:
    """A group of the same class as hpc-agent's, with commands that raise."""

    @click.group(cls=type(cli))
    def g() -> None:
        """test group"""

    @g.command()
    def bad() -> None:
        raise UserError("--seeds 0: expected >= 1", fix="e.g. --seeds 3")

    @g.command()
    def fails() -> None:
        raise CampaignError("no trial completed", log="/r/driver.log")

    @g.command()
    def interrupted() -> None:
        raise KeyboardInterrupt

    return g


def test_errors_become_messages_and_exit_codes(group: click.Group) -> None:
    bad = CliRunner().invoke(group, ["bad"])
    assert bad.exit_code == 2 and bad.output == "error: --seeds 0: expected >= 1\nfix: e.g. --seeds 3\n"
    assert "Traceback" not in bad.output
    fails = CliRunner().invoke(group, ["fails"])
    assert fails.exit_code == 1 and fails.output == "error: no trial completed\nlog: /r/driver.log\n"
    stopped = CliRunner().invoke(group, ["interrupted"])
    assert stopped.exit_code == 130 and "interrupted." in stopped.output


def test_the_group_has_every_command_with_an_example() -> None:
    assert package_cli is cli
    assert {
        "run",
        "rerun",
        "status",
        "show",
        "export",
        "report",
        "plot",
        "logs",
        "cancel",
        "init",
        "profiles",
    } <= set(cli.commands)
    version = CliRunner().invoke(cli, ["--version"])
    assert version.exit_code == 0 and __version__ in version.output
    for name, command in cli.commands.items():
        assert "xample" in (command.help or "") + (command.epilog or ""), (
            f"`hpc-agent {name} --help` has no example"
        )


def test_results_may_be_named_by_the_folder(finished: Finished, tmp_path: Path) -> None:
    assert _results_dir(str(finished.results)) == finished.results
    with pytest.raises(UserError, match="results folder not found"):
        _results_dir(str(tmp_path / "nowhere"))

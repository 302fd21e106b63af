"""The ``hpc-agent`` command: thin Click commands over the library.

Each command parses its options, calls one library function and prints; each imports only
what it needs, so ``hpc-agent status`` starts fast. The group and how errors become exit
codes are :mod:`hpc_agent.cli.group`; the commands are in :mod:`~hpc_agent.cli.run` (run,
rerun), :mod:`~hpc_agent.cli.results` (status, export, report, plot, show, logs) and
:mod:`~hpc_agent.cli.admin` (cancel, init, profiles).

It may import anything: it is the top of the tree, and nothing imports it but ``__main__``.
"""

from __future__ import annotations

from hpc_agent.cli import admin, results, run
from hpc_agent.cli.group import cli

__all__ = ["admin", "cli", "main", "results", "run"]


def main() -> None:
    """The ``hpc-agent`` console script."""
    cli(prog_name="hpc-agent")

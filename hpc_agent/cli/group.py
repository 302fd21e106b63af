"""The ``hpc-agent`` command group: how errors become messages and exit codes (0 done, 1
failed, 2 bad input: never a traceback for a user's mistake), and what every command shares.
The commands live beside it, one module per group of commands."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from hpc_agent import __version__
from hpc_agent.errors import HpcAgentError, UserError
from hpc_agent.store.journal import TornLineWarning

TRIAL_STATES = ("completed", "failed", "timeout", "preempted", "lost", "cancelled", "planned", "submitted")


class _Group(click.Group):
    """Turns hpc-agent's errors into a message and an exit code, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpcAgentError as e:
            click.echo(click.style("error: ", fg="red", bold=True) + e.render(), err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted.", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hpc-agent")
def cli() -> None:
    """An autonomous ML research agent for SLURM clusters.

    A campaign loops: propose a batch of experiments (an LLM, or Optuna's TPE), run the batch
    as one job array, read the metrics, analyze, plan the next generation. Rerunning
    `hpc-agent run` continues where the last driver stopped.

    \b
    Example:
      hpc-agent run examples/quickstart && hpc-agent status results/quickstart
    """


_python_showwarning = warnings.showwarning


def _show_warning(message: Any, category: Any, filename: str, lineno: int, *args: Any, **kw: Any) -> None:
    """hpc-agent's own warnings (a torn journal line) read like its other messages, without a
    source path."""
    if isinstance(category, type) and issubclass(category, TornLineWarning):
        click.echo(click.style("warning: ", fg="yellow") + str(message), err=True)
        return
    _python_showwarning(message, category, filename, lineno, *args, **kw)


warnings.showwarning = _show_warning


def _results_dir(path: str) -> Path:
    """RESULTS may be the results folder, or a campaign folder/file (then its default results)."""
    p = Path(path)
    if (p / "journal.jsonl").exists():
        return p
    if (p.is_file() and p.suffix == ".toml") or (p / "campaign.toml").exists():
        from hpc_agent.config.spec import load_spec

        spec = load_spec(p)
        guess = Path("results") / spec.name
        if (guess / "journal.jsonl").exists():
            return guess
    if not p.exists():
        raise UserError(
            f"results folder not found: {p}", fix="pass the folder `hpc-agent run` wrote, e.g. results/<name>"
        )
    return p

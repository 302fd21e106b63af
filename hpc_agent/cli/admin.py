"""``hpc-agent cancel``, ``init`` and ``profiles``."""

from __future__ import annotations

from pathlib import Path

import click

from hpc_agent.cli.group import _results_dir, cli

# ------------------------------------------------------------------------------- cancel


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
def cancel(results: Path) -> None:
    """Stop a campaign: cancel its jobs and tell its driver to stop.

    Trials stopped this way run again when the campaign is resumed with `hpc-agent run`.

    \b
    Example:
      hpc-agent cancel results/quickstart
    """
    from hpc_agent.loop.cancel import cancel_campaign

    rdir = _results_dir(str(results))
    n_jobs, n_trials = cancel_campaign(rdir)
    click.echo(f"cancelled {rdir}: {n_jobs} job(s) signalled, {n_trials} unfinished trial(s) stopped")


# ------------------------------------------------------------------------------- init


@cli.command()
@click.argument("name")
@click.option(
    "--template",
    type=click.Choice(["quickstart", "charlm", "nanolm", "nanolm-code", "argparse"]),
    default="quickstart",
    show_default=True,
)
def init(name: str, template: str) -> None:
    """Scaffold a campaign folder NAME from a template.

    \b
    Example:
      hpc-agent init my-mlp && hpc-agent run my-mlp
      hpc-agent init adder --template charlm   # a tiny GPT an LLM agent can edit
      hpc-agent init lm --template nanolm      # a small GPT on real text, scored in bits per byte
      hpc-agent init lm --template nanolm-code # the same, code-first: no [space], the agent edits train.py
      hpc-agent init mine --template argparse  # your own argparse script, run unchanged
    """
    from hpc_agent.config.scaffold import scaffold

    dest = scaffold(name, template)
    files = ", ".join(sorted(p.name for p in Path(dest).iterdir() if not p.name.startswith((".", "__"))))
    click.echo(f"created {dest}/ ({files}); run it with: hpc-agent run {dest}")


# ------------------------------------------------------------------------------- profiles


@cli.command()
@click.option("--show", "show", metavar="NAME", help="Print one profile's resolved parameters.")
def profiles(show: str | None) -> None:
    """List the SLURM cluster profiles (slurm_templates/), or show one.

    \b
    Examples:
      hpc-agent profiles
      hpc-agent profiles --show generic-gpu
      hpc-agent run my-campaign --profile generic-gpu
    """
    from hpc_agent.config.profiles import describe_profiles
    from hpc_agent.executors.slurm.text import show_profile

    click.echo(show_profile(show) if show else describe_profiles(), nl=False)

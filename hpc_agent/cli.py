"""The ``hpc-agent`` command: thin Click commands over the library.

Each command parses its options, calls one library function and prints. Domain errors become
clear messages and exit codes here, at the boundary: 0 done, 1 failed, 2 bad input (never a
traceback for a user's mistake).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import click

from hpc_agent import __version__
from hpc_agent.errors import HpcAgentError, UserError
from hpc_agent.journal import TornLineWarning, lock_holder

TRIAL_STATES = ("completed", "failed", "timeout", "preempted", "lost", "cancelled", "planned", "submitted")

EPILOG_RUN = """\b
Examples:
  hpc-agent run examples/quickstart                 # local processes, TPE planner
  hpc-agent run examples/quickstart --generations 5 # extend a finished campaign
  hpc-agent run my-campaign --executor slurm --profile generic-gpu --detach
  OPENAI_BASE_URL=http://localhost:8000/v1 hpc-agent run my-campaign --planner llm
"""


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


def main() -> None:
    """The ``hpc-agent`` console script."""
    cli(prog_name="hpc-agent")


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
        from hpc_agent.spec import load_spec

        spec = load_spec(p)
        guess = Path("results") / spec.name
        if (guess / "journal.jsonl").exists():
            return guess
    if not p.exists():
        raise UserError(
            f"results folder not found: {p}", fix="pass the folder `hpc-agent run` wrote, e.g. results/<name>"
        )
    return p


# ------------------------------------------------------------------------------- run


@cli.command(epilog=EPILOG_RUN)
@click.argument("campaign", type=click.Path(path_type=Path))
@click.option(
    "--results", type=click.Path(path_type=Path), help="Results folder [default: results/<campaign name>]."
)
@click.option(
    "--executor", type=click.Choice(["auto", "local", "slurm"]), help="Where trials run [default: auto]."
)
@click.option("--profile", help="SLURM cluster profile: a name from `hpc-agent profiles`, or a .toml path.")
@click.option(
    "--planner", type=click.Choice(["auto", "llm", "tpe", "random"]), help="Who plans [default: auto]."
)
@click.option(
    "--generations", type=click.IntRange(min=1), help="Total generations (raise it to extend a campaign)."
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Proposals per generation.")
@click.option(
    "--parallelism", type=click.IntRange(min=1), help="Trials at once (local: cores; SLURM: array %N)."
)
@click.option(
    "--poll-interval", "poll_interval_s", type=click.FloatRange(min=0.05), help="Seconds between polls."
)
@click.option("--force", is_flag=True, help="Use a results folder that belongs to a different spec.")
@click.option("--detach", is_flag=True, help="Run the driver in the background (log: RESULTS/driver.log).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def run(
    campaign: Path,
    results: Path | None,
    executor: str | None,
    profile: str | None,
    planner: str | None,
    generations: int | None,
    batch_size: int | None,
    parallelism: int | None,
    poll_interval_s: float | None,
    force: bool,
    detach: bool,
    quiet: bool,
) -> None:
    """Run a campaign, or resume it: the same command does both.

    CAMPAIGN is a folder holding campaign.toml, or the .toml file itself.
    """
    from hpc_agent.results import check_results
    from hpc_agent.spec import load_spec

    spec = load_spec(campaign).with_overrides(
        generations=generations,
        batch_size=batch_size,
        executor=executor,
        planner=planner,
        parallelism=parallelism,
        profile=profile,
        poll_interval_s=poll_interval_s,
    )
    results = results or Path("results") / spec.name
    setup = _setup(spec, quiet)
    if detach:
        _check_not_running(results)
        check_results(spec, results, force)  # refuse a foreign folder now, not in the background
        args = _rebuild_args(
            campaign,
            results,
            force,
            executor,
            profile,
            planner,
            generations,
            batch_size,
            parallelism,
            poll_interval_s,
        )
        _detach(args, results)
        return
    _run_attached(spec, results, force, setup, quiet)


def _setup(spec: Any, quiet: bool) -> dict[str, Any]:
    """Choose (and check) the executor and the planner, and say which were chosen."""
    from hpc_agent.executors import make_executor
    from hpc_agent.planners import make_planner, resolve_planner_kind

    ex = spec.executor
    executor = make_executor(
        ex.kind,
        parallelism=ex.parallelism,
        poll_interval_s=ex.poll_interval_s,
        profile=ex.profile,
        overrides=ex.overrides_dict(),
    )
    kind, why = resolve_planner_kind(spec)
    planner = make_planner(kind, spec)
    check = getattr(planner, "preflight", None)  # planners that talk to a server check it first
    if check is not None:
        check()  # an unreachable endpoint or a refused key is an error before anything is submitted
    if not quiet:
        click.echo(f"planner: {planner.describe()} ({why})", err=True)
        click.echo(f"executor: {executor.describe()}", err=True)
    return {"executor": executor, "planner": planner}


def _run_attached(spec: Any, results: Path, force: bool, setup: dict[str, Any], quiet: bool) -> None:
    from hpc_agent.campaign import Campaign, exit_message
    from hpc_agent.display import RichReporter
    from hpc_agent.planners import make_planner
    from hpc_agent.reporter import SilentReporter

    reporter: Any = SilentReporter() if quiet else RichReporter()
    camp = Campaign(
        spec,
        results,
        setup["executor"],
        setup["planner"],
        reporter,
        fallback_planner=lambda: make_planner("tpe", spec),
        force=force,
    )
    # a login node's reaper (SIGTERM) or a closed terminal (SIGHUP) stops the driver like Ctrl-C:
    # the journal records the stop, the lock is released, a rerun resumes
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    try:
        result = camp.run(sys.argv)
    except KeyboardInterrupt:
        if hasattr(reporter, "close"):
            reporter.close()
        where = (
            "its running trials were stopped with it and will be requeued"
            if setup["executor"].name == "local"
            else "the jobs keep running on the cluster; `hpc-agent cancel` stops them"
        )
        click.echo(f"\ninterrupted: the driver stopped; {where}. Run the same command to resume.", err=True)
        sys.exit(130)
    finally:
        if hasattr(reporter, "close"):
            reporter.close()
    click.echo(exit_message(result))
    if result.status == "cancelled" or result.failed:
        sys.exit(1)


def _check_not_running(results: Path) -> None:
    from hpc_agent.paths import ResultsPaths
    from hpc_agent.results import driver_info

    info = driver_info(ResultsPaths(results))
    if info:
        raise UserError(
            f"a driver (pid {info['pid']} on {info['host']}) is already running {results}",
            fix=f"watch it with `hpc-agent status {results}`",
        )


def _rebuild_args(campaign: Path, results: Path, force: bool, *values: Any) -> list[str]:
    names = [
        "--executor",
        "--profile",
        "--planner",
        "--generations",
        "--batch-size",
        "--parallelism",
        "--poll-interval",
    ]
    args = ["run", str(campaign.resolve()), "--results", str(results.resolve())]
    if force:
        args.append("--force")
    for name, v in zip(names, values):
        if v is not None:
            args += [name, str(v)]
    return args


DETACH_HANDOFF_S = 120.0  # how long `run --detach` waits for its driver to take the lock


def _detach(args: list[str], results: Path) -> None:
    """Start the driver in the background and return once it holds the results folder's lock
    (exit 0), or has failed (its error and exit code: a second ``--detach`` loses the race for
    the lock with exit 2, on the terminal)."""
    from hpc_agent.paths import ResultsPaths

    paths = ResultsPaths(results)
    paths.root.mkdir(parents=True, exist_ok=True)
    log = paths.driver_log
    with open(log, "ab") as f:
        start = f.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpc_agent", *args],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + DETACH_HANDOFF_S
    while proc.poll() is None and time.monotonic() < deadline:
        holder = lock_holder(paths.driver_lock)
        if holder is not None and holder[1] == proc.pid:
            break
        time.sleep(0.05)
    if proc.poll() is not None and proc.returncode != 0:
        with open(log, "rb") as f:
            f.seek(start)
            said = f.read().decode("utf-8", errors="replace").strip()
        click.echo(said or f"the detached driver exited with code {proc.returncode}", err=True)
        sys.exit(proc.returncode)
    click.echo(f"detached: driver pid {proc.pid}, log {log}")
    click.echo(f"follow it with `hpc-agent status {results}`; stop it with `hpc-agent cancel {results}`")


# ------------------------------------------------------------------------------- status


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--failures", "max_failures", default=10, show_default=True, help="Failed trials to list.")
def status(results: Path, as_json: bool, max_failures: int) -> None:
    """Generations, trials by state, best so far, and the driver and jobs.

    \b
    Example:
      hpc-agent status results/quickstart
      hpc-agent status results/quickstart --json | jq .best
    """
    from hpc_agent.status import status_report

    report = status_report(_results_dir(str(results)))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    from hpc_agent.display import print_status

    print_status(report, max_failures)


# ------------------------------------------------------------------------------- export


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "markdown", "latex", "parquet"]),
    default="markdown",
    show_default=True,
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to FILE instead of stdout.")
@click.option(
    "--group-by", multiple=True, help="Aggregate mean ± std per group (e.g. config_id, or a parameter)."
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([*TRIAL_STATES, "all"]),
    help="Trials in this state (repeatable) [default: completed; 'all': every trial].",
)
@click.option("--top", type=click.IntRange(min=1), help="Only the best N rows.")
@click.option("--caption", default="", help="LaTeX caption.")
@click.option("--label", default="", help="LaTeX label.")
def export(
    results: Path,
    fmt: str,
    output: Path | None,
    group_by: tuple[str, ...],
    states: tuple[str, ...],
    top: int | None,
    caption: str,
    label: str,
) -> None:
    """Export the trials table (best first) as CSV, Markdown, LaTeX or Parquet.

    \b
    Examples:
      hpc-agent export results/quickstart --format csv -o trials.csv
      hpc-agent export results/quickstart --format latex --group-by config_id --top 5
      hpc-agent export results/quickstart --format markdown --group-by activation
    """
    from hpc_agent.paths import ResultsPaths
    from hpc_agent.report import export as do_export
    from hpc_agent.report import grouped, load_table, results_table
    from hpc_agent.results import load_state, spec_of

    rdir = _results_dir(str(results))
    state = load_state(rdir)
    spec = spec_of(state)
    df = load_table(ResultsPaths(rdir), state, spec)
    table = grouped(df, spec, group_by) if group_by else results_table(df, spec, states or None)
    if top:
        table = table.head(top)
    text = do_export(table, fmt, output, caption=caption, label=label, mode=spec.campaign.mode)
    if text is not None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {output} ({table.height} rows)", err=True)


# ------------------------------------------------------------------------------- report


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
def report(results: Path) -> None:
    """Write RESULTS/report.md and plots (progress, parameter effects).

    Plots need matplotlib (pip install 'hpc-agent[plots]'); without it the report has tables only.

    \b
    Example:
      hpc-agent report results/quickstart && less results/quickstart/report.md
    """
    from hpc_agent.report import write_report

    path, figures = write_report(_results_dir(str(results)))
    click.echo(
        f"wrote {path}"
        + (f" and {len(figures)} plot(s) in {figures[0].parent}" if figures else " (no plots)")
    )


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
    from hpc_agent.cancel import cancel_campaign

    rdir = _results_dir(str(results))
    n_jobs, n_trials = cancel_campaign(rdir)
    click.echo(f"cancelled {rdir}: {n_jobs} job(s) signalled, {n_trials} unfinished trial(s) stopped")


# ------------------------------------------------------------------------------- init


@cli.command()
@click.argument("name")
@click.option(
    "--template",
    type=click.Choice(["quickstart", "charlm", "nanolm"]),
    default="quickstart",
    show_default=True,
)
def init(name: str, template: str) -> None:
    """Scaffold a campaign folder NAME from a template.

    \b
    Example:
      hpc-agent init my-mlp && hpc-agent run my-mlp
      hpc-agent init adder --template charlm   # a tiny GPT an LLM agent can edit
    """
    from hpc_agent.scaffold import scaffold

    dest = scaffold(name, template)
    click.echo(f"created {dest}/ (campaign.toml, train.py); run it with: hpc-agent run {dest}")


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
    from hpc_agent.executors.slurm.profiles import describe_profiles
    from hpc_agent.executors.slurm.text import show_profile

    click.echo(show_profile(show) if show else describe_profiles(), nl=False)


# ------------------------------------------------------------------------------- logs


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--generation", "-g", type=int, help="Only this generation's exchanges.")
@click.option("--json", "as_json", is_flag=True, help="The raw records (JSON lines).")
@click.option("--full", is_flag=True, help="Show the whole prompts and replies.")
def logs(results: Path, generation: int | None, as_json: bool, full: bool) -> None:
    """Read the LLM exchange log (llm.jsonl): prompts, replies, errors, tokens, cost.

    \b
    Examples:
      hpc-agent logs results/my-campaign
      hpc-agent logs results/my-campaign --generation 2 --full
    """
    from hpc_agent.llm import format_log

    click.echo(
        format_log(_results_dir(str(results)), generation=generation, as_json=as_json, full=full), nl=False
    )


if __name__ == "__main__":  # pragma: no cover
    main()

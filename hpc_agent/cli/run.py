"""``hpc-agent run`` (attached or detached) and ``hpc-agent rerun``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from hpc_agent.cli.group import _results_dir, cli
from hpc_agent.errors import UserError
from hpc_agent.store.journal import lock_holder

EPILOG_RUN = """\b
Examples:
  hpc-agent run examples/quickstart                 # local processes, TPE planner
  hpc-agent run examples/quickstart --generations 5 # extend a finished campaign
  hpc-agent run my-campaign --executor slurm --profile generic-gpu --detach
  hpc-agent run my-campaign --schedule async       # generations overlap: no slot waits
  OPENAI_BASE_URL=http://localhost:8000/v1 hpc-agent run my-campaign --planner llm
"""


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
    "--schedule",
    type=click.Choice(["sync", "async"]),
    help="sync: a generation is a barrier; async: generations overlap [default: the spec's].",
)
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
    schedule: str | None,
    parallelism: int | None,
    poll_interval_s: float | None,
    force: bool,
    detach: bool,
    quiet: bool,
) -> None:
    """Run a campaign, or resume it: the same command does both.

    CAMPAIGN is a folder holding campaign.toml, or the .toml file itself.
    """
    from hpc_agent.config.spec import load_spec
    from hpc_agent.store.results import check_results

    spec = load_spec(campaign).with_overrides(
        generations=generations,
        batch_size=batch_size,
        schedule=schedule,
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
            schedule,
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
    from hpc_agent.loop.campaign import Campaign
    from hpc_agent.loop.driver import exit_message
    from hpc_agent.loop.reporter import SilentReporter
    from hpc_agent.outputs.terminal import RichReporter
    from hpc_agent.planners import make_planner

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
    from hpc_agent.store.paths import ResultsPaths
    from hpc_agent.store.results import driver_info

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
        "--schedule",
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
    from hpc_agent.store.paths import ResultsPaths

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


# ------------------------------------------------------------------------------- rerun


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.argument("trial")
@click.option(
    "--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Runs, from the trial's seed."
)
@click.option(
    "--budget-multiplier",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Times the campaign's time budget (the experiment reads HPC_AGENT_FIDELITY).",
)
@click.option(
    "--executor",
    type=click.Choice(["auto", "local", "slurm"]),
    help="Where it runs [default: the campaign's].",
)
@click.option("--profile", help="SLURM cluster profile (default: the campaign's).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def rerun(
    results: Path,
    trial: str,
    seeds: int,
    budget_multiplier: float,
    executor: str | None,
    profile: str | None,
    quiet: bool,
) -> None:
    """Run one trial again, exactly: its code snapshot and params (and its seed; --seeds N
    for more), journaled as its reproduction and shown next to it in the tables
    (`reproduced`, `reproduced_delta`).

    TRIAL is a trial id (0001-0002, or 1-2) or `best`.

    \b
    Examples:
      hpc-agent rerun results/quickstart best
      hpc-agent rerun results/quickstart 0001-0002 --seeds 3 --budget-multiplier 2
    """
    from hpc_agent.executors import make_executor
    from hpc_agent.loop.campaign import Campaign
    from hpc_agent.loop.driver import exit_message
    from hpc_agent.loop.rerun import plan_rerun
    from hpc_agent.planners import make_planner
    from hpc_agent.store.results import load_state, spec_of

    rdir = _results_dir(str(results))
    spec = spec_of(load_state(rdir)).with_overrides(executor=executor, profile=profile)
    ex = spec.executor
    runner = make_executor(
        ex.kind, parallelism=ex.parallelism, poll_interval_s=ex.poll_interval_s, profile=ex.profile,
        overrides=ex.overrides_dict(),
    )  # fmt: skip
    g = plan_rerun(rdir, trial, seeds, budget_multiplier)
    reporter: Any = None if quiet else _reporter()
    camp = Campaign(spec, rdir, runner, make_planner("random", spec), reporter, stop_after=g)
    result = camp.run(sys.argv)
    click.echo(exit_message(result))
    click.echo(
        f"reproduction: generation {g}; see `hpc-agent export {rdir} --columns ...` or `hpc-agent show`"
    )


def _reporter() -> Any:
    from hpc_agent.outputs.terminal import RichReporter

    return RichReporter()

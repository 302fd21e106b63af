"""The commands that read a results folder: ``status``, ``export``, ``report``, ``plot``,
``show`` and ``logs``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hpc_agent.cli.group import TRIAL_STATES, _results_dir, cli
from hpc_agent.errors import UserError

# ------------------------------------------------------------------------------- status


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--failures", "max_failures", default=10, show_default=True, help="Failed trials to list.")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="A row for every generation (past 12, the table shows the recent ones and a summary).",
)
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="--watch: seconds.",
)
def status(
    results: Path, as_json: bool, max_failures: int, watch: bool, show_all: bool, interval_s: float
) -> None:
    """Generations, trials by state, best so far, and the driver and jobs.

    Also the budget used and left, the stop rule that ended the search, the generations in
    flight (async schedule), the noise floor, the verdicts and the champion. Past 12
    generations the table shows the recent ones, those in flight, a row for the others and
    the totals, and the champion's history follows (--all: every generation).

    \b
    Example:
      hpc-agent status results/quickstart
      hpc-agent status results/quickstart --watch        # Ctrl-C to stop watching
      hpc-agent status results/long-campaign --all       # a row for every generation
      hpc-agent status results/quickstart --json | jq .best
      hpc-agent status results/quickstart --json | jq .budget
    """
    from hpc_agent.outputs.status import status_report

    rdir = _results_dir(str(results))
    if watch and as_json:
        raise UserError(
            "--watch refreshes the table on a terminal; --json prints once", fix="drop one of them"
        )
    if watch:
        from hpc_agent.outputs.terminal import watch_status

        watch_status(rdir, interval_s, max_failures, show_all=show_all)
        return
    report = status_report(rdir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    from hpc_agent.outputs.terminal import print_status

    print_status(report, max_failures, show_all=show_all)


# ------------------------------------------------------------------------------- export


def _campaign_table(results: Path) -> tuple[Path, Any, Any]:
    """(results folder, spec, trials table) of RESULTS."""
    from hpc_agent.outputs.report import load_table
    from hpc_agent.store.paths import ResultsPaths
    from hpc_agent.store.results import load_state, spec_of

    rdir = _results_dir(str(results))
    state = load_state(rdir)
    spec = spec_of(state)
    return rdir, spec, load_table(ResultsPaths(rdir), state, spec)


EPILOG_EXPORT = """\b
Examples:
  hpc-agent export results/quickstart --format latex --top 5 -o table.tex
  hpc-agent export results/quickstart --format latex --metrics val_loss,val_acc:max \\
      --columns lr,hidden,val_loss,val_acc --digits 3 --caption "MLP on digits" --label tab:mlp
  hpc-agent export results/quickstart --format csv -o trials.csv      # raw numbers
  hpc-agent export results/quickstart --per-trial --columns trial_id,lr,val_loss,duration_s
  hpc-agent export results/quickstart --group-by activation
  hpc-agent export results/quickstart --format ledger -o results.tsv  # every verdict
  hpc-agent export results/nanolm --format git -o nanolm-log          # kept changes as commits
  git -C ~/my-repo fetch $PWD/nanolm-log hpc-agent/nanolm              # ...into your repository

\b
Rows: completed trials, best first; one per configuration (mean ± std, n) when the campaign
runs several seeds. Columns: the parameters and the metrics, unless --columns says which and
in what order (any parameter or metric, or trial_id, trials, generation, config_id, seed,
seeds, n, state, source, attempts, duration_s, steps, objective). The best value of each
metric column is in bold (Markdown, LaTeX); a metric's better direction is the campaign's
mode for its own metric, else guessed from its name, else told with NAME:min or NAME:max.
CSV and Parquet keep raw numbers (a mean ± std column as NAME_mean, NAME_std).

\b
--format git -o DIR writes a new git repository (with the git command line; docs/paper.md):
a base commit of the editable files, then one commit per kept configuration in the order
they were kept, its message the config id, hypothesis, metric (mean ± SE, n) and verdict.
When the workdir was in a git repository, the branch hpc-agent/NAME starts from the commit
the campaign ran, so that `git fetch DIR hpc-agent/NAME` brings it into that repository.
"""


@cli.command(epilog=EPILOG_EXPORT)
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "markdown", "latex", "parquet", "ledger", "git"]),
    default="markdown",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write to FILE instead of stdout (--format git: a new folder DIR).",
)
@click.option("--columns", multiple=True, help="Columns to show, in order (comma list or repeated).")
@click.option(
    "--metrics", multiple=True, help="Metrics to show (NAME or NAME:min|max; comma list or repeated)."
)
@click.option("--group-by", multiple=True, help="One row per group, mean ± std and n (e.g. activation).")
@click.option("--per-trial", is_flag=True, help="One row per trial, even with several seeds.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([*TRIAL_STATES, "all"]),
    help="Trials in this state (repeatable) [default: completed; 'all': every trial].",
)
@click.option("--top", type=click.IntRange(min=1), help="Only the best N rows.")
@click.option(
    "--digits", type=click.IntRange(1, 12), default=4, show_default=True, help="Significant digits (not CSV)."
)
@click.option("--caption", default="", help="Caption (LaTeX; Markdown: a pandoc 'Table:' line).")
@click.option("--label", default="", help="Label for cross-references (e.g. tab:results).")
def export(
    results: Path,
    fmt: str,
    output: Path | None,
    columns: tuple[str, ...],
    metrics: tuple[str, ...],
    group_by: tuple[str, ...],
    per_trial: bool,
    states: tuple[str, ...],
    top: int | None,
    digits: int,
    caption: str,
    label: str,
) -> None:
    """Export the results as a table for a paper: LaTeX (booktabs), Markdown, CSV or Parquet;
    or the ledger: every configuration with its keep/discard/crash verdict (TSV); or the kept
    code changes as a git branch (--format git -o DIR)."""
    from hpc_agent.outputs.tables import export as do_export
    from hpc_agent.outputs.tables import paper_table

    if fmt == "git":
        _export_git(results, output)
        return
    rdir, spec, df = _campaign_table(results)
    if fmt == "ledger":
        from hpc_agent.store.results import load_state

        _export_ledger(load_state(rdir), spec, df, output)
        return
    table = paper_table(
        df,
        spec,
        columns=columns,
        metrics=metrics,
        group_by=group_by,
        per_trial=per_trial,
        states=states,
        top=top,
    )
    if fmt in ("csv", "parquet") and (caption or label):
        click.echo(f"note: --caption and --label are not part of {fmt} (raw numbers only)", err=True)
    text = do_export(table, fmt, output, digits=digits, caption=caption, label=label, source=str(rdir))
    if text is not None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {output} ({table.frame.height} rows, {len(table.columns)} columns)", err=True)


def _export_ledger(state: Any, spec: Any, df: Any, output: Path | None) -> None:
    from hpc_agent.science.ledger import ledger_table, render_ledger

    text = render_ledger(ledger_table(state, spec, df))
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output} ({text.count(chr(10)) - 1} configurations)", err=True)


def _export_git(results: Path, output: Path | None) -> None:
    from hpc_agent.outputs.git_export import export_git

    if output is None:
        raise UserError(
            "--format git writes a repository: it needs -o DIR",
            fix=f"hpc-agent export {results} --format git -o DIR",
        )
    done = export_git(_results_dir(str(results)), output)
    if done.warning:
        click.echo(f"warning: {done.warning}", err=True)
    start = f" on top of your commit {done.base_commit[:12]}" if done.base_commit else ""
    click.echo(
        f"wrote {output}: branch {done.branch}, {len(done.commits)} commit(s) (the base and "
        f"{len(done.kept)} kept configuration(s)){start}\n"
        f"read it: git -C {output} log --reverse --stat\n"
        f"bring it into your repository: git fetch {output.resolve()} {done.branch}:{done.branch}"
    )


# ------------------------------------------------------------------------------- report


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
def report(results: Path) -> None:
    """Write RESULTS/report.md, a standalone RESULTS/report.html and the figures (plots/).

    The report: the best configurations, progress, figures, the champion's lineage with each
    kept code change, compute (GPU-hours, CPU-hours) and LLM tokens and cost, parameter
    effects, failures and every generation's analysis. report.html is one file (figures
    embedded) that opens from an email. Figures need matplotlib (pip install
    'hpc-agent[plots]'); without it the report has tables only.

    \b
    Example:
      hpc-agent report results/quickstart && xdg-open results/quickstart/report.html
    """
    from hpc_agent.outputs.report import write_report

    written = write_report(_results_dir(str(results)))
    figures = (
        f" and {len(written.figures)} figure file(s) in {written.figures[0].parent}"
        if written.figures
        else ""
    )
    click.echo(
        f"wrote {written.markdown}, {written.html.name}{figures or ' (no figures: matplotlib missing?)'}"
    )


# ------------------------------------------------------------------------------- plot

FIGURE_KINDS = ("progress", "curves", "generations", "params")


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.argument("kind", type=click.Choice(FIGURE_KINDS))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="FILE.pdf, .png or .svg [default: RESULTS/plots/KIND.pdf and .png].",
)
def plot(results: Path, kind: str, output: Path | None) -> None:
    """Draw one figure: progress, curves (learning curves of the best trials), generations
    (the distribution of each generation's results) or params (the metric against the most
    influential parameters).

    \b
    Examples:
      hpc-agent plot results/quickstart curves -o curves.pdf
      hpc-agent plot results/quickstart params            # plots/params.pdf and .png
    """
    from hpc_agent.outputs.figures import FigureInput, make_figure
    from hpc_agent.store.paths import ResultsPaths

    rdir, spec, df = _campaign_table(results)
    paths = ResultsPaths(rdir)
    targets = [output] if output else [paths.plots / f"{kind}.pdf", paths.plots / f"{kind}.png"]
    for target in targets:
        if make_figure(kind, FigureInput(df, spec, paths), target) is None:
            raise UserError(
                f"nothing to draw for {kind!r} yet: no completed trial"
                + (" logged its metric over steps" if kind == "curves" else "")
                + (" (or no parameter varied; params needs 3 completed trials)" if kind == "params" else ""),
                fix=f"see `hpc-agent status {rdir}`",
            )
        click.echo(f"wrote {target}")


# ------------------------------------------------------------------------------- show


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.argument("trial")
def show(results: Path, trial: str) -> None:
    """Everything about one trial: params, hypothesis, who proposed it, its code change,
    state and attempts, a summary and learning curve of each metric, provenance (git commit,
    host, job ids, versions, GPUs) and log paths.

    TRIAL is a trial id (0001-0002, or 1-2) or `best`.

    \b
    Examples:
      hpc-agent show results/quickstart best
      hpc-agent show results/quickstart 0001-0002
    """
    from hpc_agent.outputs.show import render_trial, trial_view

    click.echo(render_trial(trial_view(_results_dir(str(results)), trial)), nl=False)


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


# ------------------------------------------------------------------------------- serve


@cli.command("serve")
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Where to listen; keep 127.0.0.1 and reach it through an SSH tunnel.",
)
def serve_command(results: Path, port: int, host: str) -> None:
    """A live web page of a campaign: it updates itself while the driver runs, and keeps
    working when the driver stops, restarts or finishes. Read-only: it writes nothing into
    RESULTS and takes no lock.

    The head (generations, trials by state, the champion and its margin, the noise floor,
    the budget, the planner), the progress plot, the trials in flight, the ledger (sortable,
    filterable), each trial's page (params, hypothesis, diff, curves, stderr, provenance, the
    rerun command), the champion's lineage and the analyses. Every request needs the token
    in the URL it prints (then a cookie); without it, 403. No internet needed.

    \b
    Example (on the login node, then on your laptop):
      hpc-agent serve results/quickstart --port 8765
      ssh -N -L 8765:localhost:8765 login-node     # then open the printed URL
    """
    import socket

    from hpc_agent.serve.app import bind, new_token, serve
    from hpc_agent.store.paths import ResultsPaths

    rdir = _results_dir(str(results))
    if not ResultsPaths(rdir).journal.exists():
        raise UserError(
            f"{rdir} is not a campaign results folder (no journal.jsonl)",
            fix="pass the folder `hpc-agent run` writes, e.g. results/<campaign name> "
            "(the page may be started before the driver: once it has written its journal)",
        )
    sock = bind(host, port)
    token = new_token()
    bound = int(sock.getsockname()[1])
    shown = host if host not in ("0.0.0.0", "::") else socket.gethostname()
    click.echo(f"serving {rdir} (read-only); Ctrl-C to stop")
    click.echo(f"open: http://{shown}:{bound}/?token={token}")
    if host in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"from your laptop: ssh -N -L {bound}:localhost:{bound} {socket.gethostname()}, "
            f"then open http://localhost:{bound}/?token={token}"
        )
    else:
        click.echo(f"warning: listening on {host}: anyone who can reach this port needs only the token")
    serve(rdir, sock, token)

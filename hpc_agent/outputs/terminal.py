"""What the user sees while a campaign runs: a rich progress display on a terminal, one line
per change otherwise (a detached driver's log, CI)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from hpc_agent.store.state import TrialState

_FINISHED = tuple(s.value for s in TrialState if s.is_finished())
WAITING_SHOWN = 5  # pending and candidate configurations listed by status, with why
_SHOWN = (
    "running",
    "submitted",
    "planned",
    "completed",
    "failed",
    "timeout",
    "preempted",
    "lost",
    "cancelled",
)
_COLORS = {"running": "cyan", "completed": "green", "failed": "red", "timeout": "yellow", "lost": "magenta"}


def describe_counts(counts: Mapping[str, int], color: bool = False) -> str:
    """ "3 running · 5 completed": the non-zero counts in a fixed order (rich markup when ``color``)."""
    parts = []
    for s in _SHOWN:
        n = counts.get(s, 0)
        if n:
            text = f"{n} {s}"
            parts.append(f"[{_COLORS[s]}]{text}[/]" if color and s in _COLORS else text)
    return " · ".join(parts)


class RichReporter:
    """A progress bar per generation (terminal) or a line per change (anything else)."""

    def __init__(self, console: Console | None = None, show_analysis: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.show_analysis = show_analysis
        self._progress: Any = None
        self._tasks: dict[int, Any] = {}
        self._last_line: dict[int, str] = {}
        self._last_print = 0.0

    def _bar(self) -> Any:
        # rich's progress and markdown are loaded by a running campaign, not by `status`
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        if self._progress is None:
            # at 80 columns the counts wrap at words inside their own column; no value is cut
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", table_column=Column(no_wrap=True)),
                BarColumn(bar_width=12),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[best]}", table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[states]}", table_column=Column(ratio=1, no_wrap=False)),
                console=self.console,
                expand=True,
            )
            self._progress.start()
        return self._progress

    def info(self, message: str) -> None:
        """A message, as it is (no markup); wrapped at words on a terminal, one line in a log."""
        self.console.print(message, highlight=False, markup=False, soft_wrap=not self.live)

    def warn(self, message: str) -> None:
        """A warning, marked as one."""
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
        """Update generation's bar (terminal), or print a line when the counts changed (at most
        every 5 s)."""
        total = sum(counts.values())
        done = sum(counts.get(s, 0) for s in _FINISHED)
        best_text = f"best {best:.6g}" if best is not None else ""
        if self.live:
            bar = self._bar()
            states = describe_counts(counts, color=True)
            if generation not in self._tasks:
                self._tasks[generation] = bar.add_task(
                    f"gen {generation}", total=total, states=states, best=best_text
                )
            bar.update(self._tasks[generation], completed=done, total=total, states=states, best=best_text)
            return
        line = f"generation {generation}: {done}/{total} finished · {describe_counts(counts)}"
        line += f" · {best_text}" if best_text else ""
        now = time.monotonic()
        if line != self._last_line.get(generation) and (done == total or now - self._last_print > 5):
            self._last_line[generation] = line
            self._last_print = now
            self.console.print(
                line, highlight=False, markup=False, soft_wrap=True
            )  # a log line stays one line

    def generation_done(self, generation: int, analysis: str) -> None:
        """Show the generation's analysis (rendered markdown on a terminal)."""
        if self.show_analysis and analysis.strip():
            if self.live:
                from rich.markdown import Markdown

                self.console.print(Markdown(analysis))
            else:
                self.console.print(analysis, highlight=False, markup=False, soft_wrap=True)

    def close(self) -> None:
        """Stop the progress display (call before printing anything else)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# ------------------------------------------------------------------------------- hpc-agent status


SUMMARY_AFTER = 12  # more generations than this: the table shows the recent ones and a summary
RECENT_GENERATIONS = 8
CHAMPION_HISTORY = 6  # the last keeps shown when the table is summarised


def print_status(
    report: Any, max_failures: int = 10, console: Console | None = None, show_all: bool = False
) -> None:
    """Render a :class:`hpc_agent.outputs.status.StatusReport` for the terminal (``show_all``: a row
    for every generation, however many)."""
    (console or Console()).print(status_view(report, max_failures, show_all))


def status_view(report: Any, max_failures: int = 10, show_all: bool = False) -> Group:
    """What ``hpc-agent status`` shows of a :class:`hpc_agent.outputs.status.StatusReport`, as one
    renderable (printed once, or refreshed in place by ``--watch``). Past
    :data:`SUMMARY_AFTER` generations, unless ``show_all``, the table has a row for the recent
    ones and those in flight, one for all the others together and one for the totals, and
    the champion's history follows it."""
    drv = report.driver
    driver = f"running (pid {drv['pid']} on {drv['host']})" if drv else "not running"
    if report.cancelled:
        driver += ", cancelled"
    better = "lower" if report.mode == "min" else "higher"
    if report.schedule == "async":
        flight = ", ".join(str(g) for g in report.in_flight) or "none"
        progress = f"async, {report.generations_done} generations done, in flight: {flight}"
    else:
        progress = f"{report.generations_done}/{report.generations_target} generations done"
    parts: list[Any] = [
        _line(f"[bold]{escape(report.name)}[/]  {escape(report.results)}"),
        _line(f"driver {driver} · {progress} · {escape(report.metric)}: {better} is better"),
        _generations_table(report, show_all),
    ]
    summarised = not show_all and len(report.generations) > SUMMARY_AFTER
    if summarised:
        parts += _champion_history(report)
    if report.budget.get("text"):
        parts.append(_line(escape(report.budget["text"])))
    if report.stopped and report.stopped != "generations":
        parts.append(_line(f"[bold]search stopped[/] ({report.stopped}): {escape(report.stopped_detail)}"))
    if report.best:
        b = report.best
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items()
        )
        parts.append(
            _line(
                f"best so far: [bold green]{b['objective']:.6g}[/] (trial {b['trial_id']}: {escape(params)})"
            )
        )
    if report.queue:
        parts.append(_line("queue:"))
        for row in report.queue[:20]:
            reason = f" ({row.get('reason')})" if row.get("reason") and row.get("reason") != "None" else ""
            parts.append(_line(escape(f"  {row.get('job_id')} {row.get('state')}{reason}")))
    parts += _rigor(report)
    parts += _requeues(report.requeues[: max_failures or 10], len(report.requeues))
    if report.failures and max_failures:
        parts.append(_line(f"not completed ({len(report.failures)}):"))
        for f in report.failures[:max_failures]:
            logs = f["stderr"] + (f"  {f['job_log']}" if f.get("job_log") else "")
            parts.append(
                _line(
                    f"  {f['trial_id']} [red]{f['state']}[/]: {escape(f['reason'])}  [dim]{escape(logs)}[/]"
                )
            )
    return Group(*parts)


def _line(markup: str) -> Text:
    return Text.from_markup(markup)


def watch_status(
    results: Any,
    interval_s: float = 2.0,
    max_failures: int = 10,
    console: Console | None = None,
    rounds: int = 0,
    show_all: bool = False,
) -> None:
    """``status --watch``: the status, refreshed in place every ``interval_s`` until Ctrl-C
    (which returns normally) or, with ``rounds``, that many refreshes."""
    from rich.live import Live

    from hpc_agent.outputs.status import status_report

    console = console or Console()
    done = 0
    view = status_view(status_report(results), max_failures, show_all)
    with Live(view, console=console, auto_refresh=False) as live:
        try:
            while not rounds or done < rounds:
                time.sleep(interval_s)
                live.update(status_view(status_report(results), max_failures, show_all), refresh=True)
                done += 1
        except KeyboardInterrupt:
            return


def _generations_table(report: Any, show_all: bool = False) -> Table:
    """One row per generation (past :data:`SUMMARY_AFTER` of them, unless ``show_all``: the
    recent ones and those in flight, one row for the others, one for the totals); at 80
    columns the states wrap at words, the jobs never."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("gen", no_wrap=True)
    table.add_column("planner", no_wrap=True)
    table.add_column("trials", no_wrap=True, justify="right")
    table.add_column("states", ratio=1)
    table.add_column(f"best {report.metric}", no_wrap=True, justify="right")
    table.add_column("jobs", no_wrap=True)
    shown, hidden = _split_generations(report, show_all)
    if hidden:
        table.add_row(*_summary_row(report, hidden, f"{hidden[0].generation}-{hidden[-1].generation}"))
    for g in shown:
        table.add_row(
            str(g.generation),
            g.planner.split(" (")[0],  # the kind; `status --json` has the model and endpoint
            str(g.trials),
            describe_counts(g.counts, color=True)
            + (
                " [dim](done)[/]"
                if g.done
                else " [cyan](in flight)[/]"
                if g.generation in report.in_flight
                else ""
            ),
            "" if g.best is None else f"{g.best:.6g}",
            g.jobs or ", ".join(g.job_ids),
        )
    if hidden:
        table.add_row(*_summary_row(report, report.generations, "all"), style="bold")
    return table


def _split_generations(report: Any, show_all: bool) -> tuple[list[Any], list[Any]]:
    """(the generations with a row of their own, the others): all of them up to
    :data:`SUMMARY_AFTER`; past it, the last :data:`RECENT_GENERATIONS` and any in flight."""
    gens = list(report.generations)
    if show_all or len(gens) <= SUMMARY_AFTER:
        return gens, []
    recent = {g.generation for g in gens[-RECENT_GENERATIONS:]} | set(report.in_flight)
    return [g for g in gens if g.generation in recent], [g for g in gens if g.generation not in recent]


def _summary_row(report: Any, gens: list[Any], label: str) -> tuple[str, ...]:
    """One row for several generations: their trials, states and best."""
    counts: dict[str, int] = {}
    for g in gens:
        for k, n in g.counts.items():
            counts[k] = counts.get(k, 0) + n
    bests = [g.best for g in gens if g.best is not None]
    best = (min(bests) if report.mode == "min" else max(bests)) if bests else None
    planners = sorted({g.planner.split(" (")[0] for g in gens if g.planner})
    return (
        label,
        ", ".join(planners),
        str(sum(g.trials for g in gens)),
        describe_counts(counts, color=True) + f" [dim]({len(gens)} generations)[/]",
        "" if best is None else f"{best:.6g}",
        "",
    )


def _champion_history(report: Any) -> list[Text]:
    """The last keeps (the champion's history), and how to see every generation."""
    out = [
        _line(
            f"[dim]{len(report.generations)} generations: the recent ones and those in flight above; "
            f"every one with `hpc-agent status {escape(report.results)} --all`[/]"
        )
    ]
    kept = report.champions
    if kept:
        last = kept[-CHAMPION_HISTORY:]
        head = f"champion's history: {len(kept)} kept" + (
            f", the last {len(last)}:" if len(kept) > len(last) else ":"
        )
        out.append(_line(escape(head)))
        for c in last:
            out.append(
                _line(
                    escape(
                        f"  gen {c['generation']:<5} {c['config']}  {c['objective']:.6g} ({c['runs']} run(s))"
                    )
                )
            )
    return out


def _rigor(report: Any) -> list[Text]:
    """The noise floor, the verdicts, the champion and the confirmed one (issue 10), and the
    configurations that wait for a verdict, with why (issue 20)."""
    v = report.verdicts
    if not any(v.values()) and report.champion is None:
        return []
    counts = ", ".join(f"{v.get(k, 0)} {k}" for k in ("keep", "discard", "crash", "candidate", "pending"))
    out = [_line(escape(f"noise floor: {report.noise['text']} · verdicts: {counts}"))]
    for w in report.waiting[:WAITING_SHOWN]:
        out.append(_line(escape(f"  {w['verdict']} {w['config']}: {w['why']}")))
    if len(report.waiting) > WAITING_SHOWN:
        out.append(
            _line(f"  ... and {len(report.waiting) - WAITING_SHOWN} more (hpc-agent export --format ledger)")
        )
    if report.champion:
        c = report.champion
        out.append(
            _line(escape(f"champion (last kept): {c['config']} {c['objective']:.6g} ({c['runs']} run(s))"))
        )
    if report.confirmed:
        c, conf = report.confirmed, report.confirmed["confirmed"]
        value = "pending" if conf["objective"] is None else f"{conf['objective']:.6g}"
        out.append(
            _line(
                escape(
                    f"confirmed champion: {c['config']}: {value} over {conf['runs']} confirmation run(s) "
                    f"(screening {c['objective']:.6g})"
                )
            )
        )
    return out


def _requeues(rows: list[dict[str, Any]], total: int) -> list[Text]:
    if not rows:
        return []
    out = [_line(f"requeued ({total}):")]
    for r in rows:
        out.append(
            _line(
                f"  {r['trial_id']} {r['state']}: {r['attempts']} attempt(s); "
                f"{r['progress_requeues']} requeue(s) after progress (cap {r['max_progress_requeues']}), "
                f"{r['retries']} counted (max_retries {r['max_retries']})  [dim]{escape(r['reason'])}[/]"
            )
        )
    return out

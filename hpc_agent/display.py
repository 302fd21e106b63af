"""What the user sees while a campaign runs: a rich progress display on a terminal, one line
per change otherwise (a detached driver's log, CI)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from hpc_agent.state import TrialState

_FINISHED = tuple(s.value for s in TrialState if s.is_finished())
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
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[states]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._progress.start()
        return self._progress

    def info(self, message: str) -> None:
        """A message, as it is (no markup)."""
        self.console.print(message, highlight=False, markup=False)

    def warn(self, message: str) -> None:
        """A warning, marked as one."""
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
        """Update generation's bar (terminal), or print a line when the counts changed (at most
        every 5 s)."""
        total = sum(counts.values())
        done = sum(counts.get(s, 0) for s in _FINISHED)
        best_text = f" · best {best:.5g}" if best is not None else ""
        if self.live:
            bar = self._bar()
            states = describe_counts(counts, color=True) + best_text
            if generation not in self._tasks:
                self._tasks[generation] = bar.add_task(f"generation {generation}", total=total, states=states)
            bar.update(self._tasks[generation], completed=done, total=total, states=states)
            return
        line = f"generation {generation}: {done}/{total} finished · {describe_counts(counts)}{best_text}"
        now = time.monotonic()
        if line != self._last_line.get(generation) and (done == total or now - self._last_print > 5):
            self._last_line[generation] = line
            self._last_print = now
            self.console.print(line, highlight=False, markup=False)

    def generation_done(self, generation: int, analysis: str) -> None:
        """Show the generation's analysis (rendered markdown on a terminal)."""
        if self.show_analysis and analysis.strip():
            if self.live:
                from rich.markdown import Markdown

                self.console.print(Markdown(analysis))
            else:
                self.console.print(analysis, highlight=False, markup=False)

    def close(self) -> None:
        """Stop the progress display (call before printing anything else)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# ------------------------------------------------------------------------------- hpc-agent status


def print_status(report: Any, max_failures: int = 10, console: Console | None = None) -> None:
    """Render a :class:`hpc_agent.status.StatusReport` for the terminal."""
    console = console or Console()
    drv = report.driver
    driver = f"running (pid {drv['pid']} on {drv['host']})" if drv else "not running"
    if report.cancelled:
        driver += ", cancelled"
    console.print(
        f"[bold]{report.name}[/]  {report.results}  ·  driver {driver}  ·  "
        f"{report.generations_done}/{report.generations_target} generations done",
        highlight=False,
    )
    console.print(_generations_table(report))
    if report.best:
        b = report.best
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items()
        )
        console.print(
            f"best so far: [bold green]{b['objective']:.6g}[/] (trial {b['trial_id']}: {params})",
            highlight=False,
        )
    if report.queue:
        console.print("queue:")
        for row in report.queue[:20]:
            reason = f" ({row.get('reason')})" if row.get("reason") and row.get("reason") != "None" else ""
            console.print(f"  {row.get('job_id')} {row.get('state')}{reason}", highlight=False)
    _print_rigor(console, report)
    _print_requeues(console, report.requeues[: max_failures or 10], len(report.requeues))
    if report.failures and max_failures:
        console.print(f"not completed ({len(report.failures)}):")
        for f in report.failures[:max_failures]:
            logs = f["stderr"] + (f"  {f['job_log']}" if f.get("job_log") else "")
            console.print(
                f"  {f['trial_id']} [red]{f['state']}[/]: {f['reason']}  [dim]{logs}[/]", highlight=False
            )


def _generations_table(report: Any) -> Table:
    better = "lower" if report.mode == "min" else "higher"
    table = Table(show_edge=False, pad_edge=False)
    for col in ("gen", "planner", "trials", "states", f"best {report.metric} ({better} is better)", "jobs"):
        table.add_column(col)
    for g in report.generations:
        jobs = sorted({j.split("_")[0] for j in g.job_ids})
        jobs_text = ", ".join(jobs[:3]) + (f" +{len(jobs) - 3}" if len(jobs) > 3 else "")
        table.add_row(
            str(g.generation),
            g.planner,
            str(g.trials),
            describe_counts(g.counts, color=True) + (" [dim](done)[/]" if g.done else ""),
            "" if g.best is None else f"{g.best:.6g}",
            jobs_text,
        )
    return table


def _print_rigor(console: Console, report: Any) -> None:
    v = report.verdicts
    if not any(v.values()) and report.champion is None:
        return
    console.print(
        f"noise floor: {report.noise['text']} · verdicts: {v['keep']} keep, {v['discard']} discard, "
        f"{v['crash']} crash",
        highlight=False,
    )
    if report.champion:
        c = report.champion
        console.print(
            f"champion (last kept): {c['config']} {c['objective']:.6g} ({c['runs']} run(s))", highlight=False
        )
    if report.confirmed:
        c, conf = report.confirmed, report.confirmed["confirmed"]
        value = "pending" if conf["objective"] is None else f"{conf['objective']:.6g}"
        console.print(
            f"confirmed champion: {c['config']}: {value} over {conf['runs']} confirmation run(s) "
            f"(screening {c['objective']:.6g})",
            highlight=False,
        )


def _print_requeues(console: Console, rows: list[dict[str, Any]], total: int) -> None:
    if not rows:
        return
    console.print(f"requeued ({total}):")
    for r in rows:
        console.print(
            f"  {r['trial_id']} {r['state']}: {r['attempts']} attempt(s); "
            f"{r['progress_requeues']} requeue(s) after progress (cap {r['max_progress_requeues']}), "
            f"{r['retries']} counted (max_retries {r['max_retries']})  [dim]{r['reason']}[/]",
            highlight=False,
        )

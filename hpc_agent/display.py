"""What the user sees while a campaign runs: a rich progress display on a terminal, one line
per change otherwise (a detached driver's log, CI)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

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
        self._progress: Progress | None = None
        self._tasks: dict[int, Any] = {}
        self._last_line: dict[int, str] = {}
        self._last_print = 0.0

    def _bar(self) -> Progress:
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
        self.console.print(message, highlight=False, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
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
        if self.show_analysis and analysis.strip():
            if self.live:
                self.console.print(Markdown(analysis))
            else:
                self.console.print(analysis, highlight=False, markup=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

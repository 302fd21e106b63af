"""What the campaign loop tells the user, as a seam: the CLI renders it with rich
(:class:`hpc_agent.outputs.terminal.RichReporter`); the library's default says nothing, or prints
plain lines to a stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Reporter(Protocol):
    """Messages, a generation's progress (trials by state, best so far), its analysis."""

    def info(self, message: str) -> None:
        """Something worth saying (a submission, a requeue, a plan's note)."""

    def warn(self, message: str) -> None:
        """Something that went wrong and was dealt with (a planner's failure, a cancel)."""

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
        """Generation's trials by state (``running`` included) and the best objective so far;
        called often: a reporter decides what to show."""

    def generation_done(self, generation: int, analysis: str) -> None:
        """Generation is finished; its analysis (markdown)."""


class SilentReporter:
    """Says nothing, or prints info and warnings to ``stream`` (no progress, no analyses)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def info(self, message: str) -> None:
        """Print ``message`` to the stream, if any."""
        if self.stream:
            print(message, file=self.stream)

    def warn(self, message: str) -> None:
        """Print ``warning: message`` to the stream, if any."""
        if self.stream:
            print(f"warning: {message}", file=self.stream)

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
        """Nothing: a silent reporter shows no progress."""

    def generation_done(self, generation: int, analysis: str) -> None:
        """Nothing: a silent reporter shows no analysis."""

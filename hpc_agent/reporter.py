"""What the campaign loop tells the user, as a seam: the CLI renders it with rich
(:class:`hpc_agent.display.RichReporter`); the library's default says nothing, or prints
plain lines to a stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Reporter(Protocol):
    """Messages, a generation's progress (trials by state, best so far), its analysis."""

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None: ...

    def generation_done(self, generation: int, analysis: str) -> None: ...


class SilentReporter:
    """Says nothing, or prints info and warnings to ``stream`` (no progress, no analyses)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def info(self, message: str) -> None:
        if self.stream:
            print(message, file=self.stream)

    def warn(self, message: str) -> None:
        if self.stream:
            print(f"warning: {message}", file=self.stream)

    def progress(self, generation: int, counts: Mapping[str, int], best: float | None) -> None:
        pass

    def generation_done(self, generation: int, analysis: str) -> None:
        pass

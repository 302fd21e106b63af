"""The errors hpc-agent raises on purpose.

Two families, because the CLI maps them to two exit codes:

* :class:`UserError` (exit 2): the user can fix it (a bad spec, a bad flag, a results folder
  that belongs to another campaign, an unreachable LLM endpoint). Its message names the bad
  value and what was expected; ``fix`` says what to do next. The CLI prints both, never a
  traceback.
* :class:`CampaignError` (exit 1): the campaign itself could not go on (the scheduler refused
  every submission, the journal is corrupt). It also carries a ``fix`` and, where there is
  one, the log file to read.

A crashed experiment or a bad LLM reply is *not* an error: it is data, recorded in the
journal with its reason.
"""

from __future__ import annotations


class HpcAgentError(Exception):
    """Base class: a message, and what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None, log: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.log = log

    def render(self) -> str:
        """The full text shown to a user: the problem, the fix and the log to read."""
        lines = [self.message]
        if self.fix:
            lines.append(f"fix: {self.fix}")
        if self.log:
            lines.append(f"log: {self.log}")
        return "\n".join(lines)


class UserError(HpcAgentError):
    """Bad input: a spec, a flag, a path or a configuration the user must change (exit 2)."""

    exit_code = 2


class SpecError(UserError):
    """campaign.toml is malformed, has an unknown key, or a value of the wrong type or range."""


class CampaignError(HpcAgentError):
    """The campaign could not continue (exit 1); nothing already recorded is lost."""

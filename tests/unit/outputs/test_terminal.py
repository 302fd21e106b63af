"""hpc_agent.outputs.terminal: the counts in words, the rich reporter off a terminal (a line
per change), ``status`` rendered."""

from __future__ import annotations

import io

from rich.console import Console

from hpc_agent.outputs.status import status_report
from hpc_agent.outputs.terminal import RichReporter, describe_counts, print_status
from unit.conftest import Finished


def test_describe_counts_in_a_fixed_order() -> None:
    assert describe_counts({"completed": 5, "running": 3, "failed": 0}) == "3 running · 5 completed"
    assert describe_counts({}) == ""
    assert "[" in describe_counts({"failed": 1}, color=True)


def test_the_reporter_off_a_terminal_prints_lines() -> None:
    out = io.StringIO()
    r = RichReporter(Console(file=out, width=100, force_terminal=False), show_analysis=True)
    r.info("generation 0: submitted")
    r.warn("a planner failed")
    r.progress(0, {"running": 1, "completed": 1}, 0.5)
    r.generation_done(0, "# Generation 0: analysis")
    r.close()
    text = out.getvalue()
    assert "generation 0: submitted" in text and "warning: a planner failed" in text
    assert "1 running · 1 completed" in text and "best 0.5" in text
    assert "# Generation 0: analysis" in text


def test_print_status_shows_the_campaign(finished: Finished) -> None:
    out = io.StringIO()
    print_status(status_report(finished.results, queue=False), console=Console(file=out, width=100))
    text = out.getvalue()
    assert text.startswith(f"tiny  {finished.results}\n")
    assert "driver not running · 2/2 generations done · loss: lower is better" in text
    assert "exit code 1: scripted failure" in text and "0000-0001/stderr.log" in text

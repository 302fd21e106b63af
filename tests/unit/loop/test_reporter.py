"""hpc_agent.loop.reporter: the reporter seam; the silent reporter prints only what it is given
a stream for."""

from __future__ import annotations

import io

from hpc_agent.loop.reporter import Reporter, SilentReporter


def test_the_silent_reporter_prints_info_and_warnings_only_to_its_stream() -> None:
    out = io.StringIO()
    r: Reporter = SilentReporter(out)
    r.info("submitted generation 0")
    r.warn("planner failed")
    r.progress(0, {"running": 2}, 0.5)
    r.generation_done(0, "# analysis")
    assert out.getvalue() == "submitted generation 0\nwarning: planner failed\n"
    SilentReporter().warn("nowhere")  # no stream: nothing, no error

"""The terminal as a user sees it, at 80 columns: progress and status lines that never cut a
value, local lanes named as such, ``status --watch`` refreshing in place."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from hpc_agent.executors.local import LocalExecutor
from hpc_agent.executors.slurm.executor import SlurmExecutor
from hpc_agent.outputs.status import status_report
from hpc_agent.outputs.terminal import RichReporter, print_status, watch_status

COUNTS = {"running": 12, "submitted": 30, "completed": 115, "failed": 3, "timeout": 2}
VALUES = ("best 0.0409548", "12 running", "30 submitted", "115 completed", "3 failed", "2 timeout")


def screen(buf: io.StringIO) -> str:
    """What a terminal shows, escape sequences removed."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())


def test_live_progress_at_80_columns_cuts_no_value() -> None:
    buf = io.StringIO()
    reporter = RichReporter(console=Console(file=buf, width=80, force_terminal=True, color_system=None))
    reporter.progress(12, COUNTS, 0.0409548123)
    reporter._progress.refresh()
    reporter.close()
    shown = screen(buf)
    assert "…" not in shown
    for value in VALUES:
        assert value in shown, value
    assert all(len(line) <= 80 for line in shown.splitlines())


def test_log_lines_stay_whole_when_not_a_terminal() -> None:
    buf = io.StringIO()
    reporter = RichReporter(console=Console(file=buf, width=80, force_terminal=False))
    reporter.progress(12, COUNTS, 0.0409548123)
    reporter.info("generation 12: submitted 160 trial(s) as job 123456, 123457, 123458 on partition gpu-long")
    reporter.generation_done(
        12, "Best of this generation: **0.0409548** (0012-0007, lr=0.0012132675, hidden=64)."
    )
    lines = buf.getvalue().splitlines()
    assert lines[0] == "generation 12: 120/162 finished · " + " · ".join(VALUES[1:]) + " · best 0.0409548"
    assert lines[1].endswith("on partition gpu-long") and lines[2].endswith("hidden=64).")


def test_jobs_in_words() -> None:
    assert LocalExecutor.describe_jobs(["3101", "3102"]) == "2 local lanes"
    assert LocalExecutor.describe_jobs(["3101"]) == "1 local lane"
    assert SlurmExecutor.describe_jobs(["77_0", "77_1", "78_0"]) == "job 77, 78"
    assert SlurmExecutor.describe_jobs([f"{j}_0" for j in range(5)]) == "5 jobs"


def test_status_at_80_columns(
    cli_run: Callable[..., Any], make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    camp = make_campaign(batch_size=3, generations=2, campaign='goal = "x"')
    run = subprocess.run(
        [sys.executable, "-m", "hpc_agent", "run", str(camp), "--executor", "local"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "submitted 3 trial(s) as 2 local lanes" in run.stderr, run.stderr
    report = status_report(tmp_path / "results" / "tiny")
    assert [g.jobs for g in report.generations] == ["2 local lanes", "2 local lanes"]
    buf = io.StringIO()
    print_status(report, console=Console(file=buf, width=80, force_terminal=True, color_system=None))
    shown = screen(buf)
    assert all(len(line) <= 80 for line in shown.splitlines())
    rows = [line for line in shown.splitlines() if re.match(r"^[01] ", line)]
    assert len(rows) == 2 and all("2 local lanes" in r and "3 completed" in r for r in rows)
    assert "loss: lower is better" in shown


def run_one_trial(camp: Path, cwd: Path) -> None:
    """Run a campaign in a real driver process (results in ``cwd/results/tiny``)."""
    subprocess.run(
        [sys.executable, "-m", "hpc_agent", "run", str(camp), "--executor", "local", "-q"],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_status_watch_refreshes_in_place(make_campaign: Callable[..., Path], tmp_path: Path) -> None:
    run_one_trial(make_campaign(batch_size=1), tmp_path)
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    watch_status(tmp_path / "results" / "tiny", interval_s=0.01, console=console, rounds=3)
    raw = buf.getvalue()
    assert raw.count("\x1b[2K") >= 3 and "\x1b[1A" in raw  # lines erased and rewritten, not appended
    assert "best so far" in raw


def test_status_watch_exits_0_on_ctrl_c(make_campaign: Callable[..., Path], tmp_path: Path) -> None:
    run_one_trial(make_campaign(batch_size=1), tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpc_agent", "status", "results/tiny", "--watch", "--interval", "0.2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "tiny" in out and "Traceback" not in err


def test_init_names_the_new_campaign(cli_run: Callable[..., Any], tmp_path: Path) -> None:
    cli_run("init", "adder", "--template", "charlm")
    head = (tmp_path / "adder" / "campaign.toml").read_text().splitlines()[:3]
    assert head[0].startswith("# adder: a campaign made by `hpc-agent init adder --template charlm` on ")
    assert "hpc-agent run adder" in head[2]
    assert not any("charlm" in line for line in head[1:])

"""``hpc-agent serve``: the live page's data, its token, and that it only reads.

The page's feed is checked on real results folders written by the real loop (the scripted
executor plays the cluster), the HTTP side through a real ``hpc-agent serve`` process and
real HTTP requests; tests/test_serve_browser.py opens the page in a real Chromium. Also here:
``hpc-agent status`` at 88 generations, summarised.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from hpc_agent.config.spec import load_spec
from hpc_agent.job.trial import write_status
from hpc_agent.loop.campaign import Campaign
from hpc_agent.outputs.status import status_report
from hpc_agent.outputs.terminal import print_status
from hpc_agent.planners.random import RandomPlanner
from hpc_agent.serve.feed import Feed, flight_row
from hpc_agent.serve.pages import analyses_page, lineage_page, trial_page
from hpc_agent.store.paths import ResultsPaths
from hpc_agent.store.results import acquire_driver_lock
from hpc_agent.testing import ScriptedExecutor

ROOT = Path(__file__).resolve().parents[3]


def scripted(camp: Path, executor: ScriptedExecutor | None = None) -> Path:
    """Run the campaign in ``camp`` with the scripted executor and random planning; its
    results folder."""
    results = camp / "results"
    ex = executor or ScriptedExecutor(objective=lambda p: (float(p["x"]) - 0.3) ** 2)
    result = Campaign(load_spec(camp), results, ex, RandomPlanner()).run()
    assert result.status == "done", result
    return results


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


# ------------------------------------------------------------------------------- the feed


def test_the_feed_reads_only_what_the_journal_gained(
    make_campaign: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    camp = make_campaign(batch_size=3, generations=2)
    results = scripted(camp)
    feed = Feed(results)
    reads: list[int] = []
    real = feed.journal.read_from

    def counted(offset: int = 0, until: int | None = None) -> Any:
        reads.append(offset)
        return real(offset, until)

    monkeypatch.setattr(feed.journal, "read_from", counted)
    first = feed.delta(0)
    assert first["full"] and len(first["trials"]) == 6 and first["head"]["counts"]["completed"] == 6
    assert reads == [0]
    # nothing new: the journal is not read again, and the answer carries no trial, no head
    quiet = feed.delta(first["offset"], first["epoch"])
    assert reads == [0] and not quiet["full"]
    assert "trials" not in quiet and "head" not in quiet
    assert len(json.dumps(quiet)) < 400
    # the campaign goes on (a driver restarted with one more generation): only the new bytes
    (camp / "campaign.toml").write_text(
        (camp / "campaign.toml").read_text().replace("generations = 2", "generations = 3")
    )
    scripted(camp)
    news = feed.delta(first["offset"], first["epoch"])
    assert reads == [0, first["offset"]]
    assert sorted(t["id"] for t in news["trials"]) == ["0002-0000", "0002-0001", "0002-0002"]
    assert {c["config"] for c in news["configs"]} >= {"0002-0000", "0002-0001", "0002-0002"}
    assert news["head"]["generations"]["done"] == 3
    # another page, or the same after a restart of the server, asks from its own offset
    again = Feed(results).delta(first["offset"], first["epoch"])
    assert sorted(t["id"] for t in again["trials"]) == sorted(t["id"] for t in news["trials"])
    # a page of another journal (another epoch) gets everything
    assert Feed(results).delta(first["offset"], "other")["full"]


def test_a_torn_last_line_waits_and_a_corrupt_one_is_shown(make_campaign: Callable[..., Path]) -> None:
    results = scripted(make_campaign(batch_size=1))
    feed = Feed(results)
    d = feed.delta(0)
    journal = ResultsPaths(results).journal
    with open(journal, "ab") as f:
        f.write(b'{"v": 1, "t": 1, "event": "trial_en')  # a driver in the middle of a write
    torn = feed.delta(d["offset"], d["epoch"])
    assert torn["offset"] == d["offset"] and not torn["error"]
    with open(journal, "ab") as f:
        f.write(b'ded"}\n{not json}\n')
    bad = feed.delta(d["offset"], d["epoch"])
    assert "corrupt" in bad["error"] and bad["offset"] == d["offset"]


def test_a_journal_of_release_0_1_0_is_served(tmp_path: Path) -> None:
    """No verdicts then: the champion is the best mean, and its line has no keeps to follow."""
    results = tmp_path / "old"
    results.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "journal-0.1.0.jsonl", results / "journal.jsonl")
    d = Feed(results).delta(0)
    assert d["trials"] and d["head"]["champion"] is not None and d["head"]["champions"] == []
    assert d["head"]["counts"] == status_report(results, queue=False).counts
    assert not d["error"]


def test_serving_writes_nothing_and_takes_no_lock(make_campaign: Callable[..., Path]) -> None:
    results = scripted(make_campaign(batch_size=2, generations=2, campaign="seeds = 2"))
    before = tree(results)
    feed = Feed(results)
    d = feed.delta(0)
    for t in d["trials"]:
        assert trial_page(feed, t["id"]) is not None
    assert lineage_page(feed)["steps"]
    assert [a["gen"] for a in analyses_page(feed)["analyses"]] == [1, 0]
    feed.delta(d["offset"], d["epoch"])
    assert tree(results) == before
    # the driver's lock is free while a page reads: a driver starts as usual
    acquire_driver_lock(ResultsPaths(results)).release()


def test_a_trial_page_hides_held_out_metrics_unless_asked(make_campaign: Callable[..., Path]) -> None:
    camp = make_campaign(batch_size=1, campaign='holdout_metrics = ["test_loss"]')
    results = scripted(camp)
    metrics = ResultsPaths(results).trial("0000-0000").metrics
    with open(metrics, "a") as f:  # what the experiment itself logs at its end
        f.write(json.dumps({"step": 1, "loss": 0.5, "test_loss": 0.7}) + "\n")
    feed = Feed(results)
    page = trial_page(feed, "0000-0000")
    assert page is not None
    assert set(page["curves"]) == {"loss"} and page["holdout_hidden"] == ["test_loss"]
    asked = trial_page(feed, "0000-0000", holdout=True)
    assert asked is not None and set(asked["curves"]) == {"loss", "test_loss"}
    assert page["rerun"] == f"hpc-agent rerun {results} 0000-0000"
    # nor does the table of the trials in flight show them
    assert "test_loss" not in json.dumps(
        flight_row(ResultsPaths(results), feed.state.trials["0000-0000"], "loss", {"test_loss"})
    )
    assert "test_loss" in json.dumps(
        flight_row(ResultsPaths(results), feed.state.trials["0000-0000"], "loss")
    )
    assert trial_page(feed, "9999-0000") is None


# ------------------------------------------------------------------------------- over HTTP


@pytest.fixture
def served(make_campaign: Callable[..., Path], tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A real ``hpc-agent serve`` process on a finished campaign: (base URL, token, results)."""
    results = scripted(make_campaign(batch_size=2))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpc_agent", "serve", str(results), "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = read_url(proc)
        base, token = url.split("/?token=")
        yield base, token, results
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def read_url(proc: subprocess.Popen[str]) -> str:
    """The URL ``hpc-agent serve`` prints when it starts."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"open: (http://\S+)", line)
        if m:
            return m.group(1)
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no URL printed; stderr: {proc.stderr.read() if proc.stderr else ''}")


def fetch(url: str, cookie: str = "") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_every_request_without_the_token_is_refused(served: tuple[str, str, Path]) -> None:
    base, token, _ = served
    for path in ("/", "/api/delta", "/api/trial/0000-0000", "/api/lineage", "/static/app.js", "/nothing"):
        code, _, body = fetch(base + path)
        assert code == 403 and b"token" in body, path
        assert fetch(f"{base}{path}?token=wrong{token}")[0] == 403
        assert fetch(base + path, cookie="hpc_agent_token_1=" + token)[0] == 403  # another port's cookie
    code, headers, body = fetch(f"{base}/?token={token}")
    assert code == 200 and b"<title>" in body
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and "samesite=strict" in headers["set-cookie"].lower()
    code, _, body = fetch(base + "/api/delta?since=0", cookie=cookie)
    assert code == 200 and json.loads(body)["head"]["counts"]["completed"] == 2
    code, _, body = fetch(base + "/static/vendor/uPlot.iife.min.js", cookie=cookie)
    assert code == 200 and body.startswith(b"/*! https://github.com/leeoniya/uPlot")


def test_serve_refuses_a_folder_without_a_journal_and_a_taken_port(
    cli_run: Callable[..., Any], tmp_path: Path, served: tuple[str, str, Path]
) -> None:
    (tmp_path / "empty").mkdir()
    out = cli_run("serve", "empty", code=2).output
    assert "error:" in out and "no journal.jsonl" in out and "fix:" in out
    port = served[0].rsplit(":", 1)[1]
    out = cli_run("serve", str(served[2]), "--port", port, code=2).output
    assert f"127.0.0.1:{port}" in out and "--port" in out


@pytest.mark.slow
def test_the_wheel_ships_the_page(tmp_path: Path) -> None:
    """Offline: the page's scripts and styles, uPlot and its licence are in the wheel."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("hpc_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
        assert f"hpc_agent/serve/static/{name}" in names, name
    assert "hpc_agent/serve/static/vendor/uPlot.LICENSE" in names
    page = (ROOT / "hpc_agent/serve/static/index.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no CDN


# ------------------------------------------------------------------------------- status at scale


@pytest.mark.slow
def test_status_of_88_generations_summarises(make_campaign: Callable[..., Path]) -> None:
    results = scripted(make_campaign(batch_size=8, generations=88))
    report = status_report(results)
    assert len(report.generations) == 88 and report.counts["completed"] == 704

    def shown(show_all: bool) -> str:
        buf = io.StringIO()
        print_status(report, console=Console(file=buf, width=100, color_system=None), show_all=show_all)
        return buf.getvalue()

    summary = shown(False)
    rows = [line for line in summary.splitlines() if re.match(r"^\d+ +│", line)]
    assert [r.split()[0] for r in rows] == [str(g) for g in range(80, 88)]
    assert re.search(r"^0-79 .* 640 .*640 completed \(80 generations\)", summary, re.M)
    assert re.search(r"^all .* 704 .*704 completed \(88 generations\)", summary, re.M)
    assert f"hpc-agent status {results} --all" in " ".join(summary.split())
    kept = report.champions
    assert kept and f"champion's history: {len(kept)} kept" in summary
    assert kept[-1]["config"] in summary.split("champion's history")[1]
    everything = shown(True)
    assert len([line for line in everything.splitlines() if re.match(r"^\d+ +│", line)]) == 88
    assert "--all" not in everything and "champion's history" not in everything


def test_a_small_campaign_shows_every_generation_as_before(
    cli_run: Callable[..., Any], make_campaign: Callable[..., Path]
) -> None:
    results = scripted(make_campaign(batch_size=2, generations=3))
    plain = cli_run("status", str(results)).output
    assert cli_run("status", str(results), "--all").output == plain
    assert len([line for line in plain.splitlines() if re.match(r"^\d+ +│", line)]) == 3
    assert "--all" not in plain and "champion's history" not in plain


def test_the_lineage_the_analyses_and_the_llm_s_last_call(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    from test_report import Editor

    # each better change kept at once: the rule of 0.1.0 (no noise measured, no replicates)
    camp = make_campaign(generations=3, batch_size=1, extra="\n[rigor]\nreplicate = false\n")
    results = tmp_path / "results-edit"
    Campaign(load_spec(camp), results, ScriptedExecutor(objective=lambda p: float(p["x"])), Editor()).run()
    last = {"purpose": "analyze", "model": "m1", "tokens_in": 800, "tokens_out": 200, "latency_s": 2.5}
    (results / "llm.jsonl").write_text(
        json.dumps({"purpose": "propose", "model": "m0"}) + "\n" + json.dumps(last) + "\n"
    )
    analysis = ResultsPaths(results).analysis(2)
    analysis.write_text(
        analysis.read_text() + "\n<script>alert(1)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    feed = Feed(results)
    head = feed.delta(0)["head"]
    assert head["planner"]["llm"] == {
        k: last[k] for k in ("model", "purpose", "tokens_in", "tokens_out", "latency_s")
    }
    assert head["planner"]["name"] == "editor" and head["champion"]["config"] == "0002-0000"
    steps = lineage_page(feed)["steps"]
    assert [s["trial"] for s in steps] == ["0001-0000", "0002-0000"]
    assert '+print("finished", loss)' in steps[0]["diff"] and "+" in steps[1]["diff"]
    assert '-print("done", loss)' not in steps[1]["diff"]  # each step's own change, against its parent
    html = analyses_page(feed)["analyses"][0]
    assert html["gen"] == 2 and "&lt;script&gt;" in html["html"] and "<script>" not in html["html"]
    assert "<table>" in html["html"]
    assert [a["gen"] for a in analyses_page(feed, after=0)["analyses"]] == [2, 1]


def test_a_trial_in_flight_and_its_stderr(make_campaign: Callable[..., Path]) -> None:
    """The journal stops at the trial's submission (the driver waits on it); its runner has
    written that it runs, and the experiment a first metrics line."""
    results = scripted(make_campaign(batch_size=1))
    journal = ResultsPaths(results).journal
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text(
        "".join(lines[: 1 + max(i for i, x in enumerate(lines) if '"event":"submitted"' in x)])
    )
    folder = ResultsPaths(results).trial("0000-0000")
    token = json.loads(folder.status.read_text())["token"]
    started = time.time() - 5
    write_status(folder.root, {"state": "running", "token": token, "started_at": started, "job_id": "77_0"})
    folder.metrics.write_text(json.dumps({"step": 3, "loss": 0.25, "note": "x"}) + "\n")
    folder.stderr.write_text("".join(f"line {i}\n" for i in range(100)))
    feed = Feed(results)
    d = feed.delta(0)
    (row,) = d["flight"]
    assert row["id"] == "0000-0000" and row["state"] == "running" and row["started_at"] == started
    assert row["last"] == {"step": 3, "loss": 0.25} and row["job_id"] == "1_0"
    assert d["head"]["counts"]["submitted"] == 1
    # the same trials in flight: not sent again, only their tag
    time.sleep(1.1)
    again = feed.delta(d["offset"], d["epoch"], d["flight_tag"])
    assert "flight" not in again and again["flight_tag"] == d["flight_tag"]
    page = trial_page(feed, "0000-0000")
    assert page is not None and page["stderr_tail"].splitlines() == [f"line {i}" for i in range(40, 100)]

"""The campaign report: report.md, the standalone report.html and the figures, written from
real results folders (a real local campaign, and a scripted one whose planner edits code).

The tables it shows are checked against golden files in tests/test_tables.py."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hpc_agent.config.spec import load_spec
from hpc_agent.loop.campaign import Campaign
from hpc_agent.outputs.report import write_report
from hpc_agent.planners.base import Plan, PlanContext, Planner, Proposal
from hpc_agent.testing import ScriptedExecutor

EDITS = {1: ('print("done", loss)', 'print("finished", loss)'), 2: ("0.1 * (2 - step)", "0.2 * (2 - step)")}


class Editor(Planner):
    """Generation 0 runs the base code; 1 edits it; 2 edits the champion's (1's) code."""

    name = "editor"

    def propose(self, ctx: PlanContext) -> Plan:
        g = ctx.generation
        if g == 0:
            return Plan((Proposal({"x": 0.9, "mode": "a"}, "the base code", source="editor"),))
        search, replace = EDITS[g]
        parent = ctx.champion.trial_ids[0] if ctx.champion and g == 2 else None
        patch = ({"file": "train.py", "search": search, "replace": replace},)
        x = 0.5 - 0.2 * g
        return Plan(
            (Proposal({"x": x, "mode": "a"}, f"edit {g}", patch=patch, parent=parent, source="editor"),)
        )


class Page(HTMLParser):
    """Every id, link and image source of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if a.get("href") is not None:
            self.hrefs.append(str(a["href"]))
        if a.get("src") is not None:
            self.srcs.append(str(a["src"]))


def check_html_is_standalone(path: Path, figures: int) -> Page:
    """Links resolve inside the page; every figure is embedded and is a PNG."""
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert page.hrefs, "no table of contents"
    for href in page.hrefs:
        assert href.startswith("#") and href[1:] in page.ids, f"link {href} does not resolve in the page"
    assert len(page.srcs) == figures
    for src in page.srcs:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64", src[:40]
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    return page


def check_markdown_links_resolve(path: Path) -> list[str]:
    links = re.findall(r"\]\(([^)]+)\)", path.read_text(encoding="utf-8"))
    for link in links:
        assert (path.parent / link).is_file() and (path.parent / link).stat().st_size > 1000, link
    return links


def test_report_command_on_a_real_campaign(cli_run, make_campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    camp = make_campaign(batch_size=3, generations=2, campaign='seeds = 2\nreport_metrics = ["acc"]')
    cli_run("run", str(camp), "--executor", "local", "-q")
    out = cli_run("report", "results/tiny").output
    assert "wrote" in out and "report.html" in out
    results = tmp_path / "results" / "tiny"
    text = (results / "report.md").read_text()
    for section in (
        "# Campaign report: tiny",
        "## Best configurations",
        "## Progress",
        "## The champion's lineage",
        "## Compute and LLM usage",
        "## Analyses, generation by generation",
        "### Generation 0: analysis",  # nested under the section, not beside it
    ):
        assert section in text
    assert "±" in text and "| n |" in text  # two seeds: mean ± std and n per configuration
    assert "CPU-hours:" in text  # every trial recorded its resources (provenance.json)
    assert "runs the base code: no code change was kept" in text
    links = check_markdown_links_resolve(results / "report.md")
    assert sorted(links) == [f"plots/{k}.png" for k in ("curves", "generations", "params", "progress")]
    for kind in ("progress", "curves", "generations", "params"):
        assert (results / "plots" / f"{kind}.pdf").read_bytes().startswith(b"%PDF")
    check_html_is_standalone(results / "report.html", figures=4)


def test_report_lineage_keeps_each_code_change(make_campaign: Callable[..., Path], tmp_path: Path) -> None:
    # each better change kept at once: the rule of 0.1.0 (no noise measured, no replicates)
    camp = make_campaign(generations=3, batch_size=1, extra="\n[rigor]\nreplicate = false\n")
    results = tmp_path / "results-edit"
    ex = ScriptedExecutor(objective=lambda p: float(p["x"]))
    Campaign(load_spec(camp), results, ex, Editor()).run()
    llm = [
        {"purpose": "propose", "model": "m1", "tokens_in": 1200, "tokens_out": 300, "cost": 0.01},
        {"purpose": "analyze", "model": "m1", "tokens_in": 800, "tokens_out": 200, "cost": 0.005},
        {"purpose": "preflight", "model": "m1"},  # a check, not a round trip
    ]
    (results / "llm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in llm))
    written = write_report(results)
    text = written.markdown.read_text()
    lineage = text.split("## The champion's lineage", 1)[1].split("\n## ", 1)[0]
    assert "trial 0002-0000, runs the base code with 2 kept change(s)" in lineage
    first, second = lineage.split("### 0002-0000")
    assert "### 0001-0000" in first and "parent: the base code" in first
    assert '-print("done", loss)' in first and '+print("finished", loss)' in first
    assert "parent: 0001-0000" in second and "+" in second
    assert "0.2 * (2 - step)" in second
    assert '+print("finished"' not in second and "-print" not in second  # each diff against its parent
    whole = (results / "gen-0002" / "trials" / "0002-0000" / "patch.diff").read_text()
    assert "finished" in whole and "0.2 * (2 - step)" in whole  # patch.diff: against the base
    assert "LLM: 2 round trip(s) with m1, 0 failed; tokens in 2,000, out 500; cost ~0.0150" in text
    assert "without a record of their resources" in text  # the scripted executor writes none
    html = written.html.read_text()
    assert '<span class="add">+print(&quot;finished&quot;, loss)</span>' in html
    check_html_is_standalone(written.html, figures=len([f for f in written.figures if f.suffix == ".png"]))


def test_report_html_escapes_what_an_analysis_says(
    make_campaign: Callable[..., Path], tmp_path: Path
) -> None:
    """An LLM's analysis is text: markup in it must not become part of the page."""
    from hpc_agent.outputs.report import report_html

    page = report_html("# T\n\n<script>alert(1)</script>\n\n![x](plots/missing.png)\n", {}, "t")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<em>[x]</em>" in page  # an image that is not there keeps its alt text


def test_plot_command_draws_each_kind_without_a_display(
    cli_run, make_campaign, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    camp = make_campaign(batch_size=3, generations=2)
    cli_run("run", str(camp), "--executor", "local", "-q")
    for kind in ("progress", "curves", "generations", "params"):
        out = tmp_path / f"{kind}.png"
        cli_run("plot", "results/tiny", kind, "-o", str(out))
        assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 5000
    cli_run("plot", "results/tiny", "curves")  # default: RESULTS/plots/curves.pdf and .png
    assert (tmp_path / "results/tiny/plots/curves.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "results/tiny/plots/curves.png").exists()
    bad = cli_run("plot", "results/tiny", "curves", "-o", "c.jpg", code=2)
    assert "'c.jpg'" not in bad.output and "c.jpg: a figure is written as .png, .pdf, .svg" in bad.output


def test_plot_with_nothing_to_draw_says_so(cli_run, make_campaign) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    camp = make_campaign(batch_size=1, script="import sys; sys.exit(1)\n")
    cli_run("run", str(camp), "--executor", "local", "-q", code=1)
    out = cli_run("plot", "results/tiny", "progress", code=2)
    assert "nothing to draw for 'progress' yet" in out.output and "hpc-agent status" in out.output

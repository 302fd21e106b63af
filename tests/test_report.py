"""Exporters only render: a fixed frame in, text checked against golden files.

Regenerate the goldens after an intended change:
``HPC_AGENT_UPDATE_GOLDEN=1 pytest tests/test_report.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from hpc_agent.report import latex_escape, render_latex, render_markdown

GOLDEN = Path(__file__).parent / "golden" / "report"


def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "trial_id": ["0001-0002", "0000-0001", "0000-0000"],
            "state": ["completed", "completed", "failed"],
            "objective": [0.08293, 0.1504, None],
            "lr": [0.0012132675, 0.002288, 1e-5],
            "activation": ["tanh", "gelu", "relu_x|y"],
        }
    )


def grouped_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "activation": ["tanh", "gelu"],
            "n": [3, 1],
            "objective_mean": [0.0912, 0.1504],
            "objective_std": [0.0047, None],
        }
    )


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("HPC_AGENT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with HPC_AGENT_UPDATE_GOLDEN=1"
    assert text == path.read_text()


def test_markdown_golden() -> None:
    check("trials.md", render_markdown(frame()))


def test_markdown_grouped_golden() -> None:
    check("grouped.md", render_markdown(grouped_frame()))


def test_latex_golden() -> None:
    check(
        "trials.tex",
        render_latex(frame(), caption="Best trials (val_loss)", label="tab:trials", bold_best="objective"),
    )


def test_latex_grouped_golden() -> None:
    check("grouped.tex", render_latex(grouped_frame(), bold_best="objective_mean"))


@pytest.mark.parametrize(
    ("raw", "escaped"), [("a_b", r"a\_b"), ("50%", r"50\%"), ("x&y", r"x\&y"), ("~", r"\textasciitilde{}")]
)
def test_latex_escape(raw: str, escaped: str) -> None:
    assert latex_escape(raw) == escaped


def test_report_command_writes_markdown_and_plots(cli_run, make_campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(batch_size=3, generations=2, campaign="seeds = 2")
    cli_run("run", str(camp), "--executor", "local", "-q")
    out = cli_run("report", "results/tiny").output
    assert "wrote" in out
    text = (tmp_path / "results" / "tiny" / "report.md").read_text()
    for section in ("# Campaign report: tiny", "## Best configurations", "## Progress", "## Analyses"):
        assert section in text
    assert "±" in text  # two seeds: mean ± std per configuration
    pytest.importorskip("matplotlib")
    assert (tmp_path / "results" / "tiny" / "plots" / "progress.png").stat().st_size > 1000
    assert "![progress](plots/progress.png)" in text

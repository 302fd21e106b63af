"""hpc_agent.outputs.tables: paper tables from a finished campaign's trials table, in CSV,
Markdown and LaTeX; significant digits, escaping, the best in bold."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_agent.errors import UserError
from hpc_agent.outputs.report import load_table
from hpc_agent.outputs.tables import export, latex_escape, metric_direction, paper_table, render, significant
from unit.conftest import Finished


def test_the_table_ranks_completed_trials_best_first(finished: Finished) -> None:
    df = load_table(finished.paths, finished.state, finished.spec)
    table = paper_table(df, finished.spec, top=3)
    md = render(table, "markdown")
    rows = [line for line in md.splitlines() if line.startswith("| 0")]
    assert len(rows) == 3 and "**" in rows[0]  # the best value in bold, first
    best = finished.state.best("min")
    assert best is not None and f"**{best.objective:.4g}**" in rows[0]
    csv = render(table, "csv")
    assert csv.splitlines()[0] == "x,mode,loss" and len(csv.splitlines()) == 4
    latex = render(table, "latex", caption="Results", label="tab:r", source="results/x")
    assert "\\toprule" in latex and "\\caption{Results}" in latex and "results/x" in latex


def test_bad_names_are_user_errors(finished: Finished, tmp_path: Path) -> None:
    df = load_table(finished.paths, finished.state, finished.spec)
    with pytest.raises(UserError, match="--group-by 'nope': no such column"):
        paper_table(df, finished.spec, group_by=["nope"])
    table = paper_table(df, finished.spec)
    assert export(table, "markdown", None) == render(table, "markdown")
    out = tmp_path / "t.tex"
    assert export(table, "latex", out) is None and out.read_text() == render(table, "latex")


def test_numbers_directions_and_escaping(finished: Finished) -> None:
    assert significant(0.0123456, 3) == ("0.0123", 4)
    assert significant(123456.0, 3) == ("123456", 0)
    assert significant(1.5e-5, 2) == ("1.5e-05", -1)
    assert metric_direction("loss", finished.spec) == "min"
    assert metric_direction("val_acc", finished.spec) == "max"
    assert metric_direction("tokens", finished.spec) is None
    assert latex_escape("50% of a_b & #1") == "50\\% of a\\_b \\& \\#1"

"""hpc_agent.outputs.figures: the data behind each figure, and each figure drawn to a real file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from hpc_agent.errors import UserError
from hpc_agent.outputs.figures import (
    KINDS,
    FigureInput,
    best_so_far,
    completed,
    curves,
    influence,
    make_figure,
    series_style,
    top_trials,
)
from hpc_agent.outputs.report import load_table
from unit.conftest import Finished


def test_the_data_behind_the_figures(finished: Finished) -> None:
    df = load_table(finished.paths, finished.state, finished.spec)
    done = completed(df)
    assert done.height == 5 and done.get_column("trial_id").to_list() == sorted(
        done.get_column("trial_id").to_list()
    )
    assert best_so_far([3.0, 1.0, 2.0, 0.5], "min") == [3.0, 1.0, 1.0, 0.5]
    assert best_so_far([3.0, 1.0, 4.0], "max") == [3.0, 3.0, 4.0]
    best = top_trials(df, "min", 2)
    objectives = {r["trial_id"]: r["objective"] for r in done.iter_rows(named=True)}
    assert len(best) == 2 and objectives[best[0]] == min(objectives.values())
    got = curves(finished.paths, best, "loss")
    assert set(got) == set(best) and got[best[0]].height == 1  # the scripted executor logs one step
    assert series_style(0) != series_style(1)


def test_influence_ranks_what_explains_the_objective() -> None:
    done = pl.DataFrame(
        {"x": [0.1, 0.2, 0.3, 0.4], "mode": ["a", "a", "a", "a"], "objective": [1.0, 2.0, 3.0, 4.0]}
    )
    assert influence(done, ["x", "mode"]) == [("x", pytest.approx(1.0))]  # mode never varied


@pytest.mark.parametrize("kind", KINDS)
def test_each_figure_is_drawn_to_a_file(finished: Finished, tmp_path: Path, kind: str) -> None:
    fi = FigureInput(load_table(finished.paths, finished.state, finished.spec), finished.spec, finished.paths)
    assert fi.ylabel == f"loss ({finished.spec.campaign.objective}; lower is better)"
    out = make_figure(kind, fi, tmp_path / f"{kind}.png")
    assert out == tmp_path / f"{kind}.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unknown_kind_or_suffix_is_a_user_error(finished: Finished, tmp_path: Path) -> None:
    fi = FigureInput(load_table(finished.paths, finished.state, finished.spec), finished.spec, finished.paths)
    with pytest.raises(UserError, match="figure 'pie': expected one of"):
        make_figure("pie", fi, tmp_path / "x.png")
    with pytest.raises(UserError, match="a figure is written as"):
        make_figure("progress", fi, tmp_path / "x.gif")

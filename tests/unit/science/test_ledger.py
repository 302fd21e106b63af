"""hpc_agent.science.ledger: one row per configuration of the search, rendered as TSV."""

from __future__ import annotations

import polars as pl

from hpc_agent.outputs.report import load_table
from hpc_agent.science.ledger import ledger_table, render_ledger
from unit.conftest import Finished


def test_the_ledger_has_a_row_per_searched_configuration(finished: Finished) -> None:
    state, spec = finished.state, finished.spec
    df = ledger_table(state, spec, load_table(finished.paths, state, spec))
    searched = [c for c in state.configs() if not c.purpose]
    assert df.get_column("config").to_list() == [c.config_id for c in searched]
    assert df.columns[:5] == ["config", "generation", "source", "loss", "runs"]
    by_id = {r["config"]: r for r in df.iter_rows(named=True)}
    for c in searched:
        assert by_id[c.config_id]["loss"] == c.objective
        assert by_id[c.config_id]["runs"] == c.n_completed
    assert df.schema["confirmed"] == pl.Float64


def test_render_ledger_writes_tsv_with_six_digits_and_empty_nones() -> None:
    df = pl.DataFrame(
        {"config": ["a", "b"], "loss": [0.123456789, None], "hypothesis": ["two\twords\nhere", ""]}
    )
    assert render_ledger(df) == "config\tloss\thypothesis\na\t0.123457\ttwo words here\nb\t\t\n"
    assert render_ledger(pl.DataFrame({"x": [float("nan")]})) == "x\nnan\n"

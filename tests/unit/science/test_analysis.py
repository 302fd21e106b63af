"""hpc_agent.science.analysis: the deterministic analysis of a generation, and the parameter
effects it reports."""

from __future__ import annotations

import polars as pl

from hpc_agent.outputs.report import load_table
from hpc_agent.science.analysis import AnalysisContext, deterministic_analysis, parameter_effects
from unit.conftest import Finished


def test_the_analysis_names_the_best_the_failure_and_the_effects(finished: Finished) -> None:
    state, spec = finished.state, finished.spec
    table = load_table(finished.paths, state, spec)
    text = deterministic_analysis(AnalysisContext(spec, 0, state, table))
    assert text.startswith("# Generation 0: analysis\n")
    assert "3 trials: 2 completed, 1 failed. Objective: loss (lower is better" in text
    best = min(
        (t for t in state.trials.values() if t.generation == 0 and t.objective is not None),
        key=lambda t: t.objective or 0.0,
    )
    assert f"Best of this generation: **{best.objective:.6g}** ({best.trial_id}, x=" in text
    assert "## Failures\n- 0000-0001 failed: exit code 1: scripted failure" in text
    later = deterministic_analysis(AnalysisContext(spec, 1, state, table))
    assert "the previous best" in later and "## Parameter effects (all 5 completed trials)" in later


def test_parameter_effects_ranks_numbers_by_rank_correlation_and_choices_by_mean() -> None:
    done = pl.DataFrame(
        {"x": [0.1, 0.2, 0.3, 0.4], "mode": ["a", "b", "a", "b"], "objective": [1.0, 2.0, 3.0, 4.0]}
    )
    x, mode = parameter_effects(done, ["x", "mode", "absent"], "min")
    assert x == "x: strong effect (Spearman ρ = +1.00); lower values did better"
    assert mode == "mode: mean objective by value, best first: a: 2 (n=2), b: 3 (n=2)"
    assert parameter_effects(done, ["x"], "max")[0].endswith("higher values did better")
    assert parameter_effects(done.head(2), ["x"], "min") == []  # fewer than three

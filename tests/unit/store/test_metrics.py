"""hpc_agent.store.metrics: the gather over real metrics.jsonl files (torn lines cut, bad files
isolated), a trial's outcome, the trials table."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from hpc_agent.store.metrics import (
    MetricSummary,
    gather_table,
    outcome,
    parse_lines,
    scan,
    schema,
    summarize,
    trials_table,
    write_table,
)
from unit.conftest import Finished


def files(tmp_path: Path) -> dict[str, Path]:
    good, torn, bad = tmp_path / "good.jsonl", tmp_path / "torn.jsonl", tmp_path / "bad.jsonl"
    good.write_text(
        '{"step": 0, "loss": 3.0, "acc": 0.1}\n{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 2.5}\n'
    )
    torn.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "lo')
    bad.write_text('{"step": 0, "loss": "high"}\n')
    return {"a": good, "b": torn, "c": bad}


def test_summaries_take_the_last_or_best_value_and_cut_torn_lines(tmp_path: Path) -> None:
    f = files(tmp_path)
    last = summarize(f, "loss", "min", objective="last", report_metrics=["acc"])
    assert last["a"].objective == 2.5 and last["a"].last_step == 2 and last["a"].n_lines == 3
    assert last["b"].objective == 1.0 and last["b"].n_lines == 1  # the torn line is cut
    assert last["c"].objective is None and last["c"].error
    best = summarize(f, "loss", "min", objective="best")
    assert best["a"].objective == 2.0
    frame, errors = scan(f, schema("loss"))
    assert set(frame.get_column("trial_id").unique().to_list()) >= {"a", "b"} and "c" in errors


def test_parse_lines_reads_numbers_and_says_what_is_wrong() -> None:
    rows, err = parse_lines(b'{"step": 0, "loss": 1.5}\n{"loss": NaN}\n', ["step", "loss"])
    assert rows[0] == {"step": 0.0, "loss": 1.5} and math.isnan(rows[1]["loss"] or 0.0) and err == ""
    _, err = parse_lines(b'{"loss": "x"}\n', ["loss"])
    assert err


def test_outcome_judges_only_completed_runs_on_their_metric() -> None:
    assert outcome("completed", MetricSummary("t", objective=0.5), "loss") == ("completed", 0.5, "")
    assert outcome("completed", None, "loss") == ("failed", None, "metric 'loss' never logged")
    diverged = outcome("completed", MetricSummary("t", objective=float("nan")), "loss")
    assert diverged[0] == "failed" and "diverged" in diverged[2]
    assert outcome("timeout", MetricSummary("t", objective=0.7), "loss") == ("timeout", 0.7, "")


def test_the_trials_table_has_a_row_per_trial(finished: Finished, tmp_path: Path) -> None:
    df = gather_table(finished.paths, finished.state, finished.spec)
    assert df.height == 6 and {"trial_id", "generation", "state", "objective", "x", "mode"} <= set(df.columns)
    assert df.filter(pl.col("state") == "failed").get_column("trial_id").to_list() == ["0000-0001"]
    write_table(df, tmp_path / "t.parquet")
    assert pl.read_parquet(tmp_path / "t.parquet").equals(df)
    records = list(finished.state.trials.values())
    small = trials_table(records, ["x", "mode"], {}, ["loss"])
    assert small.height == 6 and small.get_column("trial_id").to_list() == [t.trial_id for t in records]

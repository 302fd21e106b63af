"""hpc_agent.outputs.show: ``hpc-agent show``: one trial gathered from the journal and its
folder, rendered at 80 columns."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_agent.errors import UserError
from hpc_agent.outputs.show import SPARK, read_curves, render_trial, sparkline, trial_view
from unit.conftest import Finished


def test_the_best_trial_is_shown_whole(finished: Finished) -> None:
    best = finished.state.best("min")
    assert best is not None
    v = trial_view(finished.results, "best")
    assert v.record.trial_id == best.trial_id and v.is_best and v.metric == "loss"
    assert v.curves["loss"] == [(0.0, best.objective)]
    text = render_trial(v)
    head = f"trial {best.trial_id} · generation {best.generation} · completed · loss {best.objective:.6g}"
    head += " (the best trial)"
    assert text.splitlines()[0] == head
    wrapped = [line for line in text.splitlines() if str(finished.results.parent) not in line]  # paths: whole
    assert max(map(len, wrapped)) <= 80
    assert "proposed by   random" in text and "\nverdict       keep" in text


def test_a_failed_trial_and_an_unknown_one(finished: Finished) -> None:
    v = trial_view(finished.results, "0000-0001")
    assert v.record.state.value == "failed" and not v.is_best
    assert "scripted failure" in render_trial(v)
    with pytest.raises(UserError):
        trial_view(finished.results, "9999-9999")


def test_read_curves_takes_steps_or_line_numbers_and_counts_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 10, "loss": 1.0, "tag": "x"}\nnot json\n{"loss": 0.5, "ok": true}\n')
    assert read_curves(f) == ({"loss": [(10.0, 1.0), (2.0, 0.5)]}, "1 line(s) not JSON objects")
    assert read_curves(tmp_path / "none.jsonl") == ({}, "")


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([0.0, 1.0]) == SPARK[0] + SPARK[-1]
    assert sparkline([2.0, 2.0]) == SPARK[(len(SPARK) - 1) // 2] * 2  # flat: the middle
    assert sparkline([0.0, float("nan"), 1.0]) == SPARK[0] + " " + SPARK[-1]
    assert len(sparkline([float(i) for i in range(100)], width=10)) == 10
